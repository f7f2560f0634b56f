"""The balance check survives its worker being killed mid-batch (real processes).

A ``duly worker`` process runs ``daily_balance_check`` against ``bank-sim`` (in this test's
process, with latency, so the batch takes seconds); it is SIGKILLed once some customers are
recorded and others are not. A second worker takes the run back after the lease expires,
skips the customers already decided and finishes the rest: every premium customer ends with
exactly one result for the night, one error log per ``ERROR`` and one notification per
``FAIL``. Real waits (``SystemClock``), so a few seconds on each store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from duly.banking.schema import accounts, customers
from duly.banking.simulator import BankSimulator
from duly.clock import SystemClock
from duly.engine.client import EngineClient
from duly.engine.states import RunStatus
from duly.engine.store.sql import SqlStore
from duly.operations.balance_check.jobs import balance_check_registry
from duly.operations.balance_check.models import JOB_NAME, balance_check_results, error_logs
from duly.operations.outbox import outbox

pytestmark = pytest.mark.slow

CLOCK = SystemClock()
N = 400
MINIMUM = 50_000
BATCH = 10  # customers per request: 40 requests of ~60 ms, one at a time


def _env(db_url: str, bank_url: str, name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DULY_")}
    env.update(
        DULY_DATABASE_URL=db_url,
        DULY_NODE_NAME=name,
        DULY_ENGINE__LEASE_SECONDS="3",
        DULY_ENGINE__HEARTBEAT_SECONDS="1",
        DULY_ENGINE__REAPER_INTERVAL_SECONDS="1",
        DULY_ENGINE__MAX_IDLE_SECONDS="0.5",
        DULY_LOGGING__LEVEL="warning",
        DULY_BANK_HTTP_URL=bank_url,
        DULY_JOBS__DAILY_BALANCE_CHECK__ENABLED="false",  # only the manual run below
        DULY_JOBS__DAILY_BALANCE_CHECK__BANK="http",
        DULY_JOBS__DAILY_BALANCE_CHECK__CONCURRENCY="1",
        DULY_JOBS__DAILY_BALANCE_CHECK__READ_BATCH_SIZE=str(BATCH),
        DULY_JOBS__DAILY_BALANCE_CHECK__PER_CALL_TIMEOUT_SECONDS="5",
    )
    return env


@pytest.fixture
def bank() -> Iterator[BankSimulator]:
    # Data faults only (not retried): each ends its customer in ERROR at once.
    with BankSimulator(latency_ms=60, fault_rate=0.05, faults=("null", "missing"), seed=5) as sim:
        for i in range(N):
            sim.add_account(f"ACC{i:08d}", "USD", MINIMUM - 1 if i % 4 == 0 else MINIMUM + i)
        yield sim


@pytest.fixture
def workers(
    db_url: str, bank: BankSimulator, tmp_path: Path
) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> subprocess.Popen[bytes]:
        with (tmp_path / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "duly", "worker"],
                env=_env(db_url, bank.url, name),
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in started:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def seed(store: SqlStore) -> None:
    now = CLOCK.now()
    with store.engine.begin() as conn:
        conn.execute(
            insert(customers),
            [{"id": i + 1, "external_id": f"cust-{i:06d}", "tier": "premium",
              "min_balance_minor": MINIMUM, "min_balance_currency": "USD",
              "notification_prefs": {}, "created_at": now, "updated_at": now}
             for i in range(N)],
        )  # fmt: skip
        conn.execute(
            insert(accounts),
            [{"id": f"ACC{i:08d}", "customer_id": i + 1, "currency": "USD", "created_at": now}
             for i in range(N)],
        )  # fmt: skip


def recorded(store: SqlStore) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.execute(select(func.count()).select_from(balance_check_results)).scalar_one()
        )


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = CLOCK.now() + timedelta(seconds=seconds)
    while not check():
        if CLOCK.now() > deadline:
            pytest.fail(f"timed out after {seconds} s waiting for {what}")
        CLOCK.sleep_blocking(0.05)


@pytest.mark.timeout(120)
def test_a_worker_killed_mid_batch_the_retry_finishes_and_nobody_is_decided_twice(
    store: SqlStore, bank: BankSimulator, workers: Callable[[str], subprocess.Popen[bytes]]
) -> None:
    seed(store)
    night = CLOCK.now().astimezone(UTC).date()
    client = EngineClient(store, balance_check_registry(), CLOCK)
    victim = workers("victim")
    run, _ = client.trigger(
        JOB_NAME, {"business_date": night.isoformat()}, idempotency_key="resume-test"
    )

    wait_for(lambda: recorded(store) >= N // 5, 60, "the victim to record some customers")
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    killed_at = recorded(store)
    assert killed_at < N, "the kill must land mid-batch"
    requests_before = bank.stats()["requests"]
    workers("survivor")

    def finished() -> bool:
        row = store.run_get(run.id)
        return row is not None and row.status in (RunStatus.SUCCEEDED, RunStatus.FAILED)

    wait_for(finished, 60, "the survivor to finish the run")
    done = store.run_get(run.id)
    assert done is not None and done.status is RunStatus.SUCCEEDED, done.error_message
    history = [(a.node, a.status) for a in store.run_attempts(run.id)]
    assert history == [("victim", "lost"), ("survivor", "succeeded")]

    with store.engine.connect() as conn:
        r = balance_check_results.c
        per_customer = dict(
            conn.execute(
                select(r.customer_id, func.count()).where(r.business_date == night)
                .group_by(r.customer_id)
            ).all()
        )  # fmt: skip
        by_run = dict(conn.execute(select(r.run_id, func.count()).group_by(r.run_id)).all())
        outcomes = dict(conn.execute(select(r.result, func.count()).group_by(r.result)).all())
        logs = dict(
            conn.execute(
                select(error_logs.c.customer_id, func.count()).group_by(error_logs.c.customer_id)
            ).all()
        )
        events = dict(
            conn.execute(
                select(outbox.c.aggregate_id, func.count()).group_by(outbox.c.aggregate_id)
            ).all()
        )
    # every premium customer decided once for the night, none twice
    assert per_customer == dict.fromkeys(range(1, N + 1), 1)
    assert by_run == {run.id: N}  # both attempts belong to the one run
    assert set(logs.values()) <= {1} and len(logs) == outcomes.get("ERROR", 0) > 0
    assert set(events.values()) == {1} and len(events) == outcomes["FAIL"]
    summary = done.result
    assert summary["resumed_after"] >= killed_at  # the retry skipped what the victim recorded
    assert summary["processed"] + summary["resumed_after"] == N
    assert summary["passed"] + summary["failed"] + summary["errors"] == N
    # the survivor read only the customers still undecided (plus at most the lost chunk)
    read_again = bank.stats()["requests"] - requests_before
    assert read_again <= (N - killed_at) + 2 * (N - killed_at) // BATCH + BATCH
