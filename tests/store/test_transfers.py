"""Scheduled transfers as a service, on SQLite and PostgreSQL (no node running)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select, update

from duly.banking.customers import Customers, NewAccount, NewCustomer
from duly.banking.ledger import LedgerBank
from duly.clock import ManualClock
from duly.engine.client import EngineClient
from duly.engine.states import RunStatus
from duly.engine.store.base import RunFilter
from duly.engine.store.sql import SqlStore
from duly.operations import (
    IdempotencyConflict,
    InvalidRequest,
    NewTransfer,
    NotFound,
    ScheduledTransfers,
    StateConflict,
    operations_registry,
)
from duly.operations.outbox import outbox
from duly.operations.transfers.models import scheduled_transfers


@pytest.fixture
def client(store: SqlStore, clock: ManualClock) -> EngineClient:
    people = Customers(store.engine, clock)
    ann = people.add(NewCustomer("ann", timezone="America/New_York"))
    people.open_account(NewAccount("ACC-ANN-0001", "USD", ann.id))
    people.open_account(NewAccount("ACC-SHOP-0002", "USD", None))
    people.open_account(NewAccount("ACC-EUR-0003", "EUR", None))
    people.open_account(NewAccount("ACC-SHUT-0004", "USD", None))
    people.close_account("ACC-SHUT-0004")
    LedgerBank(store.engine, clock).fund("ACC-ANN-0001", 100_000, "USD", "fund")
    return EngineClient(store, operations_registry, clock)


def new(**kw: object) -> NewTransfer:
    base: dict[str, object] = {
        "request_key": "req-1",
        "from_account": "ACC-ANN-0001",
        "to_account": "ACC-SHOP-0002",
        "amount": "125.50",
        "currency": "USD",
        "local_date": date(2026, 3, 7),  # a Saturday
        "local_time": "10:00",
        "calendar": "US-FED",
        "memo": "rent",
    }
    base.update(kw)
    return NewTransfer(**base)  # type: ignore[arg-type]


def events(store: SqlStore) -> list[str]:
    with store.engine.connect() as conn:
        return list(conn.execute(select(outbox.c.event_type).order_by(outbox.c.id)).scalars())


def test_create_adjusts_the_date_and_enqueues_its_run(
    client: EngineClient, store: SqlStore
) -> None:
    transfers = ScheduledTransfers(client)
    row, created = transfers.create(new())
    assert created and row.status == "scheduled" and row.amount_minor == 12_550
    assert str(row.amount) == "125.50" and row.customer_id is not None
    assert row.timezone == "America/New_York"  # the customer's
    assert row.execution_date == date(2026, 3, 9)  # Saturday → Monday (following)
    assert row.execute_at == datetime(2026, 3, 9, 14, 0, tzinfo=UTC)  # 10:00 EDT (DST began 8 Mar)
    run = store.run_get(row.run_id or 0)
    assert run is not None and run.idempotency_key == row.transfer_key
    assert run.scheduled_for == row.execute_at and run.job_name == "transfers.execute"
    assert run.args == {"ref_id": row.id, "attempt": 1, "version": 1}
    assert events(store) == ["transfer.scheduled"]


def test_same_key_same_body_is_the_same_transfer_other_body_is_refused(
    client: EngineClient, store: SqlStore
) -> None:
    transfers = ScheduledTransfers(client)
    first, _ = transfers.create(new())
    again, created = transfers.create(new())
    assert not created and again.id == first.id and again.transfer_key == first.transfer_key
    with pytest.raises(IdempotencyConflict):
        transfers.create(new(amount="125.51"))
    with pytest.raises(IdempotencyConflict):
        transfers.create(new(to_account="ACC-ANN-0001", from_account="ACC-SHOP-0002"))
    assert len(transfers.find()) == 1 and len(store.run_list(RunFilter(limit=100))) == 1


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"amount": "0"}, "greater than zero"),
        ({"amount": "1.001"}, "decimals"),
        ({"amount": "ten"}, "decimal"),
        ({"currency": "XXX"}, "currency"),
        ({"to_account": "ACC-ANN-0001"}, "same"),
        ({"to_account": "ACC-NONE-9999"}, "no account"),
        ({"to_account": "ACC-SHUT-0004"}, "closed"),
        ({"to_account": "ACC-EUR-0003"}, "EUR"),
        ({"local_time": "25:00"}, "HH:MM"),
        ({"timezone": "Mars/Base"}, "timezone"),
        ({"convention": "sideways"}, "convention"),
        ({"calendar": "ATLANTIS"}, "calendar"),
        ({"local_date": date(2026, 2, 27)}, "passed"),
        ({"bank": "nope"}, "bank"),
        ({"request_key": ""}, "idempotency key"),
        ({"memo": "x" * 141}, "memo"),
    ],
)
def test_bad_requests_are_refused_and_change_nothing(
    client: EngineClient, store: SqlStore, kw: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        ScheduledTransfers(client).create(new(**kw))
    assert ScheduledTransfers(client).find() == [] and events(store) == []


def test_cancel_until_it_starts(client: EngineClient, store: SqlStore, clock: ManualClock) -> None:
    transfers = ScheduledTransfers(client)
    row, _ = transfers.create(new())
    cancelled = transfers.cancel(row.id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at == clock.now()
    run = store.run_get(row.run_id or 0)
    assert run is not None and run.status is RunStatus.CANCELLED
    with pytest.raises(StateConflict):
        transfers.cancel(row.id)
    with pytest.raises(StateConflict):
        transfers.reschedule(row.id, date(2026, 3, 20))
    with pytest.raises(NotFound):
        transfers.cancel(999)
    assert events(store) == ["transfer.scheduled", "transfer.cancelled"]


def test_a_started_transfer_can_no_longer_be_cancelled(
    client: EngineClient, store: SqlStore
) -> None:
    transfers = ScheduledTransfers(client)
    row, _ = transfers.create(new())
    with store.engine.begin() as conn:
        conn.execute(update(scheduled_transfers).values(status="executing"))
    with pytest.raises(StateConflict, match="executing"):
        transfers.cancel(row.id)


def test_reschedule_keeps_the_key_and_replaces_the_run(
    client: EngineClient, store: SqlStore
) -> None:
    transfers = ScheduledTransfers(client)
    row, _ = transfers.create(new())
    moved = transfers.reschedule(row.id, date(2026, 3, 20), "08:30")
    assert moved.transfer_key == row.transfer_key and moved.version == 2
    assert moved.execute_at == datetime(2026, 3, 20, 12, 30, tzinfo=UTC)
    old = store.run_get(row.run_id or 0)
    assert old is not None and old.status is RunStatus.CANCELLED
    new_run = store.run_get(moved.run_id or 0)
    assert new_run is not None and new_run.status is RunStatus.QUEUED
    assert new_run.idempotency_key == f"{row.transfer_key}:v2:a1"
    assert new_run.scheduled_for == moved.execute_at and new_run.args["version"] == 2
    with pytest.raises(InvalidRequest, match="passed"):
        transfers.reschedule(row.id, date(2026, 2, 1))
    assert events(store) == ["transfer.scheduled", "transfer.rescheduled"]
    replay, created = transfers.create(new())  # the original request still answers
    assert not created and replay.id == row.id and replay.version == 2


def test_find_filters(client: EngineClient, clock: ManualClock) -> None:
    transfers = ScheduledTransfers(client)
    a, _ = transfers.create(new(request_key="a"))
    b, _ = transfers.create(new(request_key="b", local_date=date(2026, 3, 10)))
    transfers.cancel(a.id)
    assert [t.id for t in transfers.find(status="scheduled")] == [b.id]
    assert [t.id for t in transfers.find(customer_id=a.customer_id)] == [a.id, b.id]
    assert [t.id for t in transfers.find(after_id=a.id)] == [b.id]
    assert transfers.get(12345) is None


def test_create_many_is_create_in_bulk(client: EngineClient, store: SqlStore) -> None:
    transfers = ScheduledTransfers(client)
    single, _ = transfers.create(new(request_key="one"))
    batch = [new(request_key=f"bulk-{i}", amount=f"{i + 1}.00") for i in range(3)]
    out = transfers.create_many([new(request_key="one"), *batch])
    assert out[0] == (single.id, False)  # a replay of an earlier create
    assert [created for _, created in out[1:]] == [True, True, True]
    for (ref, _), req in zip(out[1:], batch, strict=True):
        row = transfers.get(ref)
        assert row is not None and row.request_key == req.request_key
        assert row.execution_date == single.execution_date and row.execute_at == single.execute_at
        run = store.run_get(row.run_id or 0)
        assert run is not None and run.idempotency_key == row.transfer_key
        assert run.args == {"ref_id": row.id, "attempt": 1, "version": 1}
        assert run.scheduled_for == row.execute_at
    assert events(store).count("transfer.scheduled") == 4
    assert transfers.create_many(batch) == [(ref, False) for ref, _ in out[1:]]  # idempotent


def test_create_many_writes_nothing_when_one_request_is_wrong(
    client: EngineClient, store: SqlStore
) -> None:
    transfers = ScheduledTransfers(client)
    good = new(request_key="good")
    with pytest.raises(InvalidRequest, match="request 1"):
        transfers.create_many([good, new(request_key="bad", to_account="ACC-SHUT-0004")])
    with pytest.raises(InvalidRequest, match="twice"):
        transfers.create_many([good, good])
    transfers.create(new(request_key="taken"))
    with pytest.raises(IdempotencyConflict):
        transfers.create_many([good, new(request_key="taken", amount="1.00")])
    assert [r.request_key for r in transfers.find()] == ["taken"]
    assert len(store.run_list(RunFilter(limit=10))) == 1
