"""Recurring payments as a service, on SQLite and PostgreSQL (no node running)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from duly.banking.customers import Customers, NewAccount, NewCustomer
from duly.clock import ManualClock
from duly.engine.client import EngineClient
from duly.engine.states import RunStatus
from duly.engine.store.sql import SqlStore
from duly.operations import (
    IdempotencyConflict,
    InvalidRequest,
    NewRecurringPayment,
    RecurringPayments,
    StateConflict,
    operations_registry,
)
from duly.operations.outbox import outbox

T0 = datetime(2026, 3, 2, tzinfo=UTC)


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
        "start_date": date(2026, 1, 31),
        "time_of_day": "09:00",
        "calendar": "GB-BACS",
    }
    base.update(kw)
    return NewRecurringPayment(**base)  # type: ignore[arg-type]


def test_create_materialises_what_is_due_within_the_horizon(
    client: EngineClient, clock: ManualClock, store: SqlStore
) -> None:
    payments = RecurringPayments(client, horizon=timedelta(days=40))
    pay, created = payments.create(new())
    assert created and pay.status == "active" and pay.timezone == "Europe/London"
    occ = payments.occurrences(pay.id)
    # Jan 31 and Feb 28 are past (the payment starts in the past: they run now, as catch-up),
    # Mar 31 is within 40 days; Apr 30 is not yet.
    assert [o.unadjusted_date for o in occ] == [
        date(2026, 1, 31),
        date(2026, 2, 28),
        date(2026, 3, 31),
    ]
    assert [o.execution_date for o in occ] == [
        date(2026, 2, 2),
        date(2026, 3, 2),
        date(2026, 3, 31),
    ]
    assert occ[2].execute_at == datetime(2026, 3, 31, 8, 0, tzinfo=UTC)  # 09:00 BST
    assert next(o.transfer_key for o in occ) == f"rp-{pay.id}-20260131"
    runs = [store.run_get(o.run_id or 0) for o in occ]
    assert all(r is not None and r.status is RunStatus.QUEUED for r in runs)
    assert [r.idempotency_key for r in runs if r] == [o.transfer_key for o in occ]
    after = payments.get(pay.id)
    assert after is not None and after.next_index == 3
    assert after.next_execute_at == datetime(2026, 4, 30, 8, 0, tzinfo=UTC)
    assert payments.materialize(pay.id) == 0  # nothing new, nothing twice


def test_13_downtime_catch_up_creates_each_missed_occurrence_once(
    client: EngineClient, clock: ManualClock
) -> None:
    payments = RecurringPayments(client, horizon=timedelta(hours=1))
    pay, _ = payments.create(new(start_date=date(2026, 3, 31)))
    assert payments.occurrences(pay.id) == []
    clock.advance(timedelta(days=130))  # down until 10 July
    assert payments.materialize_due() == 4
    assert payments.materialize_due() == 0
    dates = [o.unadjusted_date for o in payments.occurrences(pay.id)]
    assert dates == [date(2026, 3, 31), date(2026, 4, 30), date(2026, 5, 31), date(2026, 6, 30)]


def test_idempotent_creation(client: EngineClient) -> None:
    payments = RecurringPayments(client)
    first, _ = payments.create(new())
    again, created = payments.create(new())
    assert not created and again.id == first.id
    with pytest.raises(IdempotencyConflict):
        payments.create(new(amount="951.00"))


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"frequency": "fortnightly"}, "frequency"),
        ({"day_of_month": 0}, "day of month"),
        ({"rrule": "FREQ=HOURLY", "frequency": "rrule"}, "FREQ"),
        ({"amount": "-1"}, "greater than zero"),
        ({"on_final_failure": "explode"}, "on_final_failure"),
        ({"end_date": date(2025, 1, 1)}, "end date"),
        ({"to_account": "ACC-GONE-0000"}, "no account"),
        ({"currency": "USD"}, "GBP"),
    ],
)
def test_bad_payments_are_refused(
    client: EngineClient, kw: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        RecurringPayments(client).create(new(**kw))


def test_pause_skips_what_falls_due_and_resume_pays_what_follows(
    client: EngineClient, clock: ManualClock, store: SqlStore
) -> None:
    payments = RecurringPayments(client, horizon=timedelta(hours=1))
    pay, _ = payments.create(new(start_date=date(2026, 3, 31)))
    assert payments.pause(pay.id).status == "paused"
    with pytest.raises(StateConflict):
        payments.pause(pay.id)
    clock.set(datetime(2026, 5, 15, tzinfo=UTC))
    payments.materialize_due()
    resumed = payments.resume(pay.id)
    assert resumed.status == "active"
    clock.set(datetime(2026, 6, 1, 8, 30, tzinfo=UTC))
    payments.materialize_due()
    occ = payments.occurrences(pay.id)
    assert [(o.unadjusted_date, o.status) for o in occ] == [
        (date(2026, 3, 31), "skipped"),
        (date(2026, 4, 30), "skipped"),
        (date(2026, 5, 31), "scheduled"),  # a Sunday: paid Mon 1 Jun 09:00 BST, within the hour
    ]
    assert occ[-1].execution_date == date(2026, 6, 1)
    assert all(o.run_id is None for o in occ[:2]) and occ[-1].run_id is not None
    with pytest.raises(StateConflict):
        payments.resume(pay.id)


def test_cancel_cancels_pending_occurrences_and_their_runs(
    client: EngineClient, store: SqlStore
) -> None:
    payments = RecurringPayments(client, horizon=timedelta(days=70))
    pay, _ = payments.create(new(start_date=date(2026, 3, 31)))
    occ = payments.occurrences(pay.id)
    assert len(occ) == 2
    cancelled = payments.cancel(pay.id)
    assert cancelled.status == "cancelled" and cancelled.next_execute_at is None
    assert {o.status for o in payments.occurrences(pay.id)} == {"cancelled"}
    for o in occ:
        run = store.run_get(o.run_id or 0)
        assert run is not None and run.status is RunStatus.CANCELLED
    assert payments.materialize_due() == 0 and payments.preview(pay.id) == []
    with pytest.raises(StateConflict):
        payments.cancel(pay.id)
    with store.engine.connect() as conn:
        kinds = list(conn.execute(select(outbox.c.event_type).order_by(outbox.c.id)).scalars())
    assert kinds == [
        "recurring_payment.created",
        "occurrence.scheduled",
        "occurrence.scheduled",
        "occurrence.cancelled",
        "occurrence.cancelled",
        "recurring_payment.cancelled",
    ]


def test_a_counted_payment_completes(client: EngineClient, clock: ManualClock) -> None:
    payments = RecurringPayments(client, horizon=timedelta(days=400))
    pay, _ = payments.create(new(frequency="quarterly", start_date=date(2026, 3, 31), count=3))
    done = payments.get(pay.id)
    assert done is not None and done.status == "completed" and done.next_execute_at is None
    assert [o.unadjusted_date for o in payments.occurrences(pay.id)] == [
        date(2026, 3, 31), date(2026, 6, 30), date(2026, 9, 30)
    ]  # fmt: skip


def test_preview(client: EngineClient) -> None:
    payments = RecurringPayments(client, horizon=timedelta(hours=1))
    pay, _ = payments.create(new(start_date=date(2026, 5, 31), convention="modified_following"))
    got = payments.preview(pay.id, 4)
    assert [(o.unadjusted_date, o.execution_date) for o in got] == [
        (date(2026, 5, 31), date(2026, 5, 29)),  # Sunday, month end: modified following → Friday
        (date(2026, 6, 30), date(2026, 6, 30)),
        (date(2026, 7, 31), date(2026, 7, 31)),
        (date(2026, 8, 31), date(2026, 8, 28)),  # UK summer bank holiday, then month end
    ]
