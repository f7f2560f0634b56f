"""ACH returns of executed transfers: reinitiation within Nacha's limits (checklist 21).

A real node (:class:`~duly.testing.EngineHarness`) on the manual clock executes the
transfers and their reinitiations on the built-in ledger, over SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, date, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from duly.banking.customers import Customers, NewAccount, NewCustomer
from duly.banking.ledger import LedgerBank
from duly.clock import ManualClock
from duly.engine.store.sql import SqlStore
from duly.operations import NewTransfer, ScheduledTransfers, operations_registry
from duly.operations.errors import IdempotencyConflict, InvalidRequest, NotFound
from duly.operations.outbox import outbox
from duly.operations.transfers.returns import AchReturns
from duly.testing import EngineHarness

FUNDS = 1_000_000


@pytest.fixture
def ledger(store: SqlStore, clock: ManualClock) -> LedgerBank:
    people = Customers(store.engine, clock)
    payer = people.add(NewCustomer("payer", timezone="America/New_York"))
    people.open_account(NewAccount("ACH-PAYER-0001", "USD", payer.id))
    people.open_account(NewAccount("ACH-BILLER-0002", "USD", None))
    bank = LedgerBank(store.engine, clock)
    bank.fund("ACH-PAYER-0001", FUNDS, "USD", "fund-payer")
    return bank


def debit(key: str, day: date = date(2026, 3, 4)) -> NewTransfer:
    return NewTransfer(
        request_key=key, from_account="ACH-PAYER-0001", to_account="ACH-BILLER-0002",
        amount="100.00", currency="USD", local_date=day, local_time="10:00",
        timezone="America/New_York", calendar="US-FED",
    )  # fmt: skip


async def execute_due(h: EngineHarness, days: int = 3) -> None:
    await h.advance(timedelta(days=days))
    await h.settle()


def events(store: SqlStore, event_type: str) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(outbox.c.payload).where(outbox.c.event_type == event_type).order_by(outbox.c.id)
        )
        return [dict(r.payload) for r in rows]


async def test_r01_is_reinitiated_twice_then_refused(
    store: SqlStore, clock: ManualClock, ledger: LedgerBank
) -> None:
    async with EngineHarness(store, operations_registry, clock) as h:
        transfers = ScheduledTransfers(h.client)
        returns = AchReturns(transfers)
        first, _ = transfers.create(debit("rent"))
        await execute_due(h)
        chain = [first.id]
        for presentment in (2, 3):
            decision = returns.record(chain[-1], "R01")
            assert decision.reinitiated and decision.reinitiation_id is not None
            assert decision.original_id == first.id
            assert decision.reason == f"R01: presentment {presentment} of at most 3"
            again = transfers.get(decision.reinitiation_id)
            assert again is not None and again.status == "scheduled"
            assert (again.amount_minor, again.from_account) == (10_000, "ACH-PAYER-0001")
            assert again.execute_at > clock.now()  # the next business day, at 10:00 local
            assert again.execute_at.astimezone(UTC).hour in (14, 15)
            chain.append(decision.reinitiation_id)
            await execute_due(h, days=4)
            assert transfers.get(chain[-1]).status == "executed"  # type: ignore[union-attr]
        last = returns.record(chain[-1], "R01")
    assert not last.reinitiated and last.reinitiation_id is None
    assert last.reason == "R01: already reinitiated 2 times (at most 2)"
    # each presentment was booked back: the payer holds its funds again
    assert ledger.get_balance("ACH-PAYER-0001").posted_minor == FUNDS
    assert ledger.get_balance("ACH-BILLER-0002").posted_minor == 0
    assert ledger.check().ok
    assert [r["decision"] for r in returns.chain(chain[1])] == [
        "reinitiated", "reinitiated", "refused"
    ]  # fmt: skip
    (note,) = events(store, "customer.notification")
    assert note["reason_code"] == "ACH_R01" and note["reference"] == transfers.get(chain[-1]).transfer_key  # type: ignore[union-attr]
    assert len(events(store, "transfer.returned")) == 3


async def test_codes_that_are_never_or_conditionally_reinitiated(
    store: SqlStore, clock: ManualClock, ledger: LedgerBank
) -> None:
    async with EngineHarness(store, operations_registry, clock) as h:
        transfers = ScheduledTransfers(h.client)
        returns = AchReturns(transfers)
        rows = [transfers.create(debit(k))[0] for k in ("r07", "r08", "r08-auth", "r02", "late")]
        await execute_due(h)
        revoked = returns.record(rows[0].id, "r07")
        stopped = returns.record(rows[1].id, "R08")
        authorised = returns.record(rows[2].id, "R08", new_authorization=True)
        closed = returns.record(rows[3].id, "R02")
        settled = transfers.get(rows[4].id).executed_at  # type: ignore[union-attr]
        assert settled is not None
        late = returns.record(rows[4].id, "R01", returned_at=settled + timedelta(days=181))
    assert (revoked.reinitiated, revoked.reason) == (False, "R07: authorisation revoked: never reinitiated")
    assert not stopped.reinitiated and "new authorisation" in stopped.reason
    assert authorised.reinitiated and authorised.reinitiation_id is not None
    assert not closed.reinitiated and "cause is fixed" in closed.reason
    assert not late.reinitiated and "180 days" in late.reason
    assert ledger.check().ok


async def test_a_report_is_recorded_once_and_bad_ones_change_nothing(
    store: SqlStore, clock: ManualClock, ledger: LedgerBank
) -> None:
    async with EngineHarness(store, operations_registry, clock) as h:
        transfers = ScheduledTransfers(h.client)
        returns = AchReturns(transfers)
        done, _ = transfers.create(debit("done"))
        waiting, _ = transfers.create(debit("waiting", date(2026, 3, 20)))
        await execute_due(h)
        first = returns.record(done.id, "R01")
        assert returns.record(done.id, "R01") == first  # the same report: same decision
        with pytest.raises(IdempotencyConflict):
            returns.record(done.id, "R09")
        with pytest.raises(InvalidRequest, match="only an executed transfer"):
            returns.record(waiting.id, "R01")
        with pytest.raises(InvalidRequest, match="R followed by two digits"):
            returns.record(done.id, "X1")
        with pytest.raises(NotFound):
            returns.record(10_000, "R01")
    assert len(returns.chain(done.id)) == 1
    assert ledger.get_balance("ACH-PAYER-0001").posted_minor == FUNDS  # one reversal only
    assert ledger.check().ok

