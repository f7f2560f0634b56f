"""``/recurring-payments`` over HTTP, on each store, on a manual clock (Monday 2 March 2026,
00:00 UTC): set up (with ``Idempotency-Key``), list, read, change, pause, resume, cancel,
occurrences and preview — the roles that may, and the input refused (4xx, nothing written)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from apitest import error_of
from duly.banking.customers import Customers, NewAccount, NewCustomer
from duly.clock import Clock, ManualClock
from duly.engine.client import EngineClient
from duly.engine.store.sql import SqlStore
from duly.operations import RecurringPayments, operations_registry
from duly.operations.outbox import outbox
from duly.operations.recurring.models import recurring_payments

API = "/api/v1"
Auth = Callable[..., dict[str, str]]

BEA = "GB00BEA000000001234"
LANDLORD = "GB00LAND00000005678"
EURO = "DE00EUR000000000001"
SHUT = "GB00SHUT00000000009"


@pytest.fixture
def api_clock() -> Clock:
    """The app's clock, under the test's hand."""
    return ManualClock(datetime(2026, 3, 2, tzinfo=UTC))


@pytest.fixture
def bea(store: SqlStore, api_clock: ManualClock) -> int:
    """Bea (London) pays her landlord in GBP."""
    people = Customers(store.engine, api_clock)
    row = people.add(NewCustomer("bea", timezone="Europe/London"))
    people.open_account(NewAccount(BEA, "GBP", row.id))
    people.open_account(NewAccount(LANDLORD, "GBP", None))
    people.open_account(NewAccount(EURO, "EUR", None))
    people.open_account(NewAccount(SHUT, "GBP", None))
    people.close_account(SHUT)
    return row.id


def body(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "from_account": BEA,
        "to_account": LANDLORD,
        "amount": "950.00",
        "currency": "GBP",
        "frequency": "monthly",
        "start_date": "2026-03-31",  # 09:00 BST = 08:00 UTC
        "time_of_day": "09:00",
        "calendar": "GB-BACS",
        "memo": "rent",
    }
    base.update(kw)
    return base


def count(store: SqlStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(recurring_payments)).scalar_one())


def events(store: SqlStore) -> list[str]:
    with store.engine.connect() as conn:
        return list(conn.execute(select(outbox.c.event_type).order_by(outbox.c.id)).scalars())


def sweep(store: SqlStore, clock: ManualClock) -> None:
    """What the ``operations.sweep`` job does every hour: materialise what is due."""
    RecurringPayments(EngineClient(store, operations_registry, clock)).materialize_due()


async def set_up(http: httpx.AsyncClient, auth: Auth, **kw: Any) -> dict[str, Any]:
    answer = await http.post(f"{API}/recurring-payments", json=body(**kw), headers=auth("channel"))
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


async def test_set_up_and_read_a_payment(http: httpx.AsyncClient, auth: Auth, bea: int) -> None:
    created = await http.post(f"{API}/recurring-payments", json=body(), headers=auth("channel"))
    assert created.status_code == 201, created.text
    p = created.json()
    assert created.headers["location"] == f"{API}/recurring-payments/{p['id']}"
    assert p["status"] == "active" and p["amount"] == "950.00" and p["currency"] == "GBP"
    assert p["customer_id"] == bea and p["timezone"] == "Europe/London"
    assert p["next_execute_at"] == "2026-03-31T08:00:00Z" and p["on_final_failure"] == "skip"
    for role in ("admin", "operator", "auditor", "channel"):
        got = await http.get(f"{API}/recurring-payments/{p['id']}", headers=auth(role))
        assert got.status_code == 200 and got.json() == p


async def test_list_across_pages_by_status_and_customer(
    http: httpx.AsyncClient, auth: Auth, bea: int
) -> None:
    ids = [(await set_up(http, auth, amount=f"{i}.00"))["id"] for i in range(1, 6)]
    await http.post(f"{API}/recurring-payments/{ids[1]}/pause", headers=auth("channel"))
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await http.get(f"{API}/recurring-payments", params=params,
                               headers=auth("auditor"))).json()  # fmt: skip
        seen += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    paused = await http.get(f"{API}/recurring-payments", params={"status": "paused"},
                            headers=auth("operator"))  # fmt: skip
    assert [p["id"] for p in paused.json()["items"]] == [ids[1]]
    other = await http.get(f"{API}/recurring-payments", params={"customer_id": bea + 1},
                           headers=auth("admin"))  # fmt: skip
    assert other.json()["items"] == []


async def test_an_idempotency_key_makes_one_payment(
    http: httpx.AsyncClient, auth: Auth, bea: int, store: SqlStore
) -> None:
    headers = {**auth("channel"), "Idempotency-Key": "rent-2026"}
    first = await http.post(f"{API}/recurring-payments", json=body(), headers=headers)
    again = await http.post(f"{API}/recurring-payments", json=body(), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    other = await http.post(f"{API}/recurring-payments", json=body(amount="951.00"),
                            headers=headers)  # fmt: skip
    assert other.status_code == 422 and error_of(other)["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert count(store) == 1


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"frequency": "daily"}, "frequency"),
        ({"start_date": "2026-02-27"}, "has passed"),
        ({"start_date": "2026-02-30"}, "start_date"),
        ({"start_date": "1999-12-31"}, "2000-01-01"),
        ({"amount": "950.001"}, "decimals"),
        ({"amount": "0"}, "greater than zero"),
        ({"amount": "-950.00"}, "amount"),
        ({"amount": 950}, "amount"),
        ({"currency": "EUR"}, "holds GBP"),
        ({"currency": "ABC"}, "currency"),
        ({"time_of_day": "9:00"}, "time_of_day"),
        ({"timezone": "Europe/Atlantis"}, "timezone"),
        ({"frequency": "rrule", "rrule": "FREQ=HOURLY"}, "FREQ"),
        ({"frequency": "rrule", "rrule": "FREQ=DAILY;INTERVAL=0"}, "INTERVAL"),
        ({"frequency": "rrule", "rrule": "FREQ=DAILY\x00"}, "rrule"),
        ({"frequency": "rrule"}, "needs a rule"),
        ({"rrule": "FREQ=MONTHLY"}, "only used with frequency rrule"),
        ({"interval": 0}, "interval"),
        ({"count": 0}, "count"),
        ({"day_of_month": 32}, "day_of_month"),
        ({"day_of_month": 0}, "day of month"),
        ({"weekday": 7}, "weekday"),
        ({"end_date": "2026-03-01"}, "end date"),
        ({"start_date": "2026-03-02", "day_of_month": 31, "end_date": "2026-03-30"},
         "no occurrence"),
        ({"to_account": "GB00NOBODY000000000"}, "no account ending 0000"),
        ({"to_account": BEA}, "same"),
        ({"to_account": SHUT}, "closed"),
        ({"on_final_failure": "explode"}, "on_final_failure"),
        ({"customer_id": 999}, "no customer 999"),
        ({"memo": "m" * 141}, "memo"),
        ({"starts": "2026-04-01"}, "starts"),
    ],
)
async def test_bad_payments_are_refused(
    http: httpx.AsyncClient, auth: Auth, bea: int, store: SqlStore, change: dict[str, Any],
    words: str,
) -> None:  # fmt: skip
    answer = await http.post(f"{API}/recurring-payments", json=body(**change),
                             headers=auth("channel"))  # fmt: skip
    assert answer.status_code == 422, answer.text
    err = error_of(answer)
    assert words in err["message"] or words in str(err["details"]), err
    assert count(store) == 0 and events(store) == []


# -- changing ---------------------------------------------------------------------------


async def test_change_the_terms(
    http: httpx.AsyncClient, auth: Auth, bea: int, store: SqlStore, api_clock: ManualClock
) -> None:
    p = await set_up(http, auth)
    patched = await http.patch(f"{API}/recurring-payments/{p['id']}",
                               json={"amount": "975.25", "memo": None, "time_of_day": "10:30",
                                     "count": 12},
                               headers=auth("channel"))  # fmt: skip
    assert patched.status_code == 200, patched.text
    q = patched.json()
    assert q["amount"] == "975.25" and q["memo"] is None and q["count"] == 12
    assert q["time_of_day"] == "10:30" and q["version"] == p["version"] + 1
    assert q["next_execute_at"] == "2026-03-31T09:30:00Z"
    assert events(store)[-1] == "recurring_payment.updated"
    ended = await http.patch(f"{API}/recurring-payments/{p['id']}",
                             json={"count": None, "end_date": "2026-06-30"},
                             headers=auth("operator"))  # fmt: skip
    assert ended.json()["count"] is None and ended.json()["end_date"] == "2026-06-30"
    preview = await http.get(f"{API}/recurring-payments/{p['id']}/preview",
                             params={"count": 10}, headers=auth("channel"))  # fmt: skip
    assert len(preview.json()["occurrences"]) == 4  # March to June
    api_clock.set(datetime(2026, 3, 31, 9, 0, tzinfo=UTC))
    sweep(store, api_clock)
    occ = await http.get(f"{API}/recurring-payments/{p['id']}/occurrences", headers=auth("channel"))
    (first,) = occ.json()["items"]
    assert first["execute_at"] == "2026-03-31T09:30:00Z" and first["status"] == "scheduled"


@pytest.mark.parametrize(
    ("patch", "words"),
    [
        ({}, "nothing to change"),
        ({"amount": None}, "amount: may not be null"),
        ({"time_of_day": None}, "time_of_day: may not be null"),
        ({"amount": "1.001"}, "decimals"),
        ({"amount": "0.00"}, "greater than zero"),
        ({"amount": "-1"}, "amount"),
        ({"amount": 10}, "amount"),
        ({"time_of_day": "24:00"}, "time_of_day"),
        ({"end_date": "2026-02-01"}, "end date"),
        ({"end_date": "2026-13-01"}, "end_date"),
        ({"count": 0}, "count"),
        ({"memo": "m" * 141}, "memo"),
        ({"currency": "EUR"}, "currency"),
        ({"frequency": "weekly"}, "frequency"),
        ({"from_account": LANDLORD}, "from_account"),
    ],
)
async def test_bad_changes_change_nothing(
    http: httpx.AsyncClient, auth: Auth, bea: int, store: SqlStore, patch: dict[str, Any],
    words: str,
) -> None:  # fmt: skip
    p = await set_up(http, auth)
    before = events(store)
    answer = await http.patch(f"{API}/recurring-payments/{p['id']}", json=patch,
                              headers=auth("channel"))  # fmt: skip
    assert answer.status_code == 422, answer.text
    err = error_of(answer)
    assert words in err["message"] or words in str(err["details"]), err
    after = await http.get(f"{API}/recurring-payments/{p['id']}", headers=auth("channel"))
    assert after.json() == p and events(store) == before


async def test_a_change_waits_while_an_occurrence_is_under_way(
    http: httpx.AsyncClient, auth: Auth, bea: int
) -> None:
    # 00:30 GMT today: within the hour, so the first occurrence is made (and its run queued)
    p = await set_up(http, auth, start_date="2026-03-02", time_of_day="00:30")
    answer = await http.patch(f"{API}/recurring-payments/{p['id']}", json={"amount": "1.00"},
                              headers=auth("channel"))  # fmt: skip
    assert answer.status_code == 409 and "2026-03-02 is scheduled" in error_of(answer)["message"]
    after = await http.get(f"{API}/recurring-payments/{p['id']}", headers=auth("channel"))
    assert after.json()["amount"] == "950.00"


async def test_the_next_occurrence_may_not_move_into_the_past(
    http: httpx.AsyncClient, auth: Auth, bea: int, api_clock: ManualClock
) -> None:
    p = await set_up(http, auth, start_date="2026-03-02", time_of_day="09:00")
    api_clock.set(datetime(2026, 3, 2, 7, 30, tzinfo=UTC))  # not made yet: due in 90 minutes
    answer = await http.patch(f"{API}/recurring-payments/{p['id']}",
                              json={"time_of_day": "07:00"}, headers=auth("channel"))  # fmt: skip
    assert answer.status_code == 422 and "has passed" in error_of(answer)["message"]


async def test_pause_resume_cancel(
    http: httpx.AsyncClient, auth: Auth, bea: int, store: SqlStore
) -> None:
    p = await set_up(http, auth)
    url = f"{API}/recurring-payments/{p['id']}"
    paused = await http.post(f"{url}/pause", json={"reason": "customer abroad"},
                             headers=auth("channel"))  # fmt: skip
    assert paused.status_code == 200, paused.text
    assert paused.json()["status"] == "paused"
    assert paused.json()["status_reason"] == "customer abroad"
    again = await http.post(f"{url}/pause", headers=auth("channel"))
    assert again.status_code == 409 and error_of(again)["code"] == "STATE_CONFLICT"
    bad = await http.post(f"{url}/resume", json={"why": "x"}, headers=auth("channel"))
    assert bad.status_code == 200  # resume takes no body; a stray one is not read
    assert bad.json()["status"] == "active"
    not_paused = await http.post(f"{url}/resume", headers=auth("operator"))
    assert not_paused.status_code == 409
    cancelled = await http.post(f"{url}/cancel", headers=auth("channel"))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    for verb in ("pause", "resume", "cancel"):
        late = await http.post(f"{url}/{verb}", headers=auth("channel"))
        assert late.status_code == 409, verb
    changed = await http.patch(url, json={"amount": "1.00"}, headers=auth("channel"))
    assert changed.status_code == 409 and "cancelled" in error_of(changed)["message"]
    preview = await http.get(f"{url}/preview", headers=auth("channel"))
    assert preview.json()["occurrences"] == []


async def test_a_bad_pause_reason_is_refused(
    http: httpx.AsyncClient, auth: Auth, bea: int
) -> None:
    p = await set_up(http, auth)
    url = f"{API}/recurring-payments/{p['id']}"
    for reason in ({"reason": "x" * 201}, {"reason": "a\x00b"}, {"because": "x"}, {"reason": 5}):
        answer = await http.post(f"{url}/pause", json=reason, headers=auth("channel"))
        assert answer.status_code == 422, reason
    assert (await http.get(url, headers=auth("channel"))).json()["status"] == "active"


# -- occurrences and preview ----------------------------------------------------------


async def test_occurrences_across_pages(
    http: httpx.AsyncClient, auth: Auth, bea: int, store: SqlStore, api_clock: ManualClock
) -> None:
    p = await set_up(http, auth, frequency="weekly", start_date="2026-03-02", time_of_day="00:30")
    api_clock.advance(timedelta(days=36))  # to Tuesday 7 April, 00:00 UTC
    sweep(store, api_clock)
    url = f"{API}/recurring-payments/{p['id']}/occurrences"
    first = (await http.get(url, params={"limit": 4}, headers=auth("channel"))).json()
    rest = (await http.get(url, params={"limit": 4, "cursor": first["next_cursor"]},
                           headers=auth("channel"))).json()  # fmt: skip
    assert rest["next_cursor"] is None
    got = first["items"] + rest["items"]
    assert [o["seq"] for o in got] == list(range(6))
    assert [o["unadjusted_date"] for o in got] == [
        "2026-03-02", "2026-03-09", "2026-03-16", "2026-03-23", "2026-03-30", "2026-04-06"
    ]  # fmt: skip
    assert got[-1]["execution_date"] == "2026-04-07"  # Easter Monday is no business day
    assert got[-1]["execute_at"] == "2026-04-06T23:30:00Z"  # 00:30 BST
    assert all(o["status"] == "scheduled" for o in got)


async def test_preview(http: httpx.AsyncClient, auth: Auth, bea: int) -> None:
    p = await set_up(http, auth, start_date="2026-05-31", convention="modified_following")
    answer = await http.get(f"{API}/recurring-payments/{p['id']}/preview", params={"count": 3},
                            headers=auth("channel"))  # fmt: skip
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert got["timezone"] == "Europe/London"
    assert [(o["unadjusted_date"], o["execution_date"], o["execute_at"])
            for o in got["occurrences"]] == [
        ("2026-05-31", "2026-05-29", "2026-05-29T09:00:00+01:00"),  # Sunday, month end: Friday
        ("2026-06-30", "2026-06-30", "2026-06-30T09:00:00+01:00"),
        ("2026-07-31", "2026-07-31", "2026-07-31T09:00:00+01:00"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/recurring-payments/999", 404),
        ("/recurring-payments/999/occurrences", 404),
        ("/recurring-payments/999/preview", 404),
        ("/recurring-payments/1/preview?count=0", 422),
        ("/recurring-payments/1/preview?count=1001", 422),
        ("/recurring-payments/1/preview?count=ten", 422),
        ("/recurring-payments/1/occurrences?cursor=bm9wZQ", 422),
        ("/recurring-payments/0", 422),
        (f"/recurring-payments/{2**63}", 422),
        ("/recurring-payments?status=sleeping", 422),
    ],
)
async def test_absent_or_malformed_references(
    http: httpx.AsyncClient, auth: Auth, bea: int, path: str, status: int
) -> None:
    await set_up(http, auth)
    answer = await http.get(f"{API}{path}", headers=auth("admin"))
    assert answer.status_code == status, answer.text
    error_of(answer)


async def test_changes_to_an_absent_payment_are_404(
    http: httpx.AsyncClient, auth: Auth, bea: int
) -> None:
    for verb in ("pause", "resume", "cancel"):
        answer = await http.post(f"{API}/recurring-payments/999/{verb}", headers=auth("channel"))
        assert answer.status_code == 404 and "no recurring payment 999" in error_of(answer)["message"]
    patched = await http.patch(f"{API}/recurring-payments/999", json={"amount": "1.00"},
                               headers=auth("channel"))  # fmt: skip
    assert patched.status_code == 404


# -- roles ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "json"),
    [
        ("POST", "/recurring-payments", body()),
        ("PATCH", "/recurring-payments/1", {"amount": "1.00"}),
        ("POST", "/recurring-payments/1/pause", None),
        ("POST", "/recurring-payments/1/resume", None),
        ("POST", "/recurring-payments/1/cancel", None),
    ],
)
async def test_the_auditor_changes_nothing(
    http: httpx.AsyncClient, auth: Auth, bea: int, store: SqlStore, method: str, path: str,
    json: Any,
) -> None:  # fmt: skip
    p = await set_up(http, auth)
    answer = await http.request(method, f"{API}{path}", json=json, headers=auth("auditor"))
    assert answer.status_code == 403 and error_of(answer)["code"] == "FORBIDDEN"
    after = await http.get(f"{API}/recurring-payments/{p['id']}", headers=auth("auditor"))
    assert after.json() == p and count(store) == 1


async def test_the_channel_lists_and_reads_payments(
    http: httpx.AsyncClient, auth: Auth, bea: int
) -> None:
    p = await set_up(http, auth)
    listed = await http.get(f"{API}/recurring-payments", headers=auth("channel"))
    assert listed.status_code == 200 and [r["id"] for r in listed.json()["items"]] == [p["id"]]
    for tail in ("", "/occurrences", "/preview"):
        one = await http.get(f"{API}/recurring-payments/{p['id']}{tail}", headers=auth("channel"))
        assert one.status_code == 200, tail
