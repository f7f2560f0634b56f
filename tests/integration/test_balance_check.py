"""The nightly balance check driven by the engine on a manual clock (finance-rules.md 14, 15, 22).

Each test runs a real node (:class:`~duly.testing.EngineHarness`) on a real store (SQLite
file, then PostgreSQL), reading balances from the built-in ledger or from a real
``bank-sim`` over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from structlog.testing import capture_logs

from duly.banking.customers import Customers, NewAccount, NewCustomer
from duly.banking.http import HttpBank
from duly.banking.ledger import LedgerBank
from duly.banking.port import BankingPort
from duly.banking.simulator import BankSimulator
from duly.clock import Clock, ManualClock
from duly.config import BalanceCheckSettings, Settings
from duly.engine.states import RunStatus
from duly.engine.store.base import RunFilter, RunRow
from duly.engine.store.sql import SqlStore
from duly.operations.balance_check.jobs import balance_check_registry
from duly.operations.balance_check.models import (
    BELOW_MINIMUM_EVENT,
    JOB_NAME,
    SCHEDULE_NAME,
    balance_check_results,
    error_logs,
)
from duly.operations.balance_check.service import missed_nights
from duly.operations.outbox import outbox
from duly.runtime import System, job_registry
from duly.testing import EngineHarness

#: A distinctive balance: it must never appear in a log line or a record.
SECRET_MINOR = 7_654_321
SECRET_TEXT = ("7654321", "76543.21", "76,543.21")


def cfg(**kw: Any) -> BalanceCheckSettings:
    return BalanceCheckSettings(**kw)


def registry_for(settings: BalanceCheckSettings, bank: BankingPort) -> Any:
    def ports(_cfg: BalanceCheckSettings, _engine: Engine, _clock: Clock) -> BankingPort:
        return bank

    return balance_check_registry(settings, ports=ports)


async def settle(h: EngineHarness) -> None:
    await h.settle()
    await h.settle()


async def advance(h: EngineHarness, delta: timedelta) -> None:
    """``h.advance`` with each settle done twice (a pass may have begun before the move)."""
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


async def until_final(h: EngineHarness, run_id: int, step: timedelta = timedelta(minutes=1)) -> None:
    """Advance until run ``run_id`` is final: reads that time out take real time, so the
    manual clock may pass a retry's instant before the read that needs it has failed."""
    for _ in range(60):
        await advance(h, step)
        run = h.store.run_get(run_id)
        if run is not None and run.status.value in ("succeeded", "failed", "cancelled"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish")


def results(store: SqlStore, day: date | None = None) -> dict[int, tuple[str, str | None, int]]:
    r = balance_check_results.c
    query = select(r.customer_id, r.result, r.error_code, r.attempts)
    if day is not None:
        query = query.where(r.business_date == day)
    with store.engine.connect() as conn:
        return {int(c): (res, code, n) for c, res, code, n in conn.execute(query)}


def count(store: SqlStore, table: Any) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def only_run(store: SqlStore) -> RunRow:
    runs = store.run_list(RunFilter(job_name=JOB_NAME, limit=10))
    assert len(runs) == 1, runs
    return runs[0]


# -- through the ledger -------------------------------------------------------------------


@pytest.fixture
def ledger_bank(store: SqlStore, clock: ManualClock) -> dict[str, int]:
    """Premium customers on the ledger; returns their ids by name."""
    people = Customers(store.engine, clock)
    bank = LedgerBank(store.engine, clock)
    ids: dict[str, int] = {}

    def premium(name: str, minimum: int | None, *accounts: tuple[str, int, str]) -> None:
        row = people.add(
            NewCustomer(
                name, tier="premium", min_balance_minor=minimum,
                min_balance_currency="USD" if minimum is not None else None,
            )
        )  # fmt: skip
        ids[name] = row.id
        for account_id, amount, currency in accounts:
            people.open_account(NewAccount(account_id, currency, row.id))
            if amount:
                bank.fund(account_id, amount, currency, f"fund-{account_id}")

    premium("rich", 1_000_000, ("ACC-RICH-0001", SECRET_MINOR, "USD"))
    premium("equal", 500_000, ("ACC-EQUAL-0002", 500_000, "USD"))
    premium("pending", 500_000, ("ACC-PEND-0003", 500_000, "USD"))
    premium("split", 300_000, ("ACC-SPLIT-0004", 200_000, "USD"), ("ACC-SPLIT-0005", 100_000, "USD"))
    premium("poor", 1_000_000, ("ACC-POOR-0006", 999_999, "USD"), ("ACC-POOR-EUR", 5_000_000, "EUR"))
    premium("no-account", 100)
    premium("no-minimum", None, ("ACC-NOMIN-0007", 1, "USD"))
    std = people.add(NewCustomer("standard"))
    people.open_account(NewAccount("ACC-STD-0008", "USD", std.id))
    ids["standard"] = std.id
    people.open_account(NewAccount("ACC-SINK-0009", "USD", None))
    # A pending debit of 1 cent: posted is at the minimum, available is one cent below.
    bank.reserve("ACC-PEND-0003", "ACC-SINK-0009", 1, "USD", "hold-1")
    return ids


async def test_15_ledger_pass_fail_error_equality_and_pending_debits(
    store: SqlStore, clock: ManualClock, ledger_bank: dict[str, int]
) -> None:
    bank = LedgerBank(store.engine, clock)
    registry = registry_for(cfg(), bank)
    with capture_logs() as logs:
        async with EngineHarness(store, registry, clock) as h:
            run, _ = h.client.trigger(JOB_NAME, {"business_date": "2026-03-01"})
            await advance(h, timedelta(minutes=1))
    ids = ledger_bank
    got = results(store, date(2026, 3, 1))
    assert got == {
        ids["rich"]: ("PASS", None, 1),
        ids["equal"]: ("PASS", None, 1),  # balance == minimum passes
        ids["pending"]: ("FAIL", None, 1),  # posted minus pending debits is below
        ids["split"]: ("PASS", None, 1),  # two accounts add up (account_rule: total)
        ids["poor"]: ("FAIL", None, 1),  # the EUR account does not count for a USD minimum
        ids["no-account"]: ("ERROR", "MISSING_DATA", 1),
        ids["no-minimum"]: ("ERROR", "MISSING_DATA", 1),
    }
    done = store.run_get(run.id)
    assert done is not None and done.status is RunStatus.SUCCEEDED
    summary = done.result
    assert summary["business_date"] == "2026-03-01"
    assert (summary["customers"], summary["processed"], summary["passed"]) == (7, 7, 3)
    assert (summary["failed"], summary["errors"]) == (2, 2)
    assert summary["errors_by_code"] == {"MISSING_DATA": 2}
    assert (done.progress_done, done.progress_total) == (7, 7)
    # One notification event per FAIL, none for the others.
    with store.engine.connect() as conn:
        events = conn.execute(
            select(outbox.c.event_type, outbox.c.aggregate_id, outbox.c.payload)
        ).all()
    assert sorted((e, int(a)) for e, a, _ in events) == sorted(
        [(BELOW_MINIMUM_EVENT, ids["pending"]), (BELOW_MINIMUM_EVENT, ids["poor"])]
    )
    assert count(store, error_logs) == 2
    # One aggregated alert for the night's errors.
    alerts = [a for a in store.alert_list() if a.rule == "balance_check.customer_errors"]
    assert len(alerts) == 1 and alerts[0].details["errors_by_code"] == {"MISSING_DATA": 2}
    assert "MISSING_DATA 2" in alerts[0].title
    _no_amount_anywhere(store, logs)


async def test_each_rule_needs_every_account_at_the_minimum(
    store: SqlStore, clock: ManualClock, ledger_bank: dict[str, int]
) -> None:
    bank = LedgerBank(store.engine, clock)
    async with EngineHarness(store, registry_for(cfg(account_rule="each"), bank), clock) as h:
        h.client.trigger(JOB_NAME, {"business_date": "2026-03-01"})
        await advance(h, timedelta(minutes=1))
    got = results(store)
    assert got[ledger_bank["split"]][0] == "FAIL"
    assert got[ledger_bank["rich"]][0] == "PASS"


def _no_amount_anywhere(store: SqlStore, logs: list[dict[str, Any]]) -> None:
    assert logs, "no log line captured"
    for line in logs:
        text = repr(line)
        assert not any(s in text for s in SECRET_TEXT), text
    with store.engine.connect() as conn:
        for table in (balance_check_results, error_logs, outbox):
            for row in conn.execute(select(table)):
                assert not any(s in repr(tuple(row)) for s in SECRET_TEXT), row
    for run in store.run_list(RunFilter(limit=100)):
        assert not any(s in repr(run.result) for s in SECRET_TEXT)


async def test_14_a_rerun_resumes_and_never_decides_a_customer_twice(
    store: SqlStore, clock: ManualClock, ledger_bank: dict[str, int]
) -> None:
    bank = LedgerBank(store.engine, clock)
    async with EngineHarness(store, registry_for(cfg(), bank), clock) as h:
        h.client.trigger(JOB_NAME, {"business_date": "2026-03-01"})
        await advance(h, timedelta(minutes=1))
        second, _ = h.client.trigger(JOB_NAME, {"business_date": "2026-03-01"})
        await advance(h, timedelta(minutes=1))
    again = store.run_get(second.id)
    assert again is not None and again.status is RunStatus.SUCCEEDED
    assert again.result["processed"] == 0 and again.result["resumed_after"] == 7
    assert again.result["passed"] == 3  # the night's figures, not this attempt's
    assert count(store, balance_check_results) == 7
    assert count(store, outbox) == 2 and count(store, error_logs) == 2


# -- through bank-sim over HTTP ---------------------------------------------------------


N_SIM = 24


@pytest.fixture
def sim_customers(store: SqlStore, clock: ManualClock) -> list[int]:
    people = Customers(store.engine, clock)
    ids = []
    for i in range(N_SIM):
        row = people.add(
            NewCustomer(f"p{i}", tier="premium", min_balance_minor=100_000,
                        min_balance_currency="USD")
        )  # fmt: skip
        people.open_account(NewAccount(f"SIM-{i:04d}", "USD", row.id))
        ids.append(row.id)
    return ids


@pytest.fixture
def simulator() -> Iterator[BankSimulator]:
    with BankSimulator(seed=7, hang_seconds=2.0) as sim:
        for i in range(N_SIM):
            # even: above the minimum; odd: below it
            sim.add_account(f"SIM-{i:04d}", "USD", 200_000 if i % 2 == 0 else 50_000)
        yield sim


EXPECTED = {
    "timeout": ("TIMEOUT", 4),
    "5xx": ("API_ERROR", 4),
    "malformed": ("INVALID_RESPONSE", 4),
    "missing": ("MISSING_DATA", 1),
    "null": ("NULL_BALANCE", 1),
    "negative": ("NEGATIVE_BALANCE", 1),
}


@pytest.mark.parametrize("fault", list(EXPECTED))
async def test_each_fault_kind_ends_in_error_with_its_code(
    store: SqlStore,
    clock: ManualClock,
    simulator: BankSimulator,
    sim_customers: list[int],
    fault: str,
) -> None:
    simulator.fault_rate, simulator.faults = 1.0, (fault,)
    # Only the hang fault needs a short timeout; any other answer must not be cut off by
    # a slow, loaded machine and turned into a TIMEOUT.
    timeout = 0.2 if fault == "timeout" else 1.5
    settings = cfg(concurrency=8, per_call_timeout_seconds=timeout)
    with HttpBank(simulator.url, timeout=settings.per_call_timeout_seconds) as bank:
        async with EngineHarness(store, registry_for(settings, bank), clock) as h:
            run, _ = h.client.trigger(JOB_NAME, {"business_date": "2026-03-01"})
            started = clock.now()
            await until_final(h, run.id)
    code, attempts = EXPECTED[fault]
    assert set(results(store).values()) == {("ERROR", code, attempts)}
    done = store.run_get(run.id)
    assert done is not None and done.status is RunStatus.SUCCEEDED
    assert done.result["errors_by_code"] == {code: N_SIM}
    alerts = [a for a in store.alert_list() if a.rule == "balance_check.customer_errors"]
    assert len(alerts) == 1 and alerts[0].details["errors_by_code"] == {code: N_SIM}
    assert len(alerts[0].details["first_customers"]) == 10
    with store.engine.connect() as conn:
        logged = conn.execute(select(error_logs.c.retry_count, error_logs.c.logged_at)).all()
    assert len(logged) == N_SIM
    assert {n for n, _ in logged} == {attempts - 1}
    if attempts == 4:
        # Retried after 5, 10 and 20 s of the manual clock: at least 35 s after the start
        # (more when the harness moved the clock while another customer's read was in
        # flight; the exact spacing is tested in tests/unit/engine/test_batch.py).
        assert all(at - started >= timedelta(seconds=35) for _, at in logged)
    else:
        assert {at - started for _, at in logged} == {timedelta(0)}


async def test_faults_at_a_known_rate_every_customer_decided_once(
    store: SqlStore, clock: ManualClock, simulator: BankSimulator, sim_customers: list[int]
) -> None:
    simulator.fault_rate = 0.3
    simulator.faults = ("5xx", "malformed", "missing", "null", "negative")
    settings = cfg(concurrency=4)
    with (
        capture_logs() as logs,
        HttpBank(simulator.url, timeout=1.0) as bank,
    ):
        async with EngineHarness(store, registry_for(settings, bank), clock) as h:
            run, _ = h.client.trigger(JOB_NAME, {"business_date": "2026-03-01"})
            await until_final(h, run.id)
    got = results(store)
    assert sorted(got) == sorted(sim_customers)
    for i, cid in enumerate(sim_customers):
        outcome, code, attempts = got[cid]
        if outcome == "ERROR":
            assert code in {"API_ERROR", "INVALID_RESPONSE", "MISSING_DATA", "NULL_BALANCE",
                            "NEGATIVE_BALANCE"}  # fmt: skip
        else:  # a read that got through is classified by the real balance
            assert outcome == ("PASS" if i % 2 == 0 else "FAIL")
            assert code is None
        assert 1 <= attempts <= 4
    stats = simulator.stats()
    assert 0 < sum(stats["faults"].values()) < stats["requests"]
    done = store.run_get(run.id)
    assert done is not None and done.status is RunStatus.SUCCEEDED
    summary = done.result
    assert summary["passed"] + summary["failed"] + summary["errors"] == N_SIM
    outcomes = Counter(v[0] for v in got.values())
    assert (summary["passed"], summary["failed"]) == (outcomes["PASS"], outcomes["FAIL"])
    assert count(store, outbox) == outcomes["FAIL"]
    assert count(store, error_logs) == outcomes["ERROR"]
    assert all("balance" not in str(line.get("event")) or "posted" not in line for line in logs)


# -- schedule, retries of the job, missed nights ------------------------------------------


def system_for(store: SqlStore, clock: ManualClock, settings: Settings) -> System:
    from duly.runtime import engine_options

    return System(settings, store, job_registry(settings), clock, engine_options(settings))


async def test_seven_nights_at_2200_each_once_within_the_window(
    store: SqlStore, clock: ManualClock, ledger_bank: dict[str, int]
) -> None:
    settings = Settings(jobs={"daily_balance_check": {"schedule_time": "22:00"}})
    system = system_for(store, clock, settings)
    system.sync_schedules()
    sched = store.schedule_get(SCHEDULE_NAME)
    assert sched is not None and not sched.paused
    assert sched.next_fire_at == datetime(2026, 3, 2, 22, 0, tzinfo=UTC)
    async with EngineHarness(store, system.registry, clock) as h:
        await advance(h, timedelta(days=7))
    runs = sorted(store.run_list(RunFilter(job_name=JOB_NAME, limit=50)), key=lambda r: r.id)
    assert [r.scheduled_for for r in runs] == [
        datetime(2026, 3, 2 + d, 22, 0, tzinfo=UTC) for d in range(7)
    ]
    assert all(r.status is RunStatus.SUCCEEDED for r in runs)
    assert all(r.finished_at is not None and r.window_ends_at is not None
               and r.finished_at <= r.window_ends_at for r in runs)  # fmt: skip
    assert [r.result["business_date"] for r in runs] == [
        f"2026-03-{2 + d:02d}" for d in range(7)
    ]
    assert count(store, balance_check_results) == 7 * 7
    assert not [a for a in store.alert_list() if a.rule.startswith("run.")]


async def test_config_moves_the_schedule_and_disabling_pauses_it(
    store: SqlStore, clock: ManualClock
) -> None:
    first = Settings(jobs={"daily_balance_check": {"schedule_time": "22:00"}})
    system_for(store, clock, first).sync_schedules()
    moved = Settings(
        jobs={"daily_balance_check": {"schedule_time": "23:30", "timezone": "Europe/London"}}
    )
    system_for(store, clock, moved).sync_schedules()
    sched = store.schedule_get(SCHEDULE_NAME)
    assert sched is not None and sched.spec == "daily:23:30"
    assert sched.next_fire_at == datetime(2026, 3, 2, 23, 30, tzinfo=UTC)  # GMT in March
    off = Settings(jobs={"daily_balance_check": {"enabled": False}})
    system_for(store, clock, off).sync_schedules()
    paused = store.schedule_get(SCHEDULE_NAME)
    assert paused is not None and paused.paused


class BrokenBank:
    """A port whose every read raises an unexpected error (a bug, not a bank fault)."""

    name = "broken"
    shares_transaction = False

    def get_balance(self, account_id: str) -> Any:
        raise RuntimeError("boom")


async def test_job_failure_is_retried_then_alerted(store: SqlStore, clock: ManualClock) -> None:
    settings = cfg(retry_attempts=2, retry_delay_seconds=300)

    def ports(_c: BalanceCheckSettings, _e: Engine, _k: Clock) -> BankingPort:
        raise RuntimeError("the bank client cannot be built")

    registry = balance_check_registry(settings, ports=ports)
    async with EngineHarness(store, registry, clock) as h:
        run, _ = h.client.trigger(JOB_NAME)
        await advance(h, timedelta(minutes=20))
    done = store.run_get(run.id)
    assert done is not None and done.status is RunStatus.FAILED and done.attempt == 3
    starts = [a.started_at for a in store.run_attempts(run.id)]
    assert [b - a for a, b in itertools.pairwise(starts)] == [timedelta(seconds=300)] * 2
    failed = [a for a in store.alert_list() if a.rule == "run.failed"]
    assert len(failed) == 1 and failed[0].run_id == run.id


async def test_an_unexpected_error_is_internal_with_its_trace_kept(
    store: SqlStore, clock: ManualClock, ledger_bank: dict[str, int]
) -> None:
    registry = registry_for(cfg(), BrokenBank())  # type: ignore[arg-type]
    async with EngineHarness(store, registry, clock) as h:
        h.client.trigger(JOB_NAME, {"business_date": "2026-03-01"})
        await advance(h, timedelta(minutes=1))
    with store.engine.connect() as conn:
        rows = conn.execute(select(error_logs.c.error_code, error_logs.c.stack_trace)).all()
    with_accounts = len(ledger_bank) - 2  # no-account and standard read nothing
    assert Counter(code for code, _ in rows) == Counter(
        {"INTERNAL": with_accounts - 1, "MISSING_DATA": 2}  # no-minimum fails before reading
    )
    assert all("RuntimeError: boom" in (trace or "") for code, trace in rows if code == "INTERNAL")


async def test_a_missed_night_is_detected_alerted_and_backfilled(
    store: SqlStore, clock: ManualClock, ledger_bank: dict[str, int]
) -> None:
    settings = Settings()
    system = system_for(store, clock, settings)
    system.sync_schedules()
    async with EngineHarness(store, system.registry, clock) as h:
        await advance(h, timedelta(hours=23))  # Monday's night runs
    clock.set(datetime(2026, 3, 5, 21, 0, tzinfo=UTC))  # nobody ran Tue and Wed nights
    async with EngineHarness(store, system.registry, clock) as h:
        await advance(h, timedelta(minutes=10))  # the catch-up run (latest missed fire)
        missed = [a for a in store.alert_list() if a.rule == "balance_check.missed_night"]
        assert [a.details["business_date"] for a in missed] == ["2026-03-03"]
        assert "--arg business_date=2026-03-03" in missed[0].title
        assert missed_nights(store, settings.jobs.daily_balance_check, clock.now()) == [
            date(2026, 3, 3)
        ]
        h.client.trigger(JOB_NAME, {"business_date": "2026-03-03"})
        await advance(h, timedelta(minutes=10))
    assert missed_nights(store, settings.jobs.daily_balance_check, clock.now()) == []
    per_night = Counter(
        row.business_date for row in _all_results(store)
    )
    assert per_night == {date(2026, 3, d): 7 for d in (2, 3, 4)}


def _all_results(store: SqlStore) -> list[Any]:
    with store.engine.connect() as conn:
        return list(conn.execute(select(balance_check_results)))


async def test_bad_business_date_fails_without_retry(store: SqlStore, clock: ManualClock) -> None:
    registry = balance_check_registry(cfg())
    async with EngineHarness(store, registry, clock) as h:
        bad, _ = h.client.trigger(JOB_NAME, {"business_date": "2026-02-30"})
        future, _ = h.client.trigger(JOB_NAME, {"business_date": "2026-03-09"})
        await advance(h, timedelta(minutes=1))
    for run_id in (bad.id, future.id):
        done = store.run_get(run_id)
        assert done is not None and done.status is RunStatus.FAILED
        assert done.error_code == "VALIDATION_ERROR" and done.attempt == 1

