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
    got = [(e.kind, e.scheduled_date, e.status) for e in page.entries]
    assert got == [
        ("transfer", date(2026, 3, 20), "cancelled"),
        ("recurring", date(2026, 3, 17), "failed"),
        ("recurring", date(2026, 3, 10), "executed"),
        ("transfer", date(2026, 3, 5), "executed"),
        ("recurring", date(2026, 3, 3), "executed"),
    ]
    failed = page.entries[1]
    assert failed.failure_code == "INSUFFICIENT_FUNDS" and failed.suggested_action
    assert failed.failure_description == "The account did not have enough available funds."
    assert [(a.attempt, a.status) for a in failed.attempts] == [(1, "failed"), (2, "failed")]
    assert failed.attempts[1].started_at - failed.attempts[0].started_at == timedelta(hours=6)
    assert failed.amount == Decimal("40.00") and failed.currency == "EUR"
    assert failed.from_account == "****0001" and failed.description == "gym"
    fee = page.entries[3]
    assert fee.executed_at == fee.scheduled_for == datetime(2026, 3, 5, 11, 0, tzinfo=UTC)
    assert fee.failure_code is None and [a.status for a in fee.attempts] == ["succeeded"]
    assert page.next_cursor is None


async def test_history_pages_and_filters(store: SqlStore, ran: int) -> None:
    seen = []
    cursor = None
    while True:
        page = history(store.engine, HistoryFilter(customer_id=ran), limit=2, cursor=cursor)
        seen += [(e.kind, e.id) for e in page.entries]
        cursor = page.next_cursor
        if cursor is None:
            break
    full = history(store.engine, HistoryFilter(customer_id=ran))
    assert seen == [(e.kind, e.id) for e in full.entries]
    only_failed = history(store.engine, HistoryFilter(customer_id=ran, statuses=("failed",)))
    assert [e.scheduled_date for e in only_failed.entries] == [date(2026, 3, 17)]
    recurring = history(store.engine, HistoryFilter(customer_id=ran, kinds=("recurring",)))
    assert {e.kind for e in recurring.entries} == {"recurring"} and len(recurring.entries) == 3
    window = history(store.engine, HistoryFilter(
        customer_id=ran, scheduled_from=datetime(2026, 3, 4, tzinfo=UTC),
        scheduled_until=datetime(2026, 3, 11, tzinfo=UTC),
    ))  # fmt: skip
    assert [e.scheduled_date for e in window.entries] == [date(2026, 3, 10), date(2026, 3, 5)]
    assert history(store.engine, HistoryFilter(customer_id=ran + 1)).entries == ()
    with pytest.raises(InvalidRequest):
        history(store.engine, HistoryFilter(customer_id=ran), cursor="garbage")
    with pytest.raises(InvalidRequest):
        history(store.engine, HistoryFilter(customer_id=ran), limit=0)
