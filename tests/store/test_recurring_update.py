"""Changing a recurring payment's terms (``RecurringPayments.update``), refusing to create
one whose first occurrence has passed (``catch_up=False``) or that pays from or to a closed
account, occurrences by page, and customers' accounts by page — on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select, update

from duly.banking.customers import Customers, NewAccount, NewCustomer
from duly.clock import ManualClock
from duly.engine.client import EngineClient
from duly.engine.store.sql import SqlStore
from duly.operations import (
    InvalidRequest,
    NewRecurringPayment,
    NotFound,
    RecurringPayments,
    StateConflict,
    operations_registry,
)
from duly.operations.outbox import outbox
from duly.operations.recurring.models import PaymentChange, recurring_occurrences


@pytest.fixture
def client(store: SqlStore, clock: ManualClock) -> EngineClient:
    people = Customers(store.engine, clock)
    bea = people.add(NewCustomer("bea", timezone="Europe/London"))
    people.open_account(NewAccount("ACC-BEA-0001", "GBP", bea.id))
    people.open_account(NewAccount("ACC-LANDLORD-0002", "GBP", None))
    return EngineClient(store, operations_registry, clock)


def new(**kw: object) -> NewRecurringPayment:
    base: dict[str, object] = {
        "request_key": "rent",
        "from_account": "ACC-BEA-0001",
        "to_account": "ACC-LANDLORD-0002",
        "amount": "950.00",
        "currency": "GBP",
        "frequency": "monthly",
        "start_date": date(2026, 3, 31),  # 09:00 BST = 08:00 UTC
        "time_of_day": "09:00",
        "calendar": "GB-BACS",
    }
    base.update(kw)
    return NewRecurringPayment(**base)  # type: ignore[arg-type]


def events(store: SqlStore) -> list[str]:
    with store.engine.connect() as conn:
        return list(conn.execute(select(outbox.c.event_type).order_by(outbox.c.id)).scalars())


def run_all(store: SqlStore, payment_id: int) -> None:
    """Stand-in for the executor: every occurrence under way is paid."""
    o = recurring_occurrences
    with store.engine.begin() as conn:
        conn.execute(
            update(o)
            .where(o.c.payment_id == payment_id, o.c.status.in_(("scheduled", "retrying")))
            .values(status="executed", next_attempt_at=None)
        )


def test_new_terms_apply_to_the_occurrences_not_made_yet(
    client: EngineClient, clock: ManualClock, store: SqlStore
) -> None:
    payments = RecurringPayments(client, horizon=timedelta(hours=1))
    pay, _ = payments.create(new())
    changed = payments.update(
        pay.id, PaymentChange(amount="975.50", memo="new rent", time_of_day="10:30")
    )
    assert changed.amount_minor == 97_550 and changed.memo == "new rent"
    assert changed.time_of_day == "10:30" and changed.version == pay.version + 1
    assert changed.next_execute_at == datetime(2026, 3, 31, 9, 30, tzinfo=UTC)
    assert events(store)[-1] == "recurring_payment.updated"
    clock.set(datetime(2026, 3, 31, 9, 0, tzinfo=UTC))
    payments.materialize_due()
    (occ,) = payments.occurrences(pay.id)
    assert occ.execute_at == datetime(2026, 3, 31, 9, 30, tzinfo=UTC) and occ.run_id is not None
    run = store.run_get(occ.run_id)
    assert run is not None and run.scheduled_for == occ.execute_at


def test_an_unchanged_term_is_no_new_version(client: EngineClient, store: SqlStore) -> None:
    payments = RecurringPayments(client)
    pay, _ = payments.create(new())
    before = events(store)
    same = payments.update(pay.id, PaymentChange(amount="950", time_of_day="09:00"))
    assert same.version == pay.version and events(store) == before


def test_a_change_waits_while_an_occurrence_is_under_way(
    client: EngineClient, clock: ManualClock, store: SqlStore
) -> None:
    payments = RecurringPayments(client, horizon=timedelta(hours=1))
    pay, _ = payments.create(new())
    clock.set(datetime(2026, 3, 31, 7, 30, tzinfo=UTC))
    payments.materialize_due()
    with pytest.raises(StateConflict, match="2026-03-31 is scheduled"):
        payments.update(pay.id, PaymentChange(amount="1.00"))
    after = payments.get(pay.id)
    assert after is not None and after.amount_minor == 95_000 and after.version == pay.version
    run_all(store, pay.id)
    assert payments.update(pay.id, PaymentChange(amount="1.00")).amount_minor == 100


def test_the_end_may_not_come_before_occurrences_already_made(
    client: EngineClient, store: SqlStore
) -> None:
    payments = RecurringPayments(client, horizon=timedelta(days=40))
    pay, _ = payments.create(new(start_date=date(2026, 1, 31)))  # Jan, Feb, Mar made
    run_all(store, pay.id)
    with pytest.raises(InvalidRequest, match="3 occurrence"):
        payments.update(pay.id, PaymentChange(count=2))
    with pytest.raises(InvalidRequest, match="3 occurrence"):
        payments.update(pay.id, PaymentChange(end_date=date(2026, 3, 30)))
    with pytest.raises(InvalidRequest, match="before the start"):
        payments.update(pay.id, PaymentChange(end_date=date(2025, 1, 1)))
    with pytest.raises(InvalidRequest, match="count"):
        payments.update(pay.id, PaymentChange(count=0))
    done = payments.update(pay.id, PaymentChange(count=3))
    assert done.status == "completed" and done.next_execute_at is None and done.count == 3
    with pytest.raises(StateConflict, match="completed"):
        payments.update(pay.id, PaymentChange(count=4))


def test_an_end_can_be_set_and_cleared(client: EngineClient) -> None:
    payments = RecurringPayments(client)
    pay, _ = payments.create(new(count=2))
    unending = payments.update(pay.id, PaymentChange(count=None, end_date=date(2026, 12, 31)))
    assert unending.count is None and unending.end_date == date(2026, 12, 31)
    assert len(payments.preview(pay.id, 20)) == 10  # March to December
    cleared = payments.update(pay.id, PaymentChange(end_date=None))
    assert cleared.end_date is None and len(payments.preview(pay.id, 20)) == 20


def test_a_payment_with_no_occurrence_left_is_refused(client: EngineClient) -> None:
    payments = RecurringPayments(client)
    pay, _ = payments.create(new(start_date=date(2026, 3, 2), day_of_month=31))
    with pytest.raises(InvalidRequest, match="no occurrence"):
        payments.update(pay.id, PaymentChange(end_date=date(2026, 3, 15)))  # the first is 31 Mar


def test_the_next_occurrence_may_not_move_into_the_past(
    client: EngineClient, clock: ManualClock
) -> None:
    payments = RecurringPayments(client, horizon=timedelta(minutes=10))
    pay, _ = payments.create(new())
    clock.set(datetime(2026, 3, 31, 7, 30, tzinfo=UTC))  # 08:30 BST, the payment is at 09:00
    with pytest.raises(InvalidRequest, match="has passed"):
        payments.update(pay.id, PaymentChange(time_of_day="08:00"))
    later = payments.update(pay.id, PaymentChange(time_of_day="10:00"))
    assert later.next_execute_at == datetime(2026, 3, 31, 9, 0, tzinfo=UTC)
    # paused, the occurrence that has passed is skipped, as any falling due while paused
    payments.pause(pay.id)
    payments.update(pay.id, PaymentChange(time_of_day="08:00"))
    resumed = payments.resume(pay.id)
    assert [(o.unadjusted_date, o.status) for o in payments.occurrences(pay.id)] == [
        (date(2026, 3, 31), "skipped")
    ]
    assert resumed.next_execute_at == datetime(2026, 4, 30, 7, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (PaymentChange(amount="0.00"), "greater than zero"),
        (PaymentChange(amount="1.005"), "decimals"),
        (PaymentChange(amount="ten"), "decimal"),
        (PaymentChange(time_of_day="25:00"), "HH:MM"),
        (PaymentChange(memo="x" * 141), "140"),
    ],
)
def test_bad_terms_are_refused(
    client: EngineClient, store: SqlStore, change: PaymentChange, message: str
) -> None:
    payments = RecurringPayments(client)
    pay, _ = payments.create(new())
    before = events(store)
    with pytest.raises(InvalidRequest, match=message):
        payments.update(pay.id, change)
    assert payments.get(pay.id) == pay and events(store) == before


def test_unknown_and_cancelled_payments(client: EngineClient) -> None:
    payments = RecurringPayments(client)
    with pytest.raises(NotFound):
        payments.update(999, PaymentChange(amount="1.00"))
    pay, _ = payments.create(new())
    payments.cancel(pay.id)
    with pytest.raises(StateConflict, match="cancelled"):
        payments.update(pay.id, PaymentChange(amount="1.00"))


def test_without_catch_up_a_passed_first_occurrence_is_refused(client: EngineClient) -> None:
    payments = RecurringPayments(client)
    with pytest.raises(InvalidRequest, match="has passed"):
        payments.create(new(start_date=date(2026, 2, 27)), catch_up=False)
    assert payments.find() == []
    pay, created = payments.create(new(start_date=date(2026, 3, 2)), catch_up=False)  # 09:00
    assert created and pay.status == "active"


def test_a_closed_account_is_refused(
    client: EngineClient, store: SqlStore, clock: ManualClock
) -> None:
    Customers(store.engine, clock).close_account("ACC-LANDLORD-0002")
    with pytest.raises(InvalidRequest, match="ending 0002 is closed"):
        RecurringPayments(client).create(new())


def test_occurrences_by_page(client: EngineClient) -> None:
    payments = RecurringPayments(client, horizon=timedelta(days=200))
    pay, _ = payments.create(new(start_date=date(2026, 1, 31)))
    first = payments.occurrences(pay.id, limit=3)
    rest = payments.occurrences(pay.id, after_seq=first[-1].seq, limit=100)
    assert [o.seq for o in first + rest] == list(range(8))
    assert [o.seq for o in payments.occurrences(pay.id)] == list(range(8))


def test_customers_accounts_by_page(store: SqlStore, clock: ManualClock) -> None:
    people = Customers(store.engine, clock)
    ann = people.add(NewCustomer("ann"))
    bob = people.add(NewCustomer("bob"))
    for number, owner in [("A-3", ann.id), ("A-1", ann.id), ("B-2", bob.id), ("X-0", None)]:
        people.open_account(NewAccount(number, "EUR", owner))
    assert [a.id for a in people.find_accounts()] == ["A-1", "A-3", "B-2"]  # not the bank's own
    assert [a.id for a in people.find_accounts(after_id="A-1", limit=1)] == ["A-3"]
    assert [a.id for a in people.find_accounts(customer_id=bob.id)] == ["B-2"]
