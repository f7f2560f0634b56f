"""Tokens managed over HTTP by admins; health and metrics for the platform."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from apitest import error_of
from duly.auth.roles import Role
from duly.engine.store.sql import SqlStore


async def test_an_admin_issues_lists_and_revokes_tokens(http: httpx.AsyncClient, auth, store: SqlStore) -> None:
    admin = auth(Role.ADMIN, "root")
    issued = await http.post("/api/v1/tokens", json={"name": "backend", "role": "channel",
                                                      "expires_in": "90d"}, headers=admin)  # fmt: skip
    body = issued.json()
    works = await http.get("/api/v1/transfers", headers={"Authorization": f"Bearer {body['token']}"})
    listed = (await http.get("/api/v1/tokens", headers=admin)).json()["items"]
    revoked = await http.post(f"/api/v1/tokens/{body['id']}/revoke", headers=admin)
    refused = await http.get("/api/v1/transfers", headers={"Authorization": f"Bearer {body['token']}"})
    assert issued.status_code == 201
    assert body["token"].startswith("duly_") and body["role"] == "channel"
    assert body["created_by"].endswith(":root")
    assert works.status_code != 401
    assert all("token" not in t for t in listed) and "backend" in {t["name"] for t in listed}
    assert revoked.json()["revoked_at"] is not None
    assert refused.status_code == 401


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"name": "x", "role": "root"}, 422),
        ({"name": "bad name!", "role": "admin"}, 422),
        ({"name": "x", "role": "admin", "expires_in": "forever"}, 422),
        ({"name": "x", "role": "admin", "expires_in": "0d"}, 422),
        ({"name": "x", "role": "admin", "scope": "all"}, 422),
        ({"role": "admin"}, 422),
    ],
)
async def test_bad_token_requests_are_refused_and_issue_nothing(
    http: httpx.AsyncClient, auth, body: dict[str, object], status: int
) -> None:
    admin = auth(Role.ADMIN)
    before = (await http.get("/api/v1/tokens", headers=admin)).json()["items"]
    response = await http.post("/api/v1/tokens", json=body, headers=admin)
    assert response.status_code == status, response.text
    error_of(response)
    assert (await http.get("/api/v1/tokens", headers=admin)).json()["items"] == before


async def test_a_duplicate_name_and_an_unknown_revoke_are_clear(http: httpx.AsyncClient, auth) -> None:
    admin = auth(Role.ADMIN, "root")
    twice = await http.post("/api/v1/tokens", json={"name": "root", "role": "admin"}, headers=admin)
    unknown = await http.post("/api/v1/tokens/nosuchid/revoke", headers=admin)
    assert (twice.status_code, "root" in error_of(twice)["message"]) == (422, True)
    assert unknown.status_code == 404


async def test_tokens_pages(http: httpx.AsyncClient, auth) -> None:
    admin = auth(Role.ADMIN, "root")
    for i in range(4):
        await http.post("/api/v1/tokens", json={"name": f"t{i}", "role": "auditor"}, headers=admin)
    names, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await http.get("/api/v1/tokens", params=params, headers=admin)).json()
        names += [t["name"] for t in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert names == ["root", "t0", "t1", "t2", "t3"]


async def test_health_needs_no_token(http: httpx.AsyncClient) -> None:
    live = await http.get("/health/live")
    ready = await http.get("/health/ready")
    assert live.json() == {"status": "ok"}
    assert ready.status_code == 200 and ready.json()["database"] is True


async def test_readiness_fails_when_a_loop_has_stopped(app: FastAPI, http: httpx.AsyncClient) -> None:
    app.state.duly.health = lambda: {"scheduler": True, "worker": False}
    response = await http.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["loops"] == {"scheduler": True, "worker": False}


async def test_readiness_fails_when_the_database_is_gone(app: FastAPI, http: httpx.AsyncClient,
                                                         store: SqlStore) -> None:  # fmt: skip
    def broken(_now: object) -> None:
        raise OSError("connection refused")

    app.state.duly.store = type("Gone", (), {"run_oldest_due": staticmethod(broken)})()
    response = await http.get("/health/ready")
    assert response.status_code == 503 and response.json()["database"] is False


async def test_metrics_count_requests_by_route_and_status(http: httpx.AsyncClient, auth) -> None:
    await http.get("/api/v1/runs/424242", headers=auth(Role.OPERATOR))
    text = (await http.get("/metrics")).text
    assert 'duly_http_requests_total{method="GET",route="/api/v1/runs/{run_id}",status="404"}' in text
    assert "duly_http_request_duration_seconds_bucket" in text
    assert "duly_queue_depth" in text or "duly_oldest_due_run_seconds" in text
