"""What every request passes: request id, authentication, rate limit, body limit, error shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from apitest import error_of
from duly.auth.roles import Role
from duly.auth.service import TokenService
from duly.clock import Clock, ManualClock
from duly.config import Settings
from duly.engine.store.sql import SqlStore


@pytest.fixture
def api_clock() -> Clock:
    return ManualClock(datetime(2026, 3, 2, 9, tzinfo=UTC))


@pytest.fixture
def api_settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, api={"rate_limit_per_second": 2, "rate_limit_burst": 3,
                                              "max_body_bytes": 2048})  # fmt: skip


async def test_a_request_id_is_honoured_or_generated(http: httpx.AsyncClient, auth) -> None:
    given = await http.get("/api/v1/jobs", headers={**auth(Role.OPERATOR), "X-Request-ID": "abc-123"})
    made = await http.get("/api/v1/jobs", headers=auth(Role.OPERATOR))
    odd = await http.get("/health/live", headers={"X-Request-ID": "has spaces; and {braces}"})
    assert given.headers["x-request-id"] == "abc-123"
    assert len(made.headers["x-request-id"]) == 32
    assert odd.headers["x-request-id"] != "has spaces; and {braces}"


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Basic dXNlcjpwYXNz", "Bearer duly_nottoken", "Bearer " + "duly_abcdefgh_" + "a" * 52],
)
async def test_no_valid_token_is_401_with_the_envelope(http: httpx.AsyncClient, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = await http.get("/api/v1/runs", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert error_of(response)["code"] == "UNAUTHENTICATED"


async def test_revoked_and_expired_tokens_are_401(http: httpx.AsyncClient, store: SqlStore,
                                                  api_clock: ManualClock) -> None:  # fmt: skip
    tokens = TokenService(store.engine, api_clock)
    revoked = tokens.create("gone", Role.ADMIN, created_by="t")
    expiring = tokens.create("brief", Role.ADMIN, created_by="t", expires_in=timedelta(hours=1))
    ok = await http.get("/api/v1/jobs", headers={"Authorization": f"Bearer {expiring.text}"})
    tokens.revoke("gone", revoked_by="t")
    api_clock.advance(timedelta(hours=1))
    after_revoke = await http.get("/api/v1/jobs", headers={"Authorization": f"Bearer {revoked.text}"})
    after_expiry = await http.get("/api/v1/jobs", headers={"Authorization": f"Bearer {expiring.text}"})
    assert ok.status_code == 200
    assert (after_revoke.status_code, after_expiry.status_code) == (401, 401)


async def test_a_wrong_role_is_403(http: httpx.AsyncClient, auth) -> None:
    response = await http.get("/api/v1/tokens", headers=auth(Role.OPERATOR))
    assert response.status_code == 403
    assert "operator" in error_of(response)["message"]


async def test_the_rate_limit_is_per_token_with_retry_after(
    http: httpx.AsyncClient, auth, api_clock: ManualClock
) -> None:
    first = [await http.get("/api/v1/jobs", headers=auth(Role.OPERATOR)) for _ in range(3)]
    limited = await http.get("/api/v1/jobs", headers=auth(Role.OPERATOR))
    other_token = await http.get("/api/v1/jobs", headers=auth(Role.AUDITOR))
    api_clock.advance(timedelta(seconds=0.5))  # one request's worth at 2/s
    refilled = await http.get("/api/v1/jobs", headers=auth(Role.OPERATOR))
    assert [r.status_code for r in first] == [200, 200, 200]
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "1"
    assert error_of(limited)["code"] == "RATE_LIMITED"
    assert other_token.status_code == 200
    assert refilled.status_code == 200


async def test_an_oversize_body_is_413_and_nothing_is_written(
    http: httpx.AsyncClient, auth, store: SqlStore
) -> None:
    body = {"name": "big", "job": "duly.noop", "spec": "every:1h", "args": {"x": "y" * 4000}}
    declared = await http.post("/api/v1/schedules", json=body, headers=auth(Role.OPERATOR))

    async def chunks():  # no Content-Length: the limit applies while reading
        for _ in range(5):
            yield b" " * 1000

    streamed = await http.post("/api/v1/schedules", content=chunks(),
                               headers={**auth(Role.OPERATOR), "Content-Type": "application/json"})  # fmt: skip
    assert declared.status_code == 413
    assert error_of(declared)["code"] == "BODY_TOO_LARGE"
    assert streamed.status_code == 413
    assert store.schedule_get("big") is None


async def test_unknown_routes_and_methods_answer_the_envelope(http: httpx.AsyncClient, auth) -> None:
    missing = await http.get("/api/v1/nothing-here", headers=auth(Role.ADMIN))
    wrong_method = await http.put("/api/v1/jobs", headers=auth(Role.ADMIN))
    assert (missing.status_code, error_of(missing)["code"]) == (404, "NOT_FOUND")
    assert (wrong_method.status_code, error_of(wrong_method)["code"]) == (405, "METHOD_NOT_ALLOWED")


async def test_malformed_json_is_422_and_unknown_fields_are_refused(http: httpx.AsyncClient, auth) -> None:
    broken = await http.post("/api/v1/schedules", content=b"{not json",
                             headers={**auth(Role.OPERATOR), "Content-Type": "application/json"})  # fmt: skip
    extra = await http.post("/api/v1/schedules", headers=auth(Role.OPERATOR),
                            json={"name": "a", "job": "duly.noop", "spec": "every:1h", "colour": "red"})  # fmt: skip
    assert broken.status_code == 422
    assert extra.status_code == 422
    assert error_of(extra)["details"][0]["field"] == "body.colour"


async def test_every_log_line_of_a_request_carries_its_request_id(
    http: httpx.AsyncClient, auth, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from duly.logs import configure_logging

    configure_logging("info", "json")
    capsys.readouterr()
    await http.post("/api/v1/tokens", json={"name": "logged", "role": "auditor"},
                    headers={**auth(Role.ADMIN), "X-Request-ID": "req-42"})  # fmt: skip
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    created = [ln for ln in lines if ln.get("event") == "token created" and ln.get("name") == "logged"]
    assert created, lines
    assert all(line.get("request_id") == "req-42" for line in created), created
    assert all("duly_" not in json.dumps(line) for line in lines)  # no token text in the log


async def test_a_revocation_holds_at_once_here_and_within_the_cache_bound_elsewhere(
    http: httpx.AsyncClient, store: SqlStore, api_clock: ManualClock, auth
) -> None:
    elsewhere = TokenService(store.engine, api_clock)  # as `duly token revoke` would
    here = elsewhere.create("here", Role.OPERATOR, created_by="t")
    there = elsewhere.create("there", Role.OPERATOR, created_by="t")
    for token in (here, there):  # both verified, so both cached
        ok = await http.get("/api/v1/jobs", headers={"Authorization": f"Bearer {token.text}"})
        assert ok.status_code == 200
    revoke = await http.post(f"/api/v1/tokens/{here.row.id}/revoke", headers=auth(Role.ADMIN))
    assert revoke.status_code == 200
    elsewhere.revoke("there", revoked_by="t")
    headers_here = {"Authorization": f"Bearer {here.text}"}
    headers_there = {"Authorization": f"Bearer {there.text}"}
    assert (await http.get("/api/v1/jobs", headers=headers_here)).status_code == 401
    assert (await http.get("/api/v1/jobs", headers=headers_there)).status_code == 200
    api_clock.advance(timedelta(seconds=5))
    assert (await http.get("/api/v1/jobs", headers=headers_there)).status_code == 401
