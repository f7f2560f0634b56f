"""``duly serve --demo``: a small demo bank, seeded idempotently, whose money moves within minutes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from duly.banking.ledger import LedgerBank
from duly.banking.schema import accounts, customers, ledger_transfers
from duly.clock import ManualClock, SystemClock
from duly.engine.client import EngineClient
from duly.engine.store.sql import SqlStore
from duly.operations import RecurringPayments, ScheduledTransfers, operations_registry
from duly.operations.demo import DEMO_CUSTOMERS, seed_demo_bank
from duly.operations.recurring.models import recurring_occurrences, recurring_payments
from duly.operations.transfers.models import scheduled_transfers
from duly.testing import EngineHarness

TABLES = (customers, accounts, ledger_transfers, scheduled_transfers, recurring_payments)


def counts(store: SqlStore) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {
            t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one()) for t in TABLES
        }


async def test_the_demo_bank_is_seeded_once_and_its_money_moves_within_minutes(
    store: SqlStore, clock: ManualClock
) -> None:
    client = EngineClient(store, operations_registry, clock)
    first = seed_demo_bank(client)
    assert (first.customers, first.transfers, first.recurring) == (len(DEMO_CUSTOMERS) + 1, 1, 1)
    assert first.accounts == len(DEMO_CUSTOMERS) + 3 and first.schedules == ["operations.sweep"]
    seeded = counts(store)
    again = seed_demo_bank(client)
    assert (again.customers, again.accounts, again.transfers, again.recurring) == (0, 0, 0, 0)
    assert counts(store) == seeded  # nothing duplicated
    ledger = LedgerBank(store.engine, clock)
    assert ledger.check().ok
    premium = [r for r in DEMO_CUSTOMERS if r[3] == "premium"]
    assert premium and all(r[4] for r in premium)

    (transfer,) = ScheduledTransfers(client).find()
    (rent,) = RecurringPayments(client).find()
    assert timedelta(minutes=3) <= transfer.execute_at - clock.now() <= timedelta(minutes=5)
    assert rent.frequency == "monthly" and rent.status == "active"
    async with EngineHarness(store, operations_registry, clock) as h:
        await h.advance(timedelta(minutes=6))
    done = ScheduledTransfers(client).get(transfer.id)
    assert done is not None and done.status == "executed"
    with store.engine.connect() as conn:
        first_rent = conn.execute(
            select(recurring_occurrences.c.status, recurring_occurrences.c.execute_at)
            .order_by(recurring_occurrences.c.unadjusted_date)
            .limit(1)
        ).one()
    # the first rent occurrence is due now unless today is not a Bacs business day
    assert first_rent.status in ("executed", "scheduled")
    assert ledger.check().ok


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_serve_demo_twice_on_the_embedded_store(tmp_path: Path) -> None:
    """Two real ``duly serve --demo`` starts on ./duly.db: the second adds nothing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DULY_")}
    env["DULY_LOGGING__LEVEL"] = "warning"
    lines = []
    for _ in range(2):
        proc = subprocess.Popen([sys.executable, "-m", "duly", "serve", "--demo", "--port", "0"], cwd=tmp_path,
                                env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)  # fmt: skip
        assert proc.stderr is not None
        while True:
            line = proc.stderr.readline().decode()
            assert line, "duly serve exited before seeding"
            if line.startswith("duly "):  # the start line, after the demo was seeded
                break
            if line.startswith("demo bank:") and " account(s)" in line:  # the seeding summary
                lines.append(line.strip())
        SystemClock().sleep_blocking(2)  # the node is up (its signal handlers too)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
        proc.stderr.close()
    assert lines[0].startswith(f"demo bank: {len(DEMO_CUSTOMERS) + 1} customer(s)")
    assert lines[1].startswith("demo bank: 0 customer(s), 0 account(s), 0 scheduled transfer(s), 0")
    store = SqlStore(f"sqlite:///{tmp_path / 'duly.db'}")
    try:
        got = counts(store)
        assert got["customers"] > len(DEMO_CUSTOMERS)  # plus the nightly check's premium customers
        assert got["scheduled_transfers"] == 1 and got["recurring_payments"] == 1
        assert LedgerBank(store.engine, SystemClock()).check().ok
    finally:
        store.dispose()
