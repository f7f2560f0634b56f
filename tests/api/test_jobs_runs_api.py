"""Jobs, manual triggers (with ``wait`` and ``Idempotency-Key``) and runs, over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from apitest import error_of
from duly.auth.roles import Role
from duly.config import Settings
from duly.engine.node import Node
from duly.engine.states import RunStatus
from duly.engine.store.base import RunFilter
from duly.engine.store.sql import SqlStore
from duly.runtime import job_registry
from realtime import CLOCK, fast_options


@pytest.fixture
async def node(store: SqlStore, api_settings: Settings) -> AsyncIterator[Node]:
    """A scheduler and worker on the test store, on this event loop."""
    running = Node(store, job_registry(api_settings), CLOCK, fast_options())
    await running.start()
    yield running
    await running.stop()


async def test_jobs_lists_the_registered_jobs(http: httpx.AsyncClient, auth) -> None:
    response = await http.get("/api/v1/jobs", headers=auth(Role.AUDITOR))
    names = [j["name"] for j in response.json()["items"]]
    assert response.status_code == 200
    assert {"duly.noop", "duly.sleep", "daily_balance_check"} <= set(names)
    assert names == sorted(names)


async def test_a_trigger_without_wait_is_202_with_the_queued_run(
    http: httpx.AsyncClient, auth, store: SqlStore
) -> None:
    response = await http.post("/api/v1/jobs/duly.sleep/runs", json={"args": {"seconds": 1}},
                               headers=auth(Role.OPERATOR))  # fmt: skip
    run = response.json()
    assert response.status_code == 202
    assert response.headers["location"] == f"/api/v1/runs/{run['id']}"
    assert (run["status"], run["args"], run["origin"]) == ("queued", {"seconds": 1}, "manual")
    assert store.run_get(run["id"]) is not None


async def test_a_trigger_with_wait_answers_the_result(
    http: httpx.AsyncClient, auth, node: Node
) -> None:
    response = await http.post("/api/v1/jobs/duly.noop/runs?wait=10", headers=auth(Role.OPERATOR))
    run = response.json()
    assert response.status_code == 200
    assert (run["status"], run["result"]) == ("succeeded", {"ok": True})
    assert run["finished_at"] is not None


async def test_a_wait_that_runs_out_is_202_to_poll(
    http: httpx.AsyncClient, auth, node: Node
) -> None:
    response = await http.post("/api/v1/jobs/duly.sleep/runs?wait=0.3",
                               json={"args": {"seconds": 2}}, headers=auth(Role.OPERATOR))  # fmt: skip
    assert response.status_code == 202
    polled = await http.get(response.headers["location"], headers=auth(Role.OPERATOR))
    assert polled.json()["status"] in ("queued", "running")


async def test_wait_is_capped_by_the_settings(
    app: FastAPI, http: httpx.AsyncClient, auth, node: Node
) -> None:
    from datetime import timedelta

    app.state.duly.max_wait = timedelta(seconds=0.2)
    started = CLOCK.now()
    response = await http.post("/api/v1/jobs/duly.sleep/runs?wait=30",
                               json={"args": {"seconds": 3}}, headers=auth(Role.OPERATOR))  # fmt: skip
    assert response.status_code == 202
    assert (CLOCK.now() - started).total_seconds() < 2


async def test_the_same_key_and_body_replay_the_first_answer(
    http: httpx.AsyncClient, auth, store: SqlStore
) -> None:
    headers = {**auth(Role.OPERATOR), "Idempotency-Key": "fetch-2026-03-02"}
    first = await http.post("/api/v1/jobs/duly.sleep/runs", json={"args": {"seconds": 1}}, headers=headers)
    again = await http.post("/api/v1/jobs/duly.sleep/runs", json={"args": {"seconds": 1}}, headers=headers)
    other = await http.post("/api/v1/jobs/duly.sleep/runs", json={"args": {"seconds": 2}}, headers=headers)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert (other.status_code, error_of(other)["code"]) == (422, "IDEMPOTENCY_KEY_REUSED")
    assert len(store.run_list(RunFilter(job_name="duly.sleep"))) == 1


async def test_keys_are_scoped_to_the_token(http: httpx.AsyncClient, auth, store: SqlStore) -> None:
    body = {"args": {"seconds": 1}}
    a = await http.post("/api/v1/jobs/duly.sleep/runs", json=body,
                        headers={**auth(Role.OPERATOR, "a"), "Idempotency-Key": "k1"})  # fmt: skip
    b = await http.post("/api/v1/jobs/duly.sleep/runs", json=body,
                        headers={**auth(Role.OPERATOR, "b"), "Idempotency-Key": "k1"})  # fmt: skip
    assert a.json()["id"] != b.json()["id"]
    assert "idempotent-replayed" not in b.headers


async def test_a_second_request_while_the_first_waits_is_409(
    http: httpx.AsyncClient, auth, node: Node, store: SqlStore
) -> None:
    headers = {**auth(Role.OPERATOR), "Idempotency-Key": "slow-one"}
    body = {"args": {"seconds": 1}}
    first = asyncio.create_task(http.post("/api/v1/jobs/duly.sleep/runs?wait=10", json=body, headers=headers))
    await asyncio.sleep(0.2)
    during = await http.post("/api/v1/jobs/duly.sleep/runs?wait=10", json=body, headers=headers)
    done = await first
    after = await http.post("/api/v1/jobs/duly.sleep/runs?wait=10", json=body, headers=headers)
    assert (during.status_code, error_of(during)["code"]) == (409, "IDEMPOTENCY_IN_PROGRESS")
    assert done.status_code == 200 and done.json()["status"] == "succeeded"
    assert after.status_code == 200 and after.json() == done.json()
    assert len(store.run_list(RunFilter(job_name="duly.sleep"))) == 1


async def test_a_failed_request_releases_its_key(http: httpx.AsyncClient, auth) -> None:
    headers = {**auth(Role.OPERATOR), "Idempotency-Key": "typo"}
    unknown = await http.post("/api/v1/jobs/no.such.job/runs", headers=headers)
    fixed = await http.post("/api/v1/jobs/duly.noop/runs", headers=headers)
    assert (unknown.status_code, error_of(unknown)["code"]) == (404, "UNKNOWN_JOB")
    assert fixed.status_code == 202


@pytest.mark.parametrize(
    ("query", "body", "headers"),
    [
        ("?wait=-1", None, {}),
        ("?wait=abc", None, {}),
        ("", {"args": [1, 2]}, {}),
        ("", {"args": {}, "priority": 3}, {}),
        ("", None, {"Idempotency-Key": "has space"}),
    ],
)
async def test_bad_trigger_requests_are_422_and_queue_nothing(
    http: httpx.AsyncClient, auth, store: SqlStore, query: str, body: object, headers: dict[str, str]
) -> None:
    response = await http.post(f"/api/v1/jobs/duly.noop/runs{query}", json=body,
                               headers={**auth(Role.OPERATOR), **headers})  # fmt: skip
    assert response.status_code == 422, response.text
    error_of(response)
    assert store.run_list(RunFilter()) == []


async def test_runs_filter_and_page_newest_first(http: httpx.AsyncClient, auth, node: Node) -> None:
    headers = auth(Role.OPERATOR)
    for _ in range(5):
        await http.post("/api/v1/jobs/duly.noop/runs?wait=5", headers=headers)
    await http.post("/api/v1/jobs/duly.sleep/runs", json={"args": {"seconds": 30}}, headers=headers)
    seen, cursor = [], None
    while True:
        query = "?job=duly.noop&status=succeeded&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await http.get(f"/api/v1/runs{query}", headers=auth(Role.AUDITOR))).json()
        seen += [r["id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 5 and seen == sorted(seen, reverse=True)
    future = (await http.get("/api/v1/runs?since=2100-01-01T00:00:00Z", headers=headers)).json()
    past = (await http.get("/api/v1/runs?until=2000-01-01T00:00:00%2B01:00", headers=headers)).json()
    assert future["items"] == [] and past["items"] == []


async def test_a_run_shows_its_attempts(http: httpx.AsyncClient, auth, node: Node) -> None:
    done = (await http.post("/api/v1/jobs/duly.noop/runs?wait=5", headers=auth(Role.OPERATOR))).json()
    detail = await http.get(f"/api/v1/runs/{done['id']}", headers=auth(Role.AUDITOR))
    body = detail.json()
    assert detail.status_code == 200
    assert [a["status"] for a in body["attempts"]] == ["succeeded"]
    assert body["attempts"][0]["node"] == "n1"


async def test_cancel_then_retry_a_run(http: httpx.AsyncClient, auth, store: SqlStore) -> None:
    headers = auth(Role.OPERATOR)
    run = (await http.post("/api/v1/jobs/duly.sleep/runs", json={"args": {"seconds": 1}}, headers=headers)).json()
    cancelled = await http.post(f"/api/v1/runs/{run['id']}/cancel", headers=headers)
    again = await http.post(f"/api/v1/runs/{run['id']}/cancel", headers=headers)
    retried = await http.post(f"/api/v1/runs/{run['id']}/retry", headers=headers)
    assert cancelled.json()["status"] == "cancelled"
    assert (again.status_code, error_of(again)["code"]) == (409, "STATE_CONFLICT")
    assert retried.json()["status"] == "queued"
    assert store.run_get(run["id"]).status is RunStatus.QUEUED  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "query", ["?status=exploded", "?since=yesterday", "?since=2026-03-02T00:00:00", "?limit=0",
              "?limit=501", "?cursor=%%%"],
)
async def test_bad_run_filters_are_422(http: httpx.AsyncClient, auth, query: str) -> None:
    response = await http.get(f"/api/v1/runs{query}", headers=auth(Role.AUDITOR))
    assert response.status_code == 422, response.text
    error_of(response)


async def test_absent_runs_are_404(http: httpx.AsyncClient, auth) -> None:
    for method, path in [("GET", "/api/v1/runs/999999"), ("POST", "/api/v1/runs/999999/retry"),
                         ("POST", "/api/v1/runs/999999/cancel")]:  # fmt: skip
        response = await http.request(method, path, headers=auth(Role.OPERATOR))
        assert response.status_code == 404, (method, path)
        error_of(response)
