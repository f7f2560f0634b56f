"""``/transfers`` over HTTP, on each store: schedule (with ``Idempotency-Key``), list, read,
cancel, reschedule — the roles that may, and the input refused (4xx, nothing written)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from apitest import error_of
from duly.banking.customers import Customers, NewAccount, NewCustomer
from duly.banking.ledger import LedgerBank
from duly.clock import SystemClock
from duly.engine.store.sql import SqlStore
from duly.operations.transfers.models import scheduled_transfers

API = "/api/v1"
Auth = Callable[..., dict[str, str]]

ANN = "US00ANN000000001234"
SHOP = "US00SHOP00000005678"
BOB = "US00BOB000000004321"
EURO = "DE00EUR000000000001"
SHUT = "US00SHUT00000000009"


@dataclass
class Bank:
    ann: int
    bob: int


@pytest.fixture
def bank(store: SqlStore) -> Bank:
    """Ann (New York) with USD 1,000.00; Bob; a shop; a EUR account; a closed one."""
    clock = SystemClock()
    people = Customers(store.engine, clock)
    ann = people.add(NewCustomer("ann", timezone="America/New_York"))
    bob = people.add(NewCustomer("bob", timezone="Europe/London"))
    people.open_account(NewAccount(ANN, "USD", ann.id))
    people.open_account(NewAccount(BOB, "USD", bob.id))
    people.open_account(NewAccount(SHOP, "USD", None))
    people.open_account(NewAccount(EURO, "EUR", None))
    people.open_account(NewAccount(SHUT, "USD", None))
    people.close_account(SHUT)
    LedgerBank(store.engine, clock).fund(ANN, 100_000, "USD", "fund-ann")
    return Bank(ann.id, bob.id)


def body(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "from_account": ANN,
        "to_account": SHOP,
        "amount": "125.50",
        "currency": "USD",
        "local_date": "2099-01-03",  # a Saturday
        "local_time": "10:00",
        "calendar": "US-FED",
        "memo": "rent",
    }
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


def count(store: SqlStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(scheduled_transfers)).scalar_one())


async def schedule(http: httpx.AsyncClient, auth: Auth, **kw: Any) -> dict[str, Any]:
    answer = await http.post(f"{API}/transfers", json=body(**kw), headers=auth("channel"))
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


async def test_schedule_and_read_a_transfer(
    http: httpx.AsyncClient, auth: Auth, bank: Bank
) -> None:
    created = await http.post(f"{API}/transfers", json=body(), headers=auth("channel"))
    assert created.status_code == 201, created.text
    t = created.json()
    assert created.headers["location"] == f"{API}/transfers/{t['id']}"
    assert t["amount"] == "125.50" and t["currency"] == "USD" and t["status"] == "scheduled"
    assert t["customer_id"] == bank.ann and t["timezone"] == "America/New_York"
    assert t["local_date"] == "2099-01-03" and t["execution_date"] == "2099-01-05"  # Sat → Mon
    assert t["execute_at"] == "2099-01-05T15:00:00Z" and t["version"] == 1
    assert t["run_id"] is not None and t["memo"] == "rent"
    for role in ("admin", "operator", "auditor", "channel"):
        got = await http.get(f"{API}/transfers/{t['id']}", headers=auth(role))
        assert got.status_code == 200 and got.json() == t


async def test_list_by_customer_and_status_across_pages(
    http: httpx.AsyncClient, auth: Auth, bank: Bank, store: SqlStore
) -> None:
    LedgerBank(store.engine, SystemClock()).fund(BOB, 10_000, "USD", "fund-bob")
    ids = [(await schedule(http, auth, amount=f"{i}.00"))["id"] for i in range(1, 6)]
    bobs = await schedule(http, auth, from_account=BOB)
    await http.post(f"{API}/transfers/{ids[0]}/cancel", headers=auth("channel"))
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"customer_id": bank.ann, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await http.get(f"{API}/transfers", params=params, headers=auth("channel"))).json()
        assert len(page["items"]) <= 2
        seen += [t["id"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    scheduled = await http.get(f"{API}/transfers", params={"status": "scheduled"},
                               headers=auth("auditor"))  # fmt: skip
    assert [t["id"] for t in scheduled.json()["items"]] == [*ids[1:], bobs["id"]]
    cancelled = await http.get(f"{API}/transfers",
                               params={"status": "cancelled", "customer_id": bank.ann},
                               headers=auth("operator"))  # fmt: skip
    assert [t["id"] for t in cancelled.json()["items"]] == [ids[0]]


async def test_an_idempotency_key_makes_one_transfer(
    http: httpx.AsyncClient, auth: Auth, bank: Bank, store: SqlStore
) -> None:
    headers = {**auth("channel"), "Idempotency-Key": "pay-rent-2099-01"}
    first = await http.post(f"{API}/transfers", json=body(), headers=headers)
    again = await http.post(f"{API}/transfers", json=body(), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    other = await http.post(f"{API}/transfers", json=body(amount="999.00"), headers=headers)
    assert other.status_code == 422 and error_of(other)["code"] == "IDEMPOTENCY_KEY_REUSED"
    # another caller's key of the same text is its own
    theirs = await http.post(f"{API}/transfers", json=body(),
                             headers={**auth("operator"), "Idempotency-Key": "pay-rent-2099-01"})  # fmt: skip
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"]
    assert count(store) == 2
    bad_key = await http.post(f"{API}/transfers", json=body(),
                              headers={**auth("channel"), "Idempotency-Key": "has space"})  # fmt: skip
    assert bad_key.status_code == 422 and count(store) == 2


async def test_without_a_key_each_request_is_a_transfer(
    http: httpx.AsyncClient, auth: Auth, bank: Bank, store: SqlStore
) -> None:
    await schedule(http, auth)
    await schedule(http, auth)
    assert count(store) == 2


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"amount": "12.345"}, "decimals"),
        ({"amount": "0.00"}, "greater than zero"),
        ({"amount": "-1.00"}, "amount"),
        ({"amount": 12.5}, "amount"),
        ({"amount": "1e3"}, "amount"),
        ({"amount": "9999999999999999"}, "amount"),
        ({"currency": "usd"}, "currency"),
        ({"currency": "XXX"}, "currency"),
        ({"currency": "EUR"}, "holds USD"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"local_date": "2099-02-30"}, "local_date"),
        ({"local_date": "next friday"}, "local_date"),
        ({"local_date": "2001-01-05"}, "has passed"),
        ({"local_date": "3000-01-01"}, "2199-12-31"),
        ({"local_time": "25:00"}, "local_time"),
        ({"local_time": "9:00"}, "local_time"),
        ({"to_account": "US00NOBODY000000000"}, "no account ending 0000"),
        ({"to_account": ANN}, "same"),
        ({"to_account": SHUT}, "closed"),
        ({"to_account": EURO}, "holds EUR"),
        ({"to_account": "US\x00"}, "to_account"),
        ({"to_account": ""}, "to_account"),
        ({"memo": "m" * 141}, "memo"),
        ({"calendar": "XX-NOWHERE"}, "calendar"),
        ({"convention": "sideways"}, "convention"),
        ({"bank": "nope"}, "unknown bank"),
        ({"customer_id": 999}, "no customer 999"),
        ({"customer_id": 2**63}, "customer_id"),
        ({"priority": "high"}, "priority"),
    ],
)
async def test_bad_transfers_are_refused(
    http: httpx.AsyncClient, auth: Auth, bank: Bank, store: SqlStore, change: dict[str, Any],
    words: str,
) -> None:  # fmt: skip
    answer = await http.post(f"{API}/transfers", json=body(**change), headers=auth("channel"))
    assert answer.status_code == 422, answer.text
    err = error_of(answer)
    assert words in err["message"] or words in str(err["details"]), err
    assert count(store) == 0


async def test_a_transfer_is_for_the_owner_of_its_debit_account(
    http: httpx.AsyncClient, auth: Auth, bank: Bank, store: SqlStore
) -> None:
    answer = await http.post(f"{API}/transfers", json=body(customer_id=bank.bob),
                             headers=auth("channel"))  # fmt: skip
    assert answer.status_code == 422 and "does not belong" in error_of(answer)["message"]
    assert count(store) == 0
    mine = await http.post(f"{API}/transfers", json=body(customer_id=bank.ann),
                           headers=auth("channel"))  # fmt: skip
    assert mine.status_code == 201


async def test_cancel(http: httpx.AsyncClient, auth: Auth, bank: Bank, store: SqlStore) -> None:
    t = await schedule(http, auth)
    cancelled = await http.post(f"{API}/transfers/{t['id']}/cancel", headers=auth("channel"))
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["cancelled_at"]
    run = store.run_get(t["run_id"])
    assert run is not None and run.status.value == "cancelled"
    again = await http.post(f"{API}/transfers/{t['id']}/cancel", headers=auth("channel"))
    assert again.status_code == 409 and error_of(again)["code"] == "STATE_CONFLICT"
    missing = await http.post(f"{API}/transfers/999/cancel", headers=auth("operator"))
    assert missing.status_code == 404 and error_of(missing)["message"] == "no transfer 999"


async def test_reschedule(http: httpx.AsyncClient, auth: Auth, bank: Bank, store: SqlStore) -> None:
    t = await schedule(http, auth)
    moved = await http.post(f"{API}/transfers/{t['id']}/reschedule",
                            json={"local_date": "2099-01-12", "local_time": "08:30"},
                            headers=auth("channel"))  # fmt: skip
    assert moved.status_code == 200, moved.text
    m = moved.json()
    assert m["version"] == 2 and m["local_date"] == "2099-01-12" and m["local_time"] == "08:30"
    assert m["execute_at"] == "2099-01-12T13:30:00Z" and m["transfer_key"] == t["transfer_key"]
    assert m["run_id"] != t["run_id"]
    old = store.run_get(t["run_id"])
    assert old is not None and old.status.value == "cancelled"
    time_kept = await http.post(f"{API}/transfers/{t['id']}/reschedule",
                                json={"local_date": "2099-01-13"}, headers=auth("operator"))  # fmt: skip
    assert time_kept.json()["local_time"] == "08:30" and time_kept.json()["version"] == 3


@pytest.mark.parametrize(
    ("new", "status", "words"),
    [
        ({"local_date": "2001-01-05"}, 422, "has passed"),
        ({"local_date": "2099-13-01"}, 422, "local_date"),
        ({"local_date": "2099-01-12", "local_time": "24:00"}, 422, "local_time"),
        ({"local_date": "2099-01-12", "calendar": "XX-NOWHERE"}, 422, "calendar"),
        ({"local_date": "2099-01-12", "timezone": "UTC"}, 422, "timezone"),
        ({}, 422, "local_date"),
    ],
)
async def test_bad_reschedules_change_nothing(
    http: httpx.AsyncClient, auth: Auth, bank: Bank, new: dict[str, Any], status: int,
    words: str,
) -> None:  # fmt: skip
    t = await schedule(http, auth)
    answer = await http.post(f"{API}/transfers/{t['id']}/reschedule", json=new,
                             headers=auth("channel"))  # fmt: skip
    assert answer.status_code == status, answer.text
    err = error_of(answer)
    assert words in err["message"] or words in str(err["details"]), err
    after = await http.get(f"{API}/transfers/{t['id']}", headers=auth("channel"))
    assert after.json() == t


async def test_a_cancelled_or_absent_transfer_cannot_be_rescheduled(
    http: httpx.AsyncClient, auth: Auth, bank: Bank
) -> None:
    t = await schedule(http, auth)
    await http.post(f"{API}/transfers/{t['id']}/cancel", headers=auth("channel"))
    answer = await http.post(f"{API}/transfers/{t['id']}/reschedule",
                             json={"local_date": "2099-01-12"}, headers=auth("channel"))  # fmt: skip
    assert answer.status_code == 409 and "can no longer be rescheduled" in error_of(answer)["message"]
    missing = await http.post(f"{API}/transfers/999/reschedule", json={"local_date": "2099-01-12"},
                              headers=auth("channel"))  # fmt: skip
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "json"),
    [
        ("POST", "/transfers", body()),
        ("POST", "/transfers/1/cancel", None),
        ("POST", "/transfers/1/reschedule", {"local_date": "2099-01-12"}),
    ],
)
async def test_the_auditor_changes_nothing(
    http: httpx.AsyncClient, auth: Auth, bank: Bank, store: SqlStore, method: str, path: str,
    json: Any,
) -> None:  # fmt: skip
    t = await schedule(http, auth)
    answer = await http.request(method, f"{API}{path}", json=json, headers=auth("auditor"))
    assert answer.status_code == 403 and error_of(answer)["code"] == "FORBIDDEN"
    after = await http.get(f"{API}/transfers/{t['id']}", headers=auth("auditor"))
    assert after.json() == t and count(store) == 1


@pytest.mark.parametrize(
    "path",
    [
        "/transfers/999",
        "/transfers/0",
        "/transfers/abc",
        f"/transfers/{2**63}",
        "/transfers?status=lost",
        "/transfers?customer_id=0",
        "/transfers?cursor=%%%",
        "/transfers?limit=1000",
    ],
)
async def test_absent_or_malformed_references(
    http: httpx.AsyncClient, auth: Auth, bank: Bank, path: str
) -> None:
    answer = await http.get(f"{API}{path}", headers=auth("channel"))
    assert answer.status_code == (404 if path == "/transfers/999" else 422), answer.text
    error_of(answer)
