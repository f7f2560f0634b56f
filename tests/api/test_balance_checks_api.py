"""``/balance-checks`` over HTTP, on both stores: nights checked by the real job on the ledger.

Each night has 2 PASS, 1 FAIL and 2 ERROR (MISSING_DATA: customers without an account). One
customer's balance is a distinctive number that must never appear in an answer.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from apitest import error_of
from duly.auth.roles import Role
from duly.banking.customers import Customers, NewAccount, NewCustomer
from duly.banking.ledger import LedgerBank
from duly.clock import ManualClock
from duly.engine.states import RunStatus
from duly.engine.store.sql import SqlStore
from duly.operations.balance_check.jobs import balance_check_registry
from duly.operations.balance_check.models import JOB_NAME
from duly.operations.balance_check.planning import balance_check_schedule
from duly.testing import EngineHarness

T0 = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)
NIGHTS = ["2026-02-27", "2026-02-28", "2026-03-01", "2026-03-02"]
SECRET_MINOR = 7_654_321
SECRET_TEXT = ("7654321", "76543.21")
URL = "/api/v1/balance-checks"


@pytest.fixture
def api_clock() -> ManualClock:
    return ManualClock(T0)


async def check_nights(store: SqlStore, clock: ManualClock, nights: list[str]) -> list[int]:
    """Run the real check for each business date on the ledger; their run ids in order."""
    people = Customers(store.engine, clock)
    bank = LedgerBank(store.engine, clock)
    if not people.find():
        for name, funded in [("ok1", 100), ("ok2", SECRET_MINOR), ("low", 99), ("gone", None),
                             ("gone2", None)]:  # fmt: skip
            row = people.add(NewCustomer(name, tier="premium", min_balance_minor=100,
                                         min_balance_currency="USD"))  # fmt: skip
            if funded is not None:
                account = f"US00{name.upper()}000000001234"
                people.open_account(NewAccount(account, "USD", row.id))
                bank.fund(account, funded, "USD", f"f-{name}")
    registry = balance_check_registry(ports=lambda *_: bank)
    async with EngineHarness(store, registry, clock, roles=("worker",)) as h:
        runs = [h.client.trigger(JOB_NAME, {"business_date": n})[0].id for n in nights]
        await h.advance(timedelta(minutes=1))
        await h.settle()
    return runs


@pytest.fixture
async def nights(store: SqlStore, api_clock: ManualClock) -> dict[str, Any]:
    runs = await check_nights(store, api_clock, NIGHTS)
    ids = {c.external_id: c.id for c in Customers(store.engine, api_clock).find()}
    return {"runs": runs, "ids": ids}


def assert_no_balance(response: httpx.Response) -> None:
    assert not any(s in response.text for s in SECRET_TEXT), response.text
    assert "US00" not in response.text  # no account number either


async def test_runs_with_their_summary_newest_first_across_pages(
    http: httpx.AsyncClient, auth, nights: dict[str, Any]
) -> None:
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = await http.get(URL, params=params, headers=auth(Role.AUDITOR))
        assert page.status_code == 200, page.text
        assert_no_balance(page)
        seen += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert [r["id"] for r in seen] == nights["runs"][::-1]
    newest = seen[0]
    assert (newest["status"], newest["business_date"]) == ("succeeded", "2026-03-02")
    s = newest["summary"]
    assert (s["customers"], s["passed"], s["failed"], s["errors"]) == (5, 2, 1, 2)
    assert s["errors_by_code"] == {"MISSING_DATA": 2}
    one = await http.get(f"{URL}/{newest['id']}", headers=auth(Role.OPERATOR))
    assert one.status_code == 200 and one.json() == newest


async def test_runs_filter_by_status_and_period(
    http: httpx.AsyncClient, auth, nights: dict[str, Any]
) -> None:
    ok = await http.get(URL, params={"status": "succeeded"}, headers=auth(Role.ADMIN))
    assert len(ok.json()["items"]) == 4
    failed = await http.get(URL, params={"status": "failed"}, headers=auth(Role.ADMIN))
    assert failed.json() == {"items": [], "next_cursor": None}
    later = (T0 + timedelta(hours=1)).isoformat()
    none = await http.get(URL, params={"since": later}, headers=auth(Role.ADMIN))
    assert none.json()["items"] == []


async def test_a_runs_results_by_customer_filtered_and_paged(
    http: httpx.AsyncClient, auth, nights: dict[str, Any]
) -> None:
    run_id, ids = nights["runs"][-1], nights["ids"]
    first = await http.get(f"{URL}/{run_id}/results", params={"limit": 2}, headers=auth(Role.AUDITOR))
    assert first.status_code == 200, first.text
    body = first.json()
    rest = await http.get(f"{URL}/{run_id}/results",
                          params={"limit": 10, "cursor": body["next_cursor"]},
                          headers=auth(Role.AUDITOR))  # fmt: skip
    rows = body["items"] + rest.json()["items"]
    assert rest.json()["next_cursor"] is None
    assert [r["customer_id"] for r in rows] == sorted(ids.values())
    assert set(rows[0]) == {"run_id", "business_date", "customer_id", "result", "error_code",
                            "attempts", "checked_at"}  # fmt: skip
    by = {r["customer_id"]: (r["result"], r["error_code"]) for r in rows}
    assert by[ids["low"]] == ("FAIL", None) and by[ids["ok2"]] == ("PASS", None)
    assert by[ids["gone"]] == ("ERROR", "MISSING_DATA")
    assert_no_balance(first)
    assert_no_balance(rest)
    fails = await http.get(f"{URL}/{run_id}/results", params={"result": "FAIL"},
                           headers=auth(Role.AUDITOR))  # fmt: skip
    assert [r["customer_id"] for r in fails.json()["items"]] == [ids["low"]]
    errors = await http.get(f"{URL}/{run_id}/results", params={"result": "ERROR"},
                            headers=auth(Role.AUDITOR))  # fmt: skip
    assert {r["customer_id"] for r in errors.json()["items"]} == {ids["gone"], ids["gone2"]}


async def test_a_customers_history_newest_night_first_across_pages(
    http: httpx.AsyncClient, auth, nights: dict[str, Any]
) -> None:
    customer = nights["ids"]["low"]
    url = f"{URL}/customers/{customer}"
    first = await http.get(url, params={"limit": 3}, headers=auth(Role.OPERATOR))
    assert first.status_code == 200, first.text
    second = await http.get(url, params={"limit": 3, "cursor": first.json()["next_cursor"]},
                            headers=auth(Role.OPERATOR))  # fmt: skip
    rows = first.json()["items"] + second.json()["items"]
    assert second.json()["next_cursor"] is None
    assert [r["business_date"] for r in rows] == NIGHTS[::-1]
    assert {r["result"] for r in rows} == {"FAIL"}
    assert [r["run_id"] for r in rows] == nights["runs"][::-1]
    assert_no_balance(first)


async def test_unknown_runs_and_customers_are_404(
    http: httpx.AsyncClient, auth, nights: dict[str, Any], app: FastAPI
) -> None:
    other, _ = app.state.duly.client.trigger("duly.noop")  # a run of another job
    for path in (f"{URL}/999999", f"{URL}/999999/results", f"{URL}/{other.id}",
                 f"{URL}/{other.id}/results", f"{URL}/customers/999999"):  # fmt: skip
        response = await http.get(path, headers=auth(Role.AUDITOR))
        assert (response.status_code, error_of(response)["code"]) == (404, "NOT_FOUND"), path


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("", {"since": "2026-03-02T00:00:00"}),  # naive
        ("", {"until": "yesterday"}),
        ("", {"since": "2026-03-03T00:00:00Z", "until": "2026-03-02T00:00:00Z"}),
        ("", {"since": "2026-03-02T00:00:00Z", "until": "2026-03-02T00:00:00Z"}),
        ("", {"since": "0001-01-01T00:00:00+01:00"}),
        ("", {"status": "exploded"}),
        ("", {"limit": 0}),
        ("", {"limit": 501}),
        ("", {"cursor": "not-a-cursor"}),
        ("", {"cursor": "MTAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAw"}),  # 10**29: past 64 bits
        ("", {"cursor": "LTU"}),  # -5
        ("/RUN/results", {"result": "pass"}),
        ("/RUN/results", {"result": "MAYBE"}),
        ("/RUN/results", {"cursor": "IjEi"}),  # a string key where an id belongs
        ("/customers/CUSTOMER", {"cursor": "MQ"}),  # an id where a date belongs
        ("/customers/CUSTOMER", {"cursor": "Im5vdC1hLWRhdGUi"}),  # "not-a-date"
        ("/0", {}),
        ("/-1/results", {}),
        ("/99999999999999999999", {}),
        ("/customers/99999999999999999999", {}),
        ("/customers/x", {}),
    ],
)
async def test_bad_input_is_422(
    http: httpx.AsyncClient, auth, nights: dict[str, Any], path: str, params: dict[str, Any]
) -> None:
    path = path.replace("RUN", str(nights["runs"][0]))
    path = path.replace("CUSTOMER", str(nights["ids"]["low"]))
    response = await http.get(f"{URL}{path}", params=params, headers=auth(Role.ADMIN))
    assert response.status_code == 422, response.text
    error_of(response)


async def test_missed_nights_with_how_to_backfill_them(
    http: httpx.AsyncClient, auth, app: FastAPI, store: SqlStore, api_clock: ManualClock
) -> None:
    none = await http.get(f"{URL}/missed", headers=auth(Role.AUDITOR))
    assert none.status_code == 200
    assert none.json() == {"lookback_days": 7, "nights": []}  # no schedule: nothing was due
    cfg = app.state.duly.settings.jobs.daily_balance_check
    app.state.duly.client.upsert_schedule(balance_check_schedule(cfg))  # first fire 03-03 22:00
    api_clock.set(datetime(2026, 3, 4, 23, 0, tzinfo=UTC))
    await check_nights(store, api_clock, ["2026-03-04"])  # the one night that was checked
    api_clock.set(datetime(2026, 3, 6, 12, 0, tzinfo=UTC))
    response = await http.get(f"{URL}/missed", headers=auth(Role.OPERATOR))
    assert response.status_code == 200, response.text
    nights = response.json()["nights"]
    assert [n["business_date"] for n in nights] == ["2026-03-03", "2026-03-05"]
    assert nights[0]["backfill_path"] == "/api/v1/jobs/daily_balance_check/runs"
    assert nights[0]["backfill_body"] == {"args": {"business_date": "2026-03-03"}}
    # what it says to do is a manual run of that night
    trigger = await http.post(nights[1]["backfill_path"], json=nights[1]["backfill_body"],
                              headers=auth(Role.OPERATOR))  # fmt: skip
    assert trigger.status_code == 202, trigger.text
    assert trigger.json()["args"] == {"business_date": "2026-03-05"}
    assert store.run_get(trigger.json()["id"]).status is RunStatus.QUEUED


@pytest.mark.parametrize("path", ["", "/1", "/1/results", "/customers/1", "/missed"])
async def test_the_channel_role_sees_none_of_it(
    http: httpx.AsyncClient, auth, path: str
) -> None:
    response = await http.get(f"{URL}{path}", headers=auth(Role.CHANNEL))
    assert (response.status_code, error_of(response)["code"]) == (403, "FORBIDDEN")


async def test_without_a_token_it_is_401(http: httpx.AsyncClient) -> None:
    response = await http.get(URL)
    assert response.status_code == 401
    error_of(response)
