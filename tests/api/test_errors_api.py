"""``/errors`` and ``/error-codes`` over HTTP, on both stores.

The error log is seeded as the store tests do (rows inserted as the balance check writes
them, stack trace included); the app's clock is manual, so "the last 24 hours" is known.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import insert

from apitest import error_of
from duly.api.pagination import encode_cursor
from duly.auth.roles import Role
from duly.banking.catalog import CATALOG
from duly.banking.customers import Customers, NewCustomer
from duly.clock import ManualClock
from duly.engine.store.sql import SqlStore
from duly.operations.balance_check.models import error_logs
from duly.operations.balance_check.monitoring import get_error

NOW = datetime(2026, 3, 3, 0, 0, tzinfo=UTC)
T0 = datetime(2026, 3, 2, 22, 0, tzinfo=UTC)
H = timedelta(hours=1)
URL = "/api/v1/errors"


@pytest.fixture
def api_clock() -> ManualClock:
    return ManualClock(NOW)


def log_error(store: SqlStore, customer: int | None, code: str, at: datetime) -> int:
    with store.engine.begin() as conn:
        return int(
            conn.execute(
                insert(error_logs)
                .values(run_id=1, job_name="daily_balance_check", customer_id=customer,
                        business_date=at.date(), error_code=code, message=f"{code} happened",
                        retry_count=3, stack_trace="Traceback: secret internals", logged_at=at)
                .returning(error_logs.c.id)
            ).scalar_one()
        )  # fmt: skip


@pytest.fixture
def seeded(store: SqlStore, api_clock: ManualClock) -> dict[str, Any]:
    """Six errors in the last 24 hours (a: 3, b: 2, none: 1) and one two days before."""
    people = Customers(store.engine, api_clock)
    a, b = (people.add(NewCustomer(n, tier="premium")).id for n in ("a", "b"))
    ids = [
        log_error(store, a, "TIMEOUT", T0),
        log_error(store, a, "TIMEOUT", T0 + timedelta(minutes=10)),
        log_error(store, b, "TIMEOUT", T0 + H + timedelta(minutes=59)),
        log_error(store, a, "API_ERROR", T0 + H),
        log_error(store, b, "MISSING_DATA", T0 + H + timedelta(minutes=30)),
        log_error(store, None, "INTERNAL", NOW - timedelta(hours=23)),
        log_error(store, b, "NULL_BALANCE", NOW - timedelta(days=2)),  # outside 24 h
    ]
    return {"a": a, "b": b, "ids": ids}


async def pages(http: httpx.AsyncClient, url: str, headers: dict[str, str],
                **params: Any) -> list[dict[str, Any]]:  # fmt: skip
    """Every item of a list, following its cursors."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await http.get(url, params=query, headers=headers)
        assert response.status_code == 200, response.text
        items += response.json()["items"]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return items


# -- list and one --------------------------------------------------------------------


async def test_the_log_newest_first_across_pages_without_the_trace(
    http: httpx.AsyncClient, auth, seeded: dict[str, Any]
) -> None:
    items = await pages(http, URL, auth(Role.AUDITOR), limit=2)
    assert [e["id"] for e in items] == seeded["ids"][::-1]
    assert "stack_trace" not in items[0] and all("Traceback" not in str(e) for e in items)
    first = items[-1]
    assert (first["customer_id"], first["error_code"], first["resolved"]) == (
        seeded["a"], "TIMEOUT", False
    )  # fmt: skip
    one = await http.get(f"{URL}/{first['id']}", headers=auth(Role.OPERATOR))
    assert one.status_code == 200 and one.json() == first
    assert "Traceback" not in one.text


async def test_the_log_filters(
    http: httpx.AsyncClient, auth, seeded: dict[str, Any], store: SqlStore
) -> None:
    h = auth(Role.ADMIN)
    ids = seeded["ids"]
    by_code = await pages(http, URL, h, code="TIMEOUT", limit=1)
    assert [e["id"] for e in by_code] == [ids[2], ids[1], ids[0]]
    by_customer = await pages(http, URL, h, customer=seeded["b"])
    assert [e["id"] for e in by_customer] == [ids[6], ids[4], ids[2]]
    both = await pages(http, URL, h, customer=seeded["b"], code="TIMEOUT")
    assert [e["id"] for e in both] == [ids[2]]
    period = await pages(http, URL, h, since=T0.isoformat(), until=(T0 + H).isoformat())
    assert [e["id"] for e in period] == [ids[1], ids[0]]  # half-open: T0 + 1 h is out
    until = await pages(http, URL, h, until=T0.isoformat())
    assert [e["id"] for e in until] == [ids[6], ids[5]]
    resolved = await http.post(f"{URL}/{ids[3]}/resolve", json={"notes": "bank restarted"},
                               headers=auth(Role.OPERATOR))  # fmt: skip
    assert resolved.status_code == 200
    done = await pages(http, URL, h, resolved="true")
    assert [e["id"] for e in done] == [ids[3]]
    not_done = await pages(http, URL, h, resolved="false")
    assert [e["id"] for e in not_done] == [i for i in ids[::-1] if i != ids[3]]
    assert await pages(http, URL, h, code="NO_SUCH_CODE") == []


async def test_an_unknown_error_is_404(http: httpx.AsyncClient, auth, seeded: dict[str, Any]) -> None:
    response = await http.get(f"{URL}/999999", headers=auth(Role.AUDITOR))
    assert (response.status_code, error_of(response)["code"]) == (404, "NOT_FOUND")


# -- aggregates ----------------------------------------------------------------------


async def test_summary_by_code_defaults_to_the_last_24_hours(
    http: httpx.AsyncClient, auth, seeded: dict[str, Any]
) -> None:
    response = await http.get(f"{URL}/summary", headers=auth(Role.AUDITOR))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["since"], body["until"]) == ("2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z")
    assert (body["total"], body["unresolved"]) == (6, 6)
    assert [(c["code"], c["count"]) for c in body["codes"]] == [
        ("TIMEOUT", 3), ("API_ERROR", 1), ("INTERNAL", 1), ("MISSING_DATA", 1)
    ]  # fmt: skip
    timeout = body["codes"][0]
    assert timeout["severity"] == "medium" and "in time" in timeout["description"]
    assert timeout["suggested_action"]
    week = await http.get(f"{URL}/summary", params={"since": (NOW - timedelta(days=7)).isoformat()},
                          headers=auth(Role.AUDITOR))  # fmt: skip
    assert week.json()["total"] == 7


async def test_summary_of_a_given_period_counts_the_unresolved(
    http: httpx.AsyncClient, auth, seeded: dict[str, Any]
) -> None:
    await http.post(f"{URL}/{seeded['ids'][0]}/resolve", json={"notes": "known outage"},
                    headers=auth(Role.ADMIN))  # fmt: skip
    params = {"since": T0.isoformat(), "until": (T0 + H).isoformat()}
    response = await http.get(f"{URL}/summary", params=params, headers=auth(Role.OPERATOR))
    assert response.json()["codes"] == [
        {"code": "TIMEOUT", "count": 2, "unresolved": 1, **_catalog("TIMEOUT")}
    ]


def _catalog(code: str) -> dict[str, str]:
    info = next(c for c in CATALOG if c.code == code)
    return {"description": info.description, "severity": info.severity,
            "suggested_action": info.suggested_action}  # fmt: skip


async def test_trends_list_every_hour(http: httpx.AsyncClient, auth, seeded: dict[str, Any]) -> None:
    response = await http.get(f"{URL}/trends", headers=auth(Role.AUDITOR))
    assert response.status_code == 200, response.text
    hours = response.json()["hours"]
    assert len(hours) == 24 and hours[0]["hour"] == "2026-03-02T00:00:00Z"
    assert [h["count"] for h in hours[22:]] == [2, 3]
    assert hours[1]["count"] == 1  # the INTERNAL at 01:00
    only = await http.get(f"{URL}/trends", params={"code": "TIMEOUT", "since": T0.isoformat()},
                          headers=auth(Role.AUDITOR))  # fmt: skip
    assert only.json()["code"] == "TIMEOUT"
    assert [(h["hour"], h["count"]) for h in only.json()["hours"]] == [
        ("2026-03-02T22:00:00Z", 2), ("2026-03-02T23:00:00Z", 1)
    ]  # fmt: skip


async def test_top_customers(http: httpx.AsyncClient, auth, seeded: dict[str, Any]) -> None:
    response = await http.get(f"{URL}/top-customers", headers=auth(Role.AUDITOR))
    assert response.status_code == 200, response.text
    top = response.json()["customers"]
    assert [(c["customer_id"], c["count"], c["last_code"]) for c in top] == [
        (seeded["a"], 3, "API_ERROR"), (seeded["b"], 2, "MISSING_DATA")
    ]  # fmt: skip
    assert top[0]["last_logged_at"] == "2026-03-02T23:00:00Z"
    one = await http.get(f"{URL}/top-customers", params={"limit": 1}, headers=auth(Role.AUDITOR))
    assert [c["customer_id"] for c in one.json()["customers"]] == [seeded["a"]]


# -- resolve -------------------------------------------------------------------------


async def test_resolve_once_as_the_calling_token(
    http: httpx.AsyncClient, auth, seeded: dict[str, Any], store: SqlStore
) -> None:
    err = seeded["ids"][0]
    done = await http.post(f"{URL}/{err}/resolve", json={"notes": "  core bank restarted "},
                           headers=auth(Role.OPERATOR, "ana"))  # fmt: skip
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["resolved"] is True and body["resolution_notes"] == "core bank restarted"
    assert body["resolved_by"].startswith("token:") and body["resolved_by"].endswith(":ana")
    assert body["resolved_at"] == "2026-03-03T00:00:00Z"
    again = await http.post(f"{URL}/{err}/resolve", json={"notes": "again"},
                            headers=auth(Role.ADMIN))  # fmt: skip
    assert (again.status_code, error_of(again)["code"]) == (409, "STATE_CONFLICT")
    assert "already resolved" in error_of(again)["message"]
    row = get_error(store.engine, err)
    assert row is not None and row.resolution_notes == "core bank restarted"  # unchanged


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"notes": ""},
        {"notes": "   "},
        {"notes": "x" * 2001},
        {"notes": 5},
        {"notes": "ok", "by": "someone else"},  # an unknown field: who resolves is the token
    ],
)
async def test_a_bad_resolution_is_422_and_changes_nothing(
    http: httpx.AsyncClient, auth, seeded: dict[str, Any], store: SqlStore, body: dict[str, Any]
) -> None:
    err = seeded["ids"][0]
    response = await http.post(f"{URL}/{err}/resolve", json=body, headers=auth(Role.ADMIN))
    assert (response.status_code, error_of(response)["code"]) == (422, "VALIDATION_ERROR")
    row = get_error(store.engine, err)
    assert row is not None and not row.resolved


async def test_resolving_an_unknown_error_is_404(
    http: httpx.AsyncClient, auth, seeded: dict[str, Any]
) -> None:
    response = await http.post(f"{URL}/999999/resolve", json={"notes": "x"}, headers=auth(Role.ADMIN))
    assert (response.status_code, error_of(response)["code"]) == (404, "NOT_FOUND")


# -- roles and bad input ------------------------------------------------------------------


async def test_auditors_read_but_may_not_resolve(
    http: httpx.AsyncClient, auth, seeded: dict[str, Any], store: SqlStore
) -> None:
    err = seeded["ids"][0]
    response = await http.post(f"{URL}/{err}/resolve", json={"notes": "x"},
                               headers=auth(Role.AUDITOR))  # fmt: skip
    assert (response.status_code, error_of(response)["code"]) == (403, "FORBIDDEN")
    row = get_error(store.engine, err)
    assert row is not None and not row.resolved


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", ""), ("GET", "/1"), ("GET", "/summary"), ("GET", "/trends"),
     ("GET", "/top-customers"), ("POST", "/1/resolve")],
)  # fmt: skip
async def test_the_channel_role_sees_none_of_it(
    http: httpx.AsyncClient, auth, seeded: dict[str, Any], store: SqlStore, method: str, path: str
) -> None:
    body = {"notes": "x"} if method == "POST" else None
    response = await http.request(method, f"{URL}{path}", json=body, headers=auth(Role.CHANNEL))
    assert (response.status_code, error_of(response)["code"]) == (403, "FORBIDDEN")
    first = get_error(store.engine, 1)
    assert first is None or not first.resolved


@pytest.mark.parametrize(
    ("path", "params", "code"),
    [
        ("", {"since": "2026-03-02T00:00:00"}, "VALIDATION_ERROR"),  # naive
        ("", {"until": "last tuesday"}, "VALIDATION_ERROR"),
        ("", {"since": "2026-03-03T00:00:00Z", "until": "2026-03-02T00:00:00Z"}, "VALIDATION_ERROR"),
        ("", {"customer": 0}, "VALIDATION_ERROR"),
        ("", {"customer": "99999999999999999999"}, "VALIDATION_ERROR"),
        ("", {"resolved": "maybe"}, "VALIDATION_ERROR"),
        ("", {"code": "X" * 65}, "VALIDATION_ERROR"),
        ("", {"cursor": "garbage!"}, "INVALID_CURSOR"),
        ("", {"cursor": encode_cursor(10**29)}, "INVALID_CURSOR"),
        ("", {"cursor": encode_cursor("1")}, "INVALID_CURSOR"),
        ("", {"limit": 501}, "VALIDATION_ERROR"),
        ("/summary", {"since": "2026-03-03T00:00:00Z"}, "VALIDATION_ERROR"),  # = now (until)
        ("/summary", {"since": "2026-03-04T00:00:00Z"}, "VALIDATION_ERROR"),  # after now
        ("/summary", {"since": "2026-03-02T12:00:00Z", "until": "2026-03-02T12:00:00Z"},
         "VALIDATION_ERROR"),
        ("/summary", {"since": "2025-01-01T00:00:00Z"}, "PERIOD_TOO_LONG"),
        ("/summary", {"until": "0001-01-01T00:00:00Z"}, "VALIDATION_ERROR"),  # 24 h before: none
        ("/summary", {"since": "0001-01-01T00:00:00+05:00", "until": "0001-01-02T00:00:00Z"},
         "VALIDATION_ERROR"),
        ("/trends", {"since": "2026-01-01T00:00:00Z"}, "PERIOD_TOO_LONG"),
        ("/trends", {"since": "2026-03-02T00:00:00+99:00"}, "VALIDATION_ERROR"),
        ("/top-customers", {"limit": 0}, "VALIDATION_ERROR"),
        ("/top-customers", {"limit": 101}, "VALIDATION_ERROR"),
        ("/top-customers", {"since": "2024-03-02T00:00:00Z"}, "PERIOD_TOO_LONG"),
        ("/abc", {}, "VALIDATION_ERROR"),
        ("/0", {}, "VALIDATION_ERROR"),
        ("/99999999999999999999", {}, "VALIDATION_ERROR"),
    ],
)
async def test_bad_input_is_422(
    http: httpx.AsyncClient, auth, seeded: dict[str, Any], path: str, params: dict[str, Any],
    code: str,
) -> None:  # fmt: skip
    response = await http.get(f"{URL}{path}", params=params, headers=auth(Role.ADMIN))
    assert (response.status_code, error_of(response)["code"]) == (422, code), response.text


async def test_a_period_of_exactly_the_limit_is_allowed(
    http: httpx.AsyncClient, auth, seeded: dict[str, Any]
) -> None:
    since = (NOW - timedelta(days=31)).isoformat()
    response = await http.get(f"{URL}/trends", params={"since": since}, headers=auth(Role.ADMIN))
    assert response.status_code == 200 and len(response.json()["hours"]) == 31 * 24


# -- the taxonomy ---------------------------------------------------------------------


async def test_the_error_codes_by_code_across_pages(http: httpx.AsyncClient, auth) -> None:
    items = await pages(http, "/api/v1/error-codes", auth(Role.AUDITOR), limit=7)
    assert [c["code"] for c in items] == sorted(c.code for c in CATALOG)
    timeout = next(c for c in items if c["code"] == "TIMEOUT")
    assert timeout == {"code": "TIMEOUT", **_catalog("TIMEOUT"), "transient": True}
    high = await pages(http, "/api/v1/error-codes", auth(Role.OPERATOR), severity="high")
    assert {c["code"] for c in high} == {c.code for c in CATALOG if c.severity == "high"}
    one = await http.get("/api/v1/error-codes/NEGATIVE_BALANCE", headers=auth(Role.ADMIN))
    assert one.status_code == 200 and one.json()["severity"] == "high"


async def test_error_codes_bad_input_roles_and_unknown_codes(http: httpx.AsyncClient, auth) -> None:
    unknown = await http.get("/api/v1/error-codes/NOPE", headers=auth(Role.AUDITOR))
    assert (unknown.status_code, error_of(unknown)["code"]) == (404, "NOT_FOUND")
    for params in ({"severity": "apocalyptic"}, {"cursor": encode_cursor(3)}, {"limit": 0}):
        bad = await http.get("/api/v1/error-codes", params=params, headers=auth(Role.AUDITOR))
        assert bad.status_code == 422, params
        error_of(bad)
    long = await http.get(f"/api/v1/error-codes/{'X' * 65}", headers=auth(Role.AUDITOR))
    assert long.status_code == 422
    for path in ("/api/v1/error-codes", "/api/v1/error-codes/TIMEOUT"):
        denied = await http.get(path, headers=auth(Role.CHANNEL))
        assert (denied.status_code, error_of(denied)["code"]) == (403, "FORBIDDEN")


async def test_nul_bytes_are_422_not_a_database_error(
    http: httpx.AsyncClient, auth, seeded: dict[str, Any], store: SqlStore
) -> None:
    # PostgreSQL refuses NUL in text: each must be refused before it reaches the database
    h = auth(Role.ADMIN)
    err = seeded["ids"][0]
    cases = [
        await http.post(f"{URL}/{err}/resolve", json={"notes": "fixed\x00"}, headers=h),
        await http.get(URL, params={"code": "TIME\x00OUT"}, headers=h),
        await http.get(f"{URL}/trends", params={"code": "\x00"}, headers=h),
        await http.get("/api/v1/error-codes/TIME%00OUT", headers=h),
        await http.get("/api/v1/error-codes", params={"cursor": encode_cursor("A\x00")}, headers=h),
    ]
    assert [r.status_code for r in cases] == [422] * len(cases), [r.text for r in cases]
    for response in cases:
        error_of(response)
    row = get_error(store.engine, err)
    assert row is not None and not row.resolved
