"""A customer's execution history after the engine ran transfers and a recurring payment."""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from duly.banking.customers import Customers, NewAccount, NewCustomer
from duly.banking.ledger import LedgerBank
from duly.clock import ManualClock
from duly.engine.store.sql import SqlStore
from duly.operations import (
    FailurePolicy,
    InvalidRequest,
    NewRecurringPayment,
    NewTransfer,
    NotFound,
    RecurringPayments,
    ScheduledTransfers,
    operations_registry,
    sweep_schedule,
)
from duly.operations.history.models import HistoryFilter
from duly.operations.history.service import history
from duly.testing import EngineHarness

sys.path.insert(0, str(Path(__file__).parent))
from test_money_engine import advance


@pytest.fixture
async def ran(store: SqlStore, clock: ManualClock) -> int:
    """Dee's history: 3 weekly payments (one failed twice), one executed, one cancelled transfer."""
    people = Customers(store.engine, clock)
    dee = people.add(NewCustomer("dee", timezone="Europe/Berlin"))
    people.open_account(NewAccount("DE-DEE-0001", "EUR", dee.id))
    people.open_account(NewAccount("DE-GYM-0002", "EUR", None))
    ledger = LedgerBank(store.engine, clock)
    ledger.fund("DE-DEE-0001", 15_000, "EUR", "fund")
    policy = FailurePolicy(
        max_attempts=2, retry_every=timedelta(hours=6), retry_window=timedelta(hours=12)
    )
    async with EngineHarness(store, operations_registry, clock) as h:
        h.client.upsert_schedule(sweep_schedule("every:3h", horizon=timedelta(hours=7)))
        payments = RecurringPayments(h.client, horizon=timedelta(hours=7))
        payments.create(NewRecurringPayment(
            request_key="gym", from_account="DE-DEE-0001", to_account="DE-GYM-0002", amount="40.00",
            currency="EUR", frequency="weekly", start_date=date(2026, 3, 3), time_of_day="07:00",
            calendar="TARGET", memo="gym", policy=policy,
        ))  # fmt: skip
        transfers = ScheduledTransfers(h.client)
        kw = {"from_account": "DE-DEE-0001", "to_account": "DE-GYM-0002", "currency": "EUR",
              "local_time": "12:00", "calendar": "TARGET"}  # fmt: skip
        transfers.create(NewTransfer(request_key="big", amount="60.00", local_date=date(2026, 3, 5),
                                     memo="annual fee", **kw))  # fmt: skip
        gone, _ = transfers.create(NewTransfer(request_key="gone", amount="1.00",
                                               local_date=date(2026, 3, 20), **kw))  # fmt: skip
        transfers.cancel(gone.id)
        await advance(h, timedelta(days=16))
    return dee.id


async def test_history_lists_everything_newest_first_with_reasons(
    store: SqlStore, ran: int
) -> None:
    page = history(store.engine, HistoryFilter(customer_id=ran))
    got = [(e.kind, e.occurrence, e.status) for e in page.entries]
    assert got == [
        ("transfer", "2026-03-20", "cancelled"),
        ("recurring", "2026-03-17", "failed"),
        ("recurring", "2026-03-10", "executed"),
        ("transfer", "2026-03-05", "executed"),
        ("recurring", "2026-03-03", "executed"),
    ]
    failed = page.entries[1]
    assert failed.failure_code == "INSUFFICIENT_FUNDS" and failed.suggested_action
    assert failed.failure_reason == "The account did not have enough available funds."
    assert failed.attempts == 2
    assert failed.started_at is not None and failed.finished_at is not None
    assert failed.finished_at - failed.started_at >= timedelta(hours=6)
    assert failed.amount == Decimal("40.00") and failed.currency == "EUR"
    assert failed.from_account == "****0001" and failed.description == "gym"
    assert failed.counterparty == "****0002"
    fee = page.entries[3]
    berlin = datetime(2026, 3, 5, 11, 0, tzinfo=UTC).astimezone(fee.scheduled_at.tzinfo)
    assert fee.finished_at == fee.scheduled_at == berlin
    assert fee.scheduled_at.isoformat() == "2026-03-05T12:00:00+01:00"  # Dee's zone
    assert fee.failure_code is None and fee.attempts == 1 and fee.run_id is not None
    assert page.next_cursor is None


async def test_history_pages_and_filters(store: SqlStore, ran: int) -> None:
    seen = []
    cursor = None
    while True:
        page = history(store.engine, HistoryFilter(customer_id=ran), limit=2, cursor=cursor)
        seen += [e.id for e in page.entries]
        cursor = page.next_cursor
        if cursor is None:
            break
    full = history(store.engine, HistoryFilter(customer_id=ran))
    assert seen == [e.id for e in full.entries]
    only_failed = history(store.engine, HistoryFilter(customer_id=ran, statuses=("failed",)))
    assert [e.occurrence for e in only_failed.entries] == ["2026-03-17"]
    recurring = history(store.engine, HistoryFilter(customer_id=ran, kinds=("recurring",)))
    assert {e.kind for e in recurring.entries} == {"recurring"} and len(recurring.entries) == 3
    window = history(store.engine, HistoryFilter(
        customer_id=ran, since=datetime(2026, 3, 4, tzinfo=UTC),
        until=datetime(2026, 3, 11, tzinfo=UTC),
    ))  # fmt: skip
    assert [e.occurrence for e in window.entries] == ["2026-03-10", "2026-03-05"]
    with pytest.raises(NotFound):
        history(store.engine, HistoryFilter(customer_id=ran + 1))
    with pytest.raises(InvalidRequest):
        history(store.engine, HistoryFilter(customer_id=ran), cursor="garbage")
    with pytest.raises(InvalidRequest):
        history(store.engine, HistoryFilter(customer_id=ran), limit=0)
