"""The engine's metrics on a real ``/metrics`` (127.0.0.1) after real runs, on both stores.

A node (:class:`~duly.testing.EngineHarness`) with :func:`duly.metrics.with_run_metrics`
runs a flaky job, a late run and the real nightly balance check on the ledger; the scrape
shows runs by job and status, the fire-lateness histogram, attempts, queue depth and the
balance check's results by result and code.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta

import httpx
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from duly.banking.customers import Customers, NewAccount, NewCustomer
from duly.banking.ledger import LedgerBank
from duly.clock import ManualClock
from duly.config import BalanceCheckSettings
from duly.engine.context import JobContext
from duly.engine.errors import JobError
from duly.engine.registry import JobRegistry
from duly.engine.retry import RetryPolicy
from duly.engine.store.sql import SqlStore
from duly.metrics import start_metrics_server, with_run_metrics
from duly.operations.balance_check.jobs import balance_check_registry
from duly.operations.balance_check.models import JOB_NAME
from duly.testing import EngineHarness, test_options

_suffix = itertools.count()


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _before(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _advance(h: EngineHarness, delta: timedelta) -> None:
    for _ in range(3):  # a pass may have begun before the move
        await h.advance(delta / 3)
        await h.settle()


async def test_metrics_after_real_runs(store: SqlStore, clock: ManualClock) -> None:
    # Counters are process-wide (both stores run in one pytest): names unique per test run.
    n = next(_suffix)
    flaky_name, late_name, parked_name = f"m_flaky_{n}", f"m_late_{n}", f"m_parked_{n}"
    people, bank = Customers(store.engine, clock), LedgerBank(store.engine, clock)
    for name, minimum, funded in (("ok", 1_000, 5_000), ("low", 1_000_000, 10), ("none", None, 1)):
        row = people.add(
            NewCustomer(
                name,
                tier="premium",
                min_balance_minor=minimum,
                min_balance_currency="USD" if minimum is not None else None,
            )
        )
        people.open_account(NewAccount(f"ACC-M{n}-{name}", "USD", row.id))
        bank.fund(f"ACC-M{n}-{name}", funded, "USD", f"fund-{n}-{name}")

    registry = balance_check_registry(BalanceCheckSettings(), ports=lambda *_: bank)
    extra = JobRegistry()

    @extra.job(flaky_name, retry=RetryPolicy.fixed([10]))
    def flaky(ctx: JobContext) -> str:
        if ctx.attempt < 2:
            raise JobError("API_ERROR", "core banking answered 503")
        return "done"

    extra.job(late_name)(lambda ctx: None)
    extra.job(parked_name, queue="parked")(lambda ctx: None)
    registry = registry.merged(extra)

    finished_before = _before("duly_runs_finished_total", job=flaky_name, status="succeeded")
    options = with_run_metrics(test_options())
    async with EngineHarness(store, registry, clock, options) as h:
        h.client.trigger(flaky_name)
        h.client.trigger(late_name, scheduled_for=clock.now() - timedelta(seconds=42))
        h.client.trigger(parked_name)  # no node serves queue "parked": it stays due
        h.client.trigger(JOB_NAME, {"business_date": "2026-03-01"})
        await _advance(h, timedelta(minutes=3))
        server = start_metrics_server(store, clock, 0)
        try:
            got = await asyncio.to_thread(_scrape, server.port)
        finally:
            server.stop()

    def val(name: str, **labels: str) -> float:
        return got.get((name, tuple(sorted(labels.items()))), 0.0)

    # Runs by job and status, written by the worker (a retry is not a final outcome).
    assert val("duly_runs_finished_total", job=flaky_name, status="retrying") == 1
    assert (
        val("duly_runs_finished_total", job=flaky_name, status="succeeded") == finished_before + 1
    )
    assert val("duly_runs_finished_total", job=JOB_NAME, status="succeeded") >= 1
    assert val("duly_runs", job=flaky_name, status="succeeded") == 1
    # Fire lateness: the run scheduled 42 s in the past started 42 s late (first attempt only).
    assert val("duly_run_fire_lateness_seconds_count", job=late_name) == 1
    assert val("duly_run_fire_lateness_seconds_sum", job=late_name) == 42
    assert val("duly_run_fire_lateness_seconds_bucket", job=late_name, le="30.0") == 0
    assert val("duly_run_fire_lateness_seconds_bucket", job=late_name, le="60.0") == 1
    assert val("duly_run_fire_lateness_seconds_count", job=flaky_name) == 1
    # Attempts (from the store) and queue depth.
    assert val("duly_run_attempts_total", job=flaky_name, status="failed") == 1
    assert val("duly_run_attempts_total", job=flaky_name, status="succeeded") == 1
    assert val("duly_queue_depth", queue="parked") == 1
    assert val("duly_oldest_due_run_seconds") >= 180
    # The balance check's results of its latest business date, by result and code.
    assert val("duly_balance_check_results", result="PASS", code="") == 1
    assert val("duly_balance_check_results", result="FAIL", code="") == 1
    assert val("duly_balance_check_results", result="ERROR", code="MISSING_DATA") == 1
    assert val("duly_scrape_error") == 0
