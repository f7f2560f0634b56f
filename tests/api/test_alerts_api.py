"""``/alerts`` over HTTP, on both stores: list, one, acknowledge, resolve."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from apitest import error_of
from duly.api.pagination import encode_cursor
from duly.auth.roles import Role
from duly.clock import ManualClock
from duly.engine.store.base import NewAlert
from duly.engine.store.sql import SqlStore

NOW = datetime(2026, 3, 3, 8, 0, tzinfo=UTC)
URL = "/api/v1/alerts"


@pytest.fixture
def api_clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def raised(store: SqlStore) -> list[int]:
    """Five open alerts (the first raised twice), oldest first."""
    ids = []
    for i in range(5):
        alert = NewAlert(dedupe_key=f"k{i}", rule=f"rule.{i}", severity="high",
                         title=f"alert {i}", now=NOW - timedelta(hours=5 - i),
                         details={"n": i}, job_name="daily_balance_check")  # fmt: skip
        row, _ = store.alert_raise(alert)
        ids.append(row.id)
    store.alert_raise(NewAlert(dedupe_key="k0", rule="rule.0", severity="high", title="alert 0",
                               now=NOW - timedelta(minutes=1), details={"n": 0}))  # fmt: skip
    return ids


def state(store: SqlStore, alert_id: int) -> tuple[str, str | None, str | None]:
    row = store.alert_get(alert_id)
    assert row is not None
    return row.status, row.acked_by, row.resolved_by


async def pages(http: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await http.get(URL, params=query, headers=headers)
        assert response.status_code == 200, response.text
        items += response.json()["items"]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return items


async def test_alerts_newest_first_across_pages(
    http: httpx.AsyncClient, auth, raised: list[int]
) -> None:
    items = await pages(http, auth(Role.AUDITOR), limit=2)
    assert [a["id"] for a in items] == raised[::-1]
    oldest = items[-1]
    assert (oldest["status"], oldest["occurrences"], oldest["details"]) == ("open", 2, {"n": 0})
    assert oldest["last_raised_at"] == "2026-03-03T07:59:00Z"
    assert "dedupe_key" not in oldest
    one = await http.get(f"{URL}/{oldest['id']}", headers=auth(Role.OPERATOR))
    assert one.status_code == 200 and one.json() == oldest


async def test_ack_then_resolve_as_the_calling_token_and_filter_by_status(
    http: httpx.AsyncClient, auth, raised: list[int], store: SqlStore
) -> None:
    ops = auth(Role.OPERATOR, "ana")
    acked = await http.post(f"{URL}/{raised[1]}/ack", headers=ops)
    assert acked.status_code == 200, acked.text
    body = acked.json()
    assert body["status"] == "acked" and body["acked_at"] == "2026-03-03T08:00:00Z"
    assert body["acked_by"].startswith("token:") and body["acked_by"].endswith(":ana")
    done = await http.post(f"{URL}/{raised[1]}/resolve", headers=auth(Role.ADMIN, "bo"))
    assert done.status_code == 200
    assert (done.json()["status"], done.json()["acked_by"]) == ("resolved", body["acked_by"])
    assert done.json()["resolved_by"].endswith(":bo")
    straight = await http.post(f"{URL}/{raised[3]}/resolve", headers=ops)  # without an ack
    assert straight.json()["status"] == "resolved"
    await http.post(f"{URL}/{raised[4]}/ack", headers=ops)
    h = auth(Role.AUDITOR)
    assert [a["id"] for a in await pages(http, h, status="resolved")] == [raised[3], raised[1]]
    assert [a["id"] for a in await pages(http, h, status="acked")] == [raised[4]]
    assert [a["id"] for a in await pages(http, h, status="open", limit=1)] == [raised[2], raised[0]]


async def test_a_resolved_alert_cannot_change_again(
    http: httpx.AsyncClient, auth, raised: list[int], store: SqlStore
) -> None:
    await http.post(f"{URL}/{raised[0]}/resolve", headers=auth(Role.OPERATOR, "ana"))
    before = state(store, raised[0])
    for action in ("resolve", "ack"):
        again = await http.post(f"{URL}/{raised[0]}/{action}", headers=auth(Role.ADMIN))
        assert (again.status_code, error_of(again)["code"]) == (409, "STATE_CONFLICT")
        assert "already resolved" in error_of(again)["message"]
    assert state(store, raised[0]) == before


async def test_unknown_alerts_are_404(http: httpx.AsyncClient, auth, raised: list[int]) -> None:
    for method, path in (("GET", "/999999"), ("POST", "/999999/ack"), ("POST", "/999999/resolve")):
        response = await http.request(method, f"{URL}{path}", headers=auth(Role.ADMIN))
        assert (response.status_code, error_of(response)["code"]) == (404, "NOT_FOUND"), path


async def test_auditors_read_but_may_not_change(
    http: httpx.AsyncClient, auth, raised: list[int], store: SqlStore
) -> None:
    for action in ("ack", "resolve"):
        response = await http.post(f"{URL}/{raised[0]}/{action}", headers=auth(Role.AUDITOR))
        assert (response.status_code, error_of(response)["code"]) == (403, "FORBIDDEN")
    assert state(store, raised[0]) == ("open", None, None)


@pytest.mark.parametrize(
    ("method", "path"), [("GET", ""), ("GET", "/ID"), ("POST", "/ID/ack"), ("POST", "/ID/resolve")]
)
async def test_the_channel_role_sees_none_of_it(
    http: httpx.AsyncClient, auth, raised: list[int], store: SqlStore, method: str, path: str
) -> None:
    path = path.replace("ID", str(raised[0]))
    response = await http.request(method, f"{URL}{path}", headers=auth(Role.CHANNEL))
    assert (response.status_code, error_of(response)["code"]) == (403, "FORBIDDEN")
    assert state(store, raised[0]) == ("open", None, None)


@pytest.mark.parametrize(
    ("method", "path", "params"),
    [
        ("GET", "", {"status": "closed"}),
        ("GET", "", {"limit": 0}),
        ("GET", "", {"cursor": "%%%"}),
        ("GET", "", {"cursor": encode_cursor(10**29)}),
        ("GET", "", {"cursor": encode_cursor(0)}),
        ("GET", "/abc", {}),
        ("GET", "/99999999999999999999", {}),
        ("POST", "/0/ack", {}),
        ("POST", "/99999999999999999999/resolve", {}),
    ],
)
async def test_bad_input_is_422_and_changes_nothing(
    http: httpx.AsyncClient, auth, raised: list[int], store: SqlStore, method: str, path: str,
    params: dict[str, Any],
) -> None:  # fmt: skip
    response = await http.request(method, f"{URL}{path}", params=params, headers=auth(Role.ADMIN))
    assert response.status_code == 422, response.text
    error_of(response)
    assert all(state(store, i) == ("open", None, None) for i in raised)
