"""``duly customers`` and ``duly accounts`` (CliRunner on a migrated SQLite file)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from duly.banking.customers import Customers
from duly.banking.ledger import LedgerBank
from duly.banking.schema import accounts, customer_pii, customers, ledger_transfers
from duly.cli import app
from duly.clock import SystemClock
from duly.engine.store.sql import SqlStore

RUN = CliRunner()


@pytest.fixture
def env(cli_store: SqlStore) -> SqlStore:
    return cli_store


def snapshot(store: SqlStore) -> tuple[int, int, int, int]:
    with store.engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in (customers, customer_pii, accounts, ledger_transfers)
        )


def cli(*args: str) -> tuple[int, str]:
    result = RUN.invoke(app, list(args))
    return result.exit_code, result.output


def test_customers_add_list_show(env: SqlStore) -> None:
    code, out = cli("customers", "add", "C-100", "--name", "Ada Lovelace", "--email", "ada@example.com",
                    "--phone", "+447700900123", "--tz", "Europe/London", "--tier", "premium",
                    "--min-balance", "5000.00", "--currency", "GBP", "--notify", '{"email": true}')  # fmt: skip
    assert code == 0, out
    assert out.strip() == "customer 1 added: C-100 (premium, Europe/London)"
    assert cli("customers", "add", "C-200")[0] == 0
    code, out = cli("customers", "list")
    assert code == 0 and "Ada Lovelace" in out and "GBP 5,000.00" in out and "C-200" in out
    code, out = cli("customers", "list", "--tier", "premium")
    assert "C-100" in out and "C-200" not in out
    row = Customers(env.engine, SystemClock()).get(1)
    assert (
        row is not None
        and row.min_balance_minor == 500_000
        and row.notification_prefs == {"email": True}
    )
    code, out = cli("customers", "show", "C-100")
    assert code == 0 and "ada@example.com" in out and "minimum GBP 5,000.00" in out
    assert cli("customers", "show", "1")[1] == out  # by id or external id


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["C-1", "--tier", "gold"], "tier"),
        (["C-1", "--tz", "Mars/Olympus"], "timezone"),
        (["C-1", "--tier", "premium", "--min-balance", "10.001", "--currency", "USD"], "decimals"),
        (
            ["C-1", "--tier", "premium", "--min-balance", "1e3x", "--currency", "USD"],
            "--min-balance",
        ),
        (["C-1", "--tier", "premium", "--min-balance", "-5", "--currency", "USD"], "negative"),
        (["C-1", "--tier", "premium", "--min-balance", "10"], "go together"),
        (["C-1", "--min-balance", "10", "--currency", "USD"], "premium"),
        (["C-1", "--tier", "premium", "--min-balance", "10", "--currency", "XXY"], "currency"),
        (["C-1", "--notify", "{nope"], "JSON"),
        (["C-EXISTS"], "exists"),
    ],
)
def test_bad_customer_input_exits_2_and_changes_nothing(
    env: SqlStore, args: list[str], message: str
) -> None:
    assert cli("customers", "add", "C-EXISTS")[0] == 0
    before = snapshot(env)
    code, out = cli("customers", "add", *args)
    assert code == 2 and message in out, out
    assert snapshot(env) == before


def test_accounts_open_list_close_with_masked_numbers(env: SqlStore) -> None:
    cli("customers", "add", "C-1", "--name", "Bo")
    code, out = cli("accounts", "open", "GB29NWBK60161331926819", "--customer", "C-1",
                    "--currency", "GBP", "--deposit", "1500.00", "--overdraft", "250.00")  # fmt: skip
    assert code == 0, out
    assert out.strip().splitlines()[-1] == (
        "account ****6819 opened for customer 1 in GBP, deposit GBP 1,500.00"
    )
    assert "GB29NWBK60161331926819" not in out  # nor in the ledger's log line
    assert (
        cli("accounts", "open", "GB00SAVE0000000000042", "--customer", "1", "--currency", "GBP")[0]
        == 0
    )
    balance = LedgerBank(env.engine, SystemClock()).get_balance("GB29NWBK60161331926819")
    assert balance.posted_minor == 150_000 and balance.overdraft_limit_minor == 25_000
    code, out = cli("accounts", "list", "--customer", "C-1")
    assert code == 0 and "****6819" in out and "GBP 1,500.00" in out and "****0042" in out
    assert "GB29NWBK60161331926819" not in out and "USD-FUNDING" not in out.upper()
    code, out = cli("customers", "show", "C-1")
    assert "****6819 GBP open" in out and "GB29NWBK" not in out
    code, out = cli("accounts", "close", "GB00SAVE0000000000042")
    assert code == 0 and out.strip().splitlines()[-1] == "account ****0042 closed"
    code, out = cli("accounts", "close", "GB00SAVE0000000000042")
    assert code == 2 and "already closed" in out
    assert LedgerBank(env.engine, SystemClock()).check().ok


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ACC-NEW-1", "--customer", "C-404", "--currency", "USD"], "no customer"),
        (["ACC-NEW-1", "--customer", "C-1", "--currency", "usdx"], "currency"),
        (
            ["ACC-NEW-1", "--customer", "C-1", "--currency", "USD", "--deposit", "12.345"],
            "decimals",
        ),
        (["ACC-NEW-1", "--customer", "C-1", "--currency", "USD", "--deposit", "-1"], "negative"),
        (
            ["ACC-NEW-1", "--customer", "C-1", "--currency", "USD", "--overdraft", "abc"],
            "--overdraft",
        ),
        (["ACC-OLD-1", "--customer", "C-1", "--currency", "USD", "--deposit", "5"], "exists"),
        (["", "--customer", "C-1", "--currency", "USD"], "1–64"),
    ],
)
def test_bad_account_input_exits_2_and_changes_nothing(
    env: SqlStore, args: list[str], message: str
) -> None:
    cli("customers", "add", "C-1")
    assert cli("accounts", "open", "ACC-OLD-1", "--customer", "C-1", "--currency", "USD",
               "--deposit", "10")[0] == 0  # fmt: skip
    before = snapshot(env)
    code, out = cli("accounts", "open", *args)
    assert code == 2 and message in out, out
    assert snapshot(env) == before
    assert cli("accounts", "close", "NOPE-0000")[0] == 2


def test_erase_removes_personal_data_only(env: SqlStore) -> None:
    cli(
        "customers",
        "add",
        "C-9",
        "--name",
        "Cy Young",
        "--email",
        "cy@example.com",
        "--phone",
        "+15550100",
    )
    code, out = cli("accounts", "open", "ACC-CY-0009", "--customer", "C-9", "--currency", "USD",
                    "--deposit", "99.99")  # fmt: skip
    assert code == 0, out
    ledger = LedgerBank(env.engine, SystemClock())
    before = ledger.check()
    code, out = cli("customers", "erase", "C-9")
    assert code == 2 and "--yes" in out
    code, out = cli("customers", "erase", "C-9", "--yes")
    assert code == 0 and "erased" in out and "ledger and history kept" in out
    code, out = cli("customers", "show", "C-9")
    assert "Cy Young" not in out and "cy@example.com" not in out and "personal data erased" in out
    assert "****0009 USD open" in out  # the customer and account remain
    after = ledger.check()
    assert after.ok and (after.transfers, after.credits_posted) == (
        before.transfers,
        before.credits_posted,
    )
    assert ledger.get_balance("ACC-CY-0009").posted_minor == 9_999
    assert "already erased" in cli("customers", "erase", "C-9", "--yes")[1]
    assert cli("customers", "erase", "C-404", "--yes")[0] == 2
