"""The money-movement CLI: ledger check, transfers, recurring payments (account numbers masked)."""

from __future__ import annotations

from datetime import date

import pytest
from typer.testing import CliRunner

from duly.banking.customers import Customers, NewAccount, NewCustomer
from duly.banking.ledger import LedgerBank
from duly.cli import app
from duly.clock import SystemClock
from duly.engine.client import EngineClient
from duly.engine.store.sql import SqlStore
from duly.operations import NewRecurringPayment, RecurringPayments, operations_registry


@pytest.fixture
def env(cli_store: SqlStore) -> SqlStore:
    store = cli_store
    clock = SystemClock()
    people = Customers(store.engine, clock)
    eve = people.add(NewCustomer("eve", timezone="UTC"))
    people.open_account(NewAccount("GB00EVE00000000001234", "GBP", eve.id))
    people.open_account(NewAccount("GB00SHOP0000000005678", "GBP", None))
    LedgerBank(store.engine, clock).fund("GB00EVE00000000001234", 50_000, "GBP", "fund")
    return store


def test_ledger_check_passes_and_fails(env: SqlStore) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["ledger", "check"])
    assert ok.exit_code == 0 and "ledger ok" in ok.output
    with env.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE accounts SET credits_posted = credits_posted + 1 "
                             "WHERE id = 'GB00SHOP0000000005678'")  # fmt: skip
    bad = runner.invoke(app, ["ledger", "check"])
    assert bad.exit_code == 1 and "FAIL" in bad.output


def test_transfers_schedule_list_cancel(env: SqlStore) -> None:
    runner = CliRunner()
    args = ["transfers", "schedule", "--from", "GB00EVE00000000001234", "--to", "GB00SHOP0000000005678",
            "--amount", "12.34", "--currency", "GBP", "--date", "2099-01-05", "--calendar", "GB-BACS",
            "--idempotency-key", "k1"]  # fmt: skip
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "GBP 12.34 ****1234 → ****5678" in first.output and "scheduled" in first.output
    assert "already exists" in runner.invoke(app, args).output
    listed = runner.invoke(app, ["transfers", "list"])
    assert "****1234" in listed.output and "GB00EVE00000000001234" not in listed.output
    assert runner.invoke(app, ["transfers", "cancel", "1"]).output.strip() == "transfer 1 cancelled"
    again = runner.invoke(app, ["transfers", "cancel", "1"])
    assert again.exit_code == 2 and "cancelled" in again.output
    bad = runner.invoke(app, [*args[:-1], "k2", "--amount", "1.234"])
    assert bad.exit_code == 2 and "decimals" in bad.output


def test_recurring_commands(env: SqlStore) -> None:
    client = EngineClient(env, operations_registry, SystemClock())
    pay, _ = RecurringPayments(client).create(NewRecurringPayment(
        request_key="r", from_account="GB00EVE00000000001234", to_account="GB00SHOP0000000005678",
        amount="5.00", currency="GBP", frequency="monthly", start_date=date(2099, 1, 31),
        calendar="GB-BACS",
    ))  # fmt: skip
    runner = CliRunner()
    preview = runner.invoke(app, ["recurring", "preview", str(pay.id), "--count", "3"])
    assert preview.exit_code == 0
    # unadjusted date, execution date (Sat 28 Feb → Mon 2 Mar under "following"), instant
    assert preview.output.splitlines()[1] == "2099-02-28 2099-03-02 2099-03-02T09:00:00+00:00"
    assert runner.invoke(app, ["recurring", "pause", str(pay.id)]).output.strip().endswith("paused")
    assert (
        runner.invoke(app, ["recurring", "resume", str(pay.id)]).output.strip().endswith("active")
    )
    assert "monthly/1" in runner.invoke(app, ["recurring", "list"]).output
    assert (
        runner.invoke(app, ["recurring", "cancel", str(pay.id)])
        .output.strip()
        .endswith("cancelled")
    )
    assert runner.invoke(app, ["recurring", "pause", str(pay.id)]).exit_code == 2


async def test_transfers_return_records_and_reinitiates(env: SqlStore) -> None:
    from datetime import timedelta

    from duly.clock import ManualClock
    from duly.operations import NewTransfer, ScheduledTransfers
    from duly.testing import EngineHarness

    clock = ManualClock(SystemClock().now())
    async with EngineHarness(env, operations_registry, clock) as h:
        row, _ = ScheduledTransfers(h.client).create(NewTransfer(
            request_key="ach", from_account="GB00EVE00000000001234",
            to_account="GB00SHOP0000000005678", amount="10.00", currency="GBP",
            local_date=clock.now().date() + timedelta(days=1), local_time="12:00",
        ))  # fmt: skip
        await h.advance(timedelta(days=5))
    runner = CliRunner()
    bad = runner.invoke(app, ["transfers", "return", str(row.id), "--code", "XX"])
    assert bad.exit_code == 2 and "R followed by two digits" in bad.output
    missing = runner.invoke(app, ["transfers", "return", "999", "--code", "R01"])
    assert missing.exit_code == 2 and "no scheduled transfer 999" in missing.output
    ok = runner.invoke(app, ["transfers", "return", str(row.id), "--code", "R01"])
    assert ok.exit_code == 0, ok.output
    assert f"transfer {row.id} returned R01: reinitiated as transfer" in ok.output
    again = runner.invoke(app, ["transfers", "return", str(row.id), "--code", "R07"])
    assert again.exit_code == 2 and "already returned with R01" in again.output
