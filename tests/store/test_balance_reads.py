"""Batched balance reads on the ledger (one query per chunk), on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import event

from duly.banking.customers import Customers, NewAccount
from duly.banking.errors import BankingError
from duly.banking.ledger import LedgerBank
from duly.banking.port import Balance, read_balances
from duly.clock import ManualClock
from duly.engine.store.sql import SqlStore


def test_get_balances_equals_single_reads_in_one_query_per_chunk(
    store: SqlStore, clock: ManualClock
) -> None:
    people = Customers(store.engine, clock)
    for i in range(30):
        people.open_account(NewAccount(f"ACC-{i:04d}", "USD", None, overdraft_limit_minor=i))
    bank = LedgerBank(store.engine, clock)
    for i in range(1, 30, 3):
        bank.fund(f"ACC-{i:04d}", 100 * i, "USD", f"fund-{i}")
    ids = [f"ACC-{i:04d}" for i in range(30)] + ["NOPE-1", "ACC-0003"]  # unknown, repeated
    queries: list[str] = []

    def count(_c: object, _cur: object, statement: str, *_: object) -> None:
        if "FROM accounts" in statement:
            queries.append(statement)

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        got = bank.get_balances(ids)
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    assert len(queries) == 1
    assert list(got) == ids[:-1]  # each id once, in order
    for i in range(30):
        one = got[f"ACC-{i:04d}"]
        assert isinstance(one, Balance) and one == bank.get_balance(f"ACC-{i:04d}")
    missing = got["NOPE-1"]
    assert isinstance(missing, BankingError) and missing.code == "MISSING_DATA"
    assert "NOPE-1" not in missing.message  # masked
    assert bank.get_balances([]) == {}


def test_read_balances_falls_back_to_single_reads_for_a_port_without_a_batch(
    store: SqlStore, clock: ManualClock
) -> None:
    Customers(store.engine, clock).open_account(NewAccount("ACC-ONLY-0001", "EUR", None))
    ledger = LedgerBank(store.engine, clock)

    class SingleReads:
        name, shares_transaction = "single", False

        def __init__(self) -> None:
            self.calls: list[str] = []

        def get_balance(self, account_id: str) -> Balance:
            self.calls.append(account_id)
            return ledger.get_balance(account_id)

    port = SingleReads()
    got = read_balances(port, ["ACC-ONLY-0001", "NOPE", "ACC-ONLY-0001"])
    assert port.calls == ["ACC-ONLY-0001", "NOPE"]
    assert got["ACC-ONLY-0001"] == ledger.get_balance("ACC-ONLY-0001")
    assert isinstance(got["NOPE"], BankingError) and got["NOPE"].code == "MISSING_DATA"
