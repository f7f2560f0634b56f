"""Money movement driven by the engine on a manual clock (finance-rules.md checklist 6–13, 20–22).

Each test runs a real node (:class:`~duly.testing.EngineHarness`) over a real store
(SQLite file, then PostgreSQL) with the operations jobs, the built-in ledger and — where
it says so — a real ``bank-sim`` on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from duly.banking.customers import Customers, NewAccount, NewCustomer
from duly.banking.http import HttpBank
from duly.banking.ledger import LedgerBank
from duly.banking.schema import ledger_transfers
from duly.banking.simulator import BankSimulator
from duly.clock import ManualClock
from duly.engine.states import RunStatus
from duly.engine.store.base import ClaimParams, RunFilter
from duly.engine.store.sql import SqlStore
from duly.operations import (
    FailurePolicy,
    NewRecurringPayment,
    NewTransfer,
    RecurringPayments,
    ScheduledTransfers,
    operations_registry,
    sweep_schedule,
)
from duly.operations.banks import default_banks
from duly.operations.execution.models import payment_attempts
from duly.operations.outbox import outbox
from duly.testing import EngineHarness

T0 = datetime(2026, 3, 2, tzinfo=UTC)  # Monday


@pytest.fixture
def ledger(store: SqlStore, clock: ManualClock) -> LedgerBank:
    people = Customers(store.engine, clock)
    cat = people.add(NewCustomer("cat", timezone="America/New_York"))
    people.open_account(NewAccount("ACC-CAT-0001", "USD", cat.id))
    people.open_account(NewAccount("ACC-SHOP-0002", "USD", None))
    people.open_account(NewAccount("ACC-SHUT-0003", "USD", None))
    bank = LedgerBank(store.engine, clock)
    bank.fund("ACC-CAT-0001", 1_000_000, "USD", "fund-cat")
    return bank


@pytest.fixture
def sim() -> Iterator[BankSimulator]:
    with BankSimulator(seed=3, hang_seconds=1.0) as running:
        running.add_account("SIM-CAT-0001", "USD", 1_000_000)
        running.add_account("SIM-SHOP-0002", "USD", 0)
        bank = HttpBank(running.url, timeout=0.3, name="sim")
        default_banks.register("sim", bank)
        yield running
        default_banks.unregister("sim")
        bank.close()


async def advance(h: EngineHarness, delta: timedelta) -> None:
    """``h.advance`` with every settle done twice.

    ``EngineHarness.settle`` may count a worker pass that began before the clock moved
    (reported to the engine's owner); a second settle waits for a pass begun after it.
    """
    until = h.clock.now() + delta
    await settle(h)
    while True:
        step = await asyncio.to_thread(h.next_instant)
        if step is None or step > until:
            break
        h.clock.set(step)
        await settle(h)
    if h.clock.now() < until:
        h.clock.set(until)
    await settle(h)


async def settle(h: EngineHarness) -> None:
    await h.settle()
    await h.settle()


def transfer(**kw: Any) -> NewTransfer:
    base: dict[str, Any] = {
        "request_key": "t-1",
        "from_account": "ACC-CAT-0001",
        "to_account": "ACC-SHOP-0002",
        "amount": "250.00",
        "currency": "USD",
        "local_date": date(2026, 3, 4),
        "local_time": "10:00",
        "calendar": "US-FED",
    }
    base.update(kw)
    return NewTransfer(**base)


def events(store: SqlStore, **where: Any) -> list[tuple[str, str]]:
    conds = [getattr(outbox.c, k) == v for k, v in where.items()]
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(outbox.c.event_type, outbox.c.aggregate_id).where(*conds).order_by(outbox.c.id)
        )
        return [(r.event_type, r.aggregate_id) for r in rows]


def ledger_count(store: SqlStore, key_prefix: str = "") -> int:
    with store.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).where(ledger_transfers.c.id.like(f"{key_prefix}%"))
            ).scalar_one()
        )


def attempts_of(store: SqlStore, kind: str, ref_id: int) -> list[tuple[int, str, str | None]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(
                payment_attempts.c.attempt, payment_attempts.c.status, payment_attempts.c.error_code
            )
            .where(payment_attempts.c.kind == kind, payment_attempts.c.ref_id == ref_id)
            .order_by(payment_attempts.c.attempt)
        )
        return [(r.attempt, r.status, r.error_code) for r in rows]


# -- scheduled transfers ------------------------------------------------------------------


async def test_a_scheduled_transfer_executes_once_at_its_local_time(
    store: SqlStore, clock: ManualClock, ledger: LedgerBank
) -> None:
    async with EngineHarness(store, operations_registry, clock) as h:
        transfers = ScheduledTransfers(h.client)
        row, _ = transfers.create(transfer())
        await advance(h, timedelta(days=3))
    done = transfers.get(row.id)
    assert done is not None and done.status == "executed"
    assert (
        done.executed_at == done.execute_at == datetime(2026, 3, 4, 15, 0, tzinfo=UTC)
    )  # 10:00 EST
    assert ledger.get_balance("ACC-SHOP-0002").posted_minor == 25_000
    got = ledger.get_transfer(row.transfer_key)
    assert got is not None and got.amount_minor == 25_000
    run = store.run_get(row.run_id or 0)
    assert run is not None and run.status is RunStatus.SUCCEEDED
    assert run.result == {"outcome": "executed", "attempt": 1, "replayed": False}
    assert [e for e, _ in events(store, aggregate="transfer")] == [
        "transfer.scheduled", "transfer.executing", "transfer.executed"
    ]  # fmt: skip
    assert attempts_of(store, "transfer", row.id) == [(1, "succeeded", None)]
    assert ledger.check().ok


async def test_cancelled_and_rescheduled_transfers(
    store: SqlStore, clock: ManualClock, ledger: LedgerBank
) -> None:
    async with EngineHarness(store, operations_registry, clock) as h:
        transfers = ScheduledTransfers(h.client)
        gone, _ = transfers.create(transfer(request_key="gone"))
        moved, _ = transfers.create(transfer(request_key="moved"))
        transfers.cancel(gone.id)
        transfers.reschedule(moved.id, date(2026, 3, 6), "16:45")
        await advance(h, timedelta(days=2, hours=12))
        mid = transfers.get(moved.id)
        assert mid is not None and mid.status == "scheduled"  # not on the old date
        await advance(h, timedelta(days=3))
    final_gone, final_moved = transfers.get(gone.id), transfers.get(moved.id)
    assert final_gone is not None and final_gone.status == "cancelled"
    assert final_moved is not None and final_moved.status == "executed"
    assert final_moved.executed_at == datetime(2026, 3, 6, 21, 45, tzinfo=UTC)
    assert ledger.get_transfer(gone.transfer_key) is None
    assert ledger_count(store, "st-") == 1
    statuses = Counter(r.status for r in store.run_list(RunFilter(limit=100)))
    assert statuses == Counter({RunStatus.CANCELLED: 2, RunStatus.SUCCEEDED: 1})


async def test_transfers_due_together_execute_in_batches_each_once(
    store: SqlStore, clock: ManualClock, ledger: LedgerBank
) -> None:
    from collections.abc import Sequence

    from duly.engine.context import JobContext
    from duly.engine.registry import JobRegistry
    from duly.operations.execution.attempts import execute_many
    from duly.operations.jobs import EXECUTE_RETRY
    from duly.operations.transfers.execution import TRANSFERS
    from duly.operations.transfers.models import TRANSFER_JOB

    registry, sizes = JobRegistry(), []

    @registry.batch_job(TRANSFER_JOB, size=16, retry=EXECUTE_RETRY)
    def spy(ctxs: Sequence[JobContext]) -> list[Any]:
        sizes.append(len(ctxs))
        return execute_many(ctxs, TRANSFERS, default_banks)

    async with EngineHarness(store, registry, clock) as h:
        transfers = ScheduledTransfers(h.client)
        rows = [transfers.create(transfer(request_key=f"b{i}"))[0] for i in range(40)]
        # 40 × 250.00 leave 0.00 of the 10,000.00; this one, due later, cannot be paid
        # (due with them, its batch could run beside theirs and be paid before the last)
        short, _ = transfers.create(
            transfer(request_key="short", amount="1.00", local_time="10:05")
        )
        gone, _ = transfers.create(transfer(request_key="gone"))
        transfers.cancel(gone.id)
        await advance(h, timedelta(days=3))
    assert sum(sizes) == 41 and max(sizes) > 1
    done = [transfers.get(r.id) for r in rows]
    assert all(d is not None and d.status == "executed" and d.attempts == 1 for d in done)
    assert ledger.get_balance("ACC-CAT-0001").posted_minor == 0
    assert ledger.get_balance("ACC-SHOP-0002").posted_minor == 40 * 25_000
    assert ledger_count(store, "st-") == 40 and ledger.check().ok
    waiting = transfers.get(short.id)
    assert waiting is not None and waiting.error_code == "INSUFFICIENT_FUNDS"
    assert attempts_of(store, "transfer", short.id) == [(1, "failed", "INSUFFICIENT_FUNDS")]
    assert transfers.get(gone.id).status == "cancelled"  # type: ignore[union-attr]
    for row in rows[:3]:  # each transfer's events in order, once
        assert [e for e, a in events(store, aggregate="transfer") if a == str(row.id)] == [
            "transfer.scheduled", "transfer.executing", "transfer.executed"
        ]  # fmt: skip
    results = [store.run_get(r.run_id or 0) for r in rows]
    assert {(r.result or {}).get("outcome") for r in results if r is not None} == {"executed"}


async def test_20_22_insufficient_funds_retries_then_fails_with_one_notification(
    store: SqlStore, clock: ManualClock, ledger: LedgerBank
) -> None:
    policy = FailurePolicy(
        max_attempts=3, retry_every=timedelta(hours=4), retry_window=timedelta(hours=24)
    )
    async with EngineHarness(store, operations_registry, clock) as h:
        h.client.upsert_schedule(sweep_schedule("every:2h", horizon=timedelta(hours=4)))
        transfers = ScheduledTransfers(h.client)
        row, _ = transfers.create(transfer(amount="20000.00", policy=policy))
        await advance(h, timedelta(days=3))
    failed = transfers.get(row.id)
    assert failed is not None and failed.status == "failed"
    assert (failed.error_code, failed.attempts) == ("INSUFFICIENT_FUNDS", 3)
    assert attempts_of(store, "transfer", row.id) == [
        (n, "failed", "INSUFFICIENT_FUNDS") for n in (1, 2, 3)
    ]
    with store.engine.connect() as conn:
        starts = conn.execute(
            select(payment_attempts.c.started_at).where(payment_attempts.c.ref_id == row.id)
            .order_by(payment_attempts.c.attempt)
        ).scalars().all()  # fmt: skip
    assert [s - failed.execute_at for s in starts] == [
        timedelta(0),
        timedelta(hours=4),
        timedelta(hours=8),
    ]
    notes = [e for e in events(store) if e[0] == "customer.notification"]
    assert notes == [("customer.notification", str(row.id))]
    with store.engine.connect() as conn:
        payload = conn.execute(
            select(outbox.c.payload).where(outbox.c.event_type == "customer.notification")
        ).scalar_one()
    assert payload["reason_code"] == "INSUFFICIENT_FUNDS" and payload["reason_class"] == "transient"
    assert payload["amount"] == "20000.00" and payload["suggested_action"]
    assert ledger.get_transfer(row.transfer_key) is None and ledger.check().ok


async def test_a_retry_succeeds_once_funds_arrive(
    store: SqlStore, clock: ManualClock, ledger: LedgerBank
) -> None:
    async with EngineHarness(store, operations_registry, clock) as h:
        h.client.upsert_schedule(sweep_schedule("every:2h", horizon=timedelta(hours=4)))
        transfers = ScheduledTransfers(h.client)
        row, _ = transfers.create(transfer(amount="10500.00"))
        await advance(h, timedelta(days=2, hours=16))  # first attempt fails
        mid = transfers.get(row.id)
        assert mid is not None and (mid.status, mid.attempts) == ("executing", 1)
        ledger.fund("ACC-CAT-0001", 100_000, "USD", "salary")
        await advance(h, timedelta(days=1))
    done = transfers.get(row.id)
    assert done is not None and (done.status, done.attempts) == ("executed", 2)
    assert [e for e, _ in events(store) if e == "customer.notification"] == []


async def test_20_a_terminal_failure_stops_at_once(
    store: SqlStore, clock: ManualClock, ledger: LedgerBank
) -> None:
    async with EngineHarness(store, operations_registry, clock) as h:
        h.client.upsert_schedule(sweep_schedule("every:1d", horizon=timedelta(days=2)))
        transfers = ScheduledTransfers(h.client)
        row, _ = transfers.create(transfer(to_account="ACC-SHUT-0003"))
        Customers(store.engine, clock).close_account("ACC-SHUT-0003")
        await advance(h, timedelta(days=4))
    failed = transfers.get(row.id)
    assert failed is not None and (failed.status, failed.error_code, failed.attempts) == (
        "failed", "ACCOUNT_CLOSED", 1
    )  # fmt: skip
    assert len([e for e in events(store) if e[0] == "customer.notification"]) == 1


async def test_10_running_a_due_transfer_many_times_concurrently_posts_once(
    store: SqlStore, clock: ManualClock, ledger: LedgerBank
) -> None:
    # Three nodes on PostgreSQL; one node with 8 job threads on SQLite (a single-process store).
    nodes = 3 if store.is_postgres else 1
    async with EngineHarness(store, operations_registry, clock, nodes=nodes) as h:
        transfers = ScheduledTransfers(h.client)
        row, _ = transfers.create(transfer())
        for i in range(6):  # duplicates of attempt 1, as a bug or an operator might make them
            h.client.trigger("transfers.execute", {"ref_id": row.id, "attempt": 1, "version": 1},
                             idempotency_key=f"dup-{i}", scheduled_for=row.execute_at)  # fmt: skip
        await advance(h, timedelta(days=3))
    assert ledger_count(store, "st-") == 1
    results = Counter(r.result["outcome"] for r in store.run_list(RunFilter(limit=100)))
    assert results == Counter({"executed": 1, "noop": 6})
    done = transfers.get(row.id)
    assert done is not None and done.status == "executed" and done.attempts == 1
    assert ledger.check().ok


async def test_12_a_crash_after_posting_before_completion_gives_one_transfer(
    store: SqlStore, clock: ManualClock, ledger: LedgerBank
) -> None:
    async with EngineHarness(store, operations_registry, clock, roles=("scheduler",)) as h:
        transfers = ScheduledTransfers(h.client)
        row, _ = transfers.create(transfer())
    clock.set(row.execute_at)
    # A node claims the run, posts the transfer, and dies before it marks anything done.
    (ghost,) = store.run_claim(
        ClaimParams(node="ghost", queues=["default"], limit=1, now=clock.now(), lease_seconds=30)
    )
    ledger.transfer("ACC-CAT-0001", "ACC-SHOP-0002", 25_000, "USD", row.transfer_key)
    async with EngineHarness(store, operations_registry, clock) as h:
        await advance(h, timedelta(minutes=5))  # the reaper takes the run back…
        await advance(h, timedelta(minutes=5))  # …and it runs again
    run = store.run_get(ghost.run.id)
    assert run is not None and run.status is RunStatus.SUCCEEDED
    assert run.result == {"outcome": "executed", "attempt": 1, "replayed": True}
    assert [a.status for a in store.run_attempts(run.id)] == ["lost", "succeeded"]
    done = transfers.get(row.id)
    assert done is not None and done.status == "executed"
    assert ledger_count(store, "st-") == 1
    assert ledger.get_balance("ACC-SHOP-0002").posted_minor == 25_000


async def test_12_http_an_answer_lost_after_posting_is_retried_once(
    store: SqlStore, clock: ManualClock, ledger: LedgerBank, sim: BankSimulator
) -> None:
    sim.fault_rate, sim.faults = 1.0, ("timeout",)  # the bank posts, the answer never comes
    async with EngineHarness(store, operations_registry, clock) as h:
        transfers = ScheduledTransfers(h.client)
        row, _ = transfers.create(
            transfer(
                bank="sim",
                from_account="SIM-CAT-0001",
                to_account="SIM-SHOP-0002",
                timezone="America/New_York",
            )
        )
        await advance(h, timedelta(days=2, hours=15, seconds=1))
        sim.fault_rate = 0.0
        await advance(h, timedelta(minutes=5))
    done = transfers.get(row.id)
    assert done is not None and done.status == "executed" and done.attempts == 1
    run = store.run_get(row.run_id or 0)
    assert run is not None and run.status is RunStatus.SUCCEEDED and run.attempt == 2
    assert run.result["replayed"] is True
    assert [a.error_code for a in store.run_attempts(run.id)] == ["TIMEOUT", None]
    assert sim.balance_of("SIM-SHOP-0002") == 25_000
    assert sim.stats()["duplicate_applications"] == 0 and sim.stats()["transfers"] == 1


async def test_http_a_transient_bank_error_is_retried_by_the_engine(
    store: SqlStore, clock: ManualClock, ledger: LedgerBank, sim: BankSimulator
) -> None:
    sim.fault_rate, sim.faults = 1.0, ("5xx",)
    async with EngineHarness(store, operations_registry, clock) as h:
        transfers = ScheduledTransfers(h.client)
        row, _ = transfers.create(
            transfer(
                bank="sim",
                from_account="SIM-CAT-0001",
                to_account="SIM-SHOP-0002",
                timezone="America/New_York",
            )
        )
        await advance(h, timedelta(days=2, hours=15, seconds=30))  # attempts at +0 s and +10 s fail
        sim.fault_rate = 0.0
        await advance(h, timedelta(minutes=5))
    run = store.run_get(row.run_id or 0)
    assert run is not None and run.status is RunStatus.SUCCEEDED
    assert [a.error_code for a in store.run_attempts(run.id)] == ["API_ERROR", "API_ERROR", None]
    done = transfers.get(row.id)
    assert done is not None and (done.status, done.attempts) == ("executed", 1)


async def test_http_transfers_due_together_are_called_in_parallel_and_applied_once(
    store: SqlStore, clock: ManualClock, ledger: LedgerBank, sim: BankSimulator
) -> None:
    sim.fault_rate, sim.faults = 0.3, ("5xx",)  # some calls fail and are retried by the engine
    async with EngineHarness(store, operations_registry, clock) as h:
        transfers = ScheduledTransfers(h.client)
        rows = [
            transfers.create(transfer(request_key=f"h{i}", bank="sim", amount="10.00",
                                      from_account="SIM-CAT-0001", to_account="SIM-SHOP-0002",
                                      timezone="America/New_York"))[0]
            for i in range(30)
        ]  # fmt: skip
        mixed, _ = transfers.create(transfer(request_key="mixed-ledger", amount="1.00",
                                             timezone="America/New_York"))  # fmt: skip
        sim.add_account("SIM-SHUT-0003", "USD", 0, status="closed")
        refused, _ = transfers.create(transfer(request_key="h-closed", bank="sim", amount="1.00",
                                               from_account="SIM-CAT-0001",
                                               to_account="SIM-SHUT-0003",
                                               timezone="America/New_York",
                                               policy=FailurePolicy(max_attempts=1)))  # fmt: skip
        await advance(h, timedelta(days=2, hours=15, seconds=30))
        sim.fault_rate = 0.0
        await advance(h, timedelta(minutes=10))
    done = [transfers.get(r.id) for r in rows]
    assert all(d is not None and (d.status, d.attempts) == ("executed", 1) for d in done)
    assert sim.stats()["duplicate_applications"] == 0 and sim.stats()["transfers"] == 30
    assert sim.balance_of("SIM-SHOP-0002") == 30 * 1_000
    assert all(attempts_of(store, "transfer", r.id) == [(1, "succeeded", None)] for r in rows)
    retried = [store.run_get(r.run_id or 0) for r in rows]
    assert any(r is not None and r.attempt > 1 for r in retried)  # the 5xx were retried
    ledger_one = transfers.get(mixed.id)
    assert ledger_one is not None and ledger_one.status == "executed"
    # a bank's refusal in a batch is the payment's outcome, not a failed run
    closed = transfers.get(refused.id)
    assert closed is not None and (closed.status, closed.error_code) == ("failed", "ACCOUNT_CLOSED")
    closed_run = store.run_get(closed.run_id or 0)
    assert closed_run is not None and closed_run.status is RunStatus.SUCCEEDED
    assert {a.error_code for a in store.run_attempts(closed_run.id)} <= {"API_ERROR", None}
    assert closed_run.result == {"outcome": "failed", "attempt": 1, "code": "ACCOUNT_CLOSED"}
    assert ledger.check().ok


async def test_a_run_that_keeps_crashing_is_reconciled_into_a_failed_attempt(
    store: SqlStore, clock: ManualClock, ledger: LedgerBank
) -> None:
    class Broken:
        name, shares_transaction = "broken", False

        def transfer(self, *a: object, **k: object) -> None:
            raise RuntimeError("bug in the adapter")

    default_banks.register("broken", Broken())  # type: ignore[arg-type]
    try:
        async with EngineHarness(store, operations_registry, clock) as h:
            h.client.upsert_schedule(sweep_schedule("every:6h", horizon=timedelta(hours=12)))
            transfers = ScheduledTransfers(h.client)
            row, _ = transfers.create(transfer(bank="broken", policy=FailurePolicy(max_attempts=1)))
            await advance(h, timedelta(days=3))
    finally:
        default_banks.unregister("broken")
    failed = transfers.get(row.id)
    assert failed is not None and (failed.status, failed.error_code) == ("failed", "INTERNAL")
    run = store.run_get(row.run_id or 0)
    assert run is not None and run.status is RunStatus.FAILED and run.attempt == 4
    assert len([e for e in events(store) if e[0] == "customer.notification"]) == 1


# -- recurring payments -------------------------------------------------------------------


def rent(**kw: Any) -> NewRecurringPayment:
    base: dict[str, Any] = {
        "request_key": "rent",
        "from_account": "ACC-CAT-0001",
        "to_account": "ACC-SHOP-0002",
        "amount": "100.00",
        "currency": "USD",
        "frequency": "monthly",
        "start_date": date(2026, 3, 31),
        "time_of_day": "09:00",
        "calendar": "US-FED",
    }
    base.update(kw)
    return NewRecurringPayment(**base)


@pytest.mark.slow
async def test_6_7_9_monthly_on_the_31st_pays_every_month_for_a_year(
    store: SqlStore, clock: ManualClock, ledger: LedgerBank
) -> None:
    async with EngineHarness(store, operations_registry, clock) as h:
        h.client.upsert_schedule(sweep_schedule("every:7d", horizon=timedelta(days=8)))
        payments = RecurringPayments(h.client, horizon=timedelta(days=8))
        pay, _ = payments.create(rent())
        await advance(h, timedelta(days=366))
    occ = payments.occurrences(pay.id)
    assert [o.unadjusted_date for o in occ] == [
        date(2026, 3, 31), date(2026, 4, 30), date(2026, 5, 31), date(2026, 6, 30),
        date(2026, 7, 31), date(2026, 8, 31), date(2026, 9, 30), date(2026, 10, 31),
        date(2026, 11, 30), date(2026, 12, 31), date(2027, 1, 31), date(2027, 2, 28),
    ]  # fmt: skip
    assert {o.status for o in occ} == {"executed"}
    moved = {
        o.unadjusted_date: o.execution_date for o in occ if o.unadjusted_date != o.execution_date
    }
    assert moved == {
        date(2026, 5, 31): date(2026, 6, 1),  # Sunday
        date(2026, 10, 31): date(2026, 11, 2),  # Saturday
        date(2027, 1, 31): date(2027, 2, 1),  # Sunday
        date(2027, 2, 28): date(2027, 3, 1),  # Sunday
    }
    assert all(o.executed_at == o.execute_at for o in occ)  # on time, each
    assert ledger_count(store, f"rp-{pay.id}-") == 12
    assert ledger.get_balance("ACC-SHOP-0002").posted_minor == 12 * 10_000
    assert ledger.check().ok


async def test_13_after_downtime_every_missed_occurrence_runs_once(
    store: SqlStore, clock: ManualClock, ledger: LedgerBank
) -> None:
    async with EngineHarness(store, operations_registry, clock) as h:
        h.client.upsert_schedule(sweep_schedule("every:12h", horizon=timedelta(days=1)))
        payments = RecurringPayments(h.client, horizon=timedelta(hours=2))
        pay, _ = payments.create(rent(frequency="weekly", start_date=date(2026, 3, 3)))
        await advance(h, timedelta(days=1, hours=12))  # the first one (Tue 3 Mar) is paid
    clock.advance(timedelta(days=30))  # every node is down for a month
    async with EngineHarness(store, operations_registry, clock) as h:
        await advance(h, timedelta(hours=2))
    occ = payments.occurrences(pay.id)
    assert [o.unadjusted_date for o in occ] == [
        date(2026, 3, 3) + timedelta(weeks=k) for k in range(5)
    ]
    assert {o.status for o in occ} == {"executed"}
    assert ledger_count(store, f"rp-{pay.id}-") == 5
    per_occurrence = Counter(
        r.args["ref_id"] for r in store.run_list(RunFilter(job_name="recurring.execute", limit=100))
    )
    assert set(per_occurrence.values()) == {1}


async def test_21_22_recurring_failure_policy_and_pause_on_a_closed_account(
    store: SqlStore, clock: ManualClock, ledger: LedgerBank
) -> None:
    policy = FailurePolicy(
        max_attempts=2, retry_every=timedelta(hours=6), retry_window=timedelta(hours=12)
    )
    async with EngineHarness(store, operations_registry, clock) as h:
        h.client.upsert_schedule(sweep_schedule("every:3h", horizon=timedelta(hours=7)))
        payments = RecurringPayments(h.client, horizon=timedelta(hours=2))
        big, _ = payments.create(rent(request_key="big", amount="6000.00", frequency="weekly",
                                      start_date=date(2026, 3, 3), policy=policy))  # fmt: skip
        shut, _ = payments.create(rent(request_key="shut", to_account="ACC-SHUT-0003",
                                       frequency="weekly", start_date=date(2026, 3, 3)))  # fmt: skip
        Customers(store.engine, clock).close_account("ACC-SHUT-0003")
        await advance(h, timedelta(days=16))
    big_occ = payments.occurrences(big.id)
    # 10 000.00 funds one 6 000.00 payment; then each occurrence fails twice and is skipped past.
    assert [(o.status, o.attempts) for o in big_occ] == [
        ("executed", 1),
        ("failed", 2),
        ("failed", 2),
    ]
    assert {o.error_code for o in big_occ[1:]} == {"INSUFFICIENT_FUNDS"}
    after_big = payments.get(big.id)
    assert after_big is not None and after_big.status == "active"  # policy "skip": carries on
    shut_occ = payments.occurrences(shut.id)
    assert (shut_occ[0].status, shut_occ[0].error_code, shut_occ[0].attempts) == (
        "failed", "ACCOUNT_CLOSED", 1
    )  # fmt: skip
    after_shut = payments.get(shut.id)
    assert after_shut is not None and after_shut.status == "paused"
    assert {o.status for o in shut_occ[1:]} <= {"skipped"}
    notes = Counter(a for e, a in events(store) if e == "customer.notification")
    assert set(notes.values()) == {1} and len(notes) == 3  # one per failed occurrence
    assert ledger.check().ok


async def test_an_occurrence_due_while_paused_is_skipped_then_resume_pays_again(
    store: SqlStore, clock: ManualClock, ledger: LedgerBank
) -> None:
    async with EngineHarness(store, operations_registry, clock) as h:
        h.client.upsert_schedule(sweep_schedule("every:1d", horizon=timedelta(days=2)))
        payments = RecurringPayments(h.client, horizon=timedelta(days=2))
        pay, _ = payments.create(rent(frequency="weekly", start_date=date(2026, 3, 3)))
        payments.pause(pay.id)  # its first occurrence is already materialised, with its run
        await advance(h, timedelta(days=9))
        payments.resume(pay.id)
        await advance(h, timedelta(days=7))
    occ = payments.occurrences(pay.id)
    assert [(o.unadjusted_date, o.status) for o in occ[:3]] == [
        (date(2026, 3, 3), "skipped"),  # by its run: the payment was paused
        (date(2026, 3, 10), "skipped"),  # by the sweeper: it fell due while paused
        (date(2026, 3, 17), "executed"),
    ]
    assert ledger_count(store, f"rp-{pay.id}-") == 1
