"""Ledger invariants under random operations, replays, conflicts, voids and reversals.

A hypothesis state machine drives the real ledger (SQLite file and PostgreSQL) and a plain
Python model side by side. After every step (finance-rules.md §3, checklist 16–19):

* Σ debits_posted = Σ credits_posted and Σ debits_pending = Σ credits_pending;
* no account without an overdraft has debits_posted + debits_pending > credits_posted,
  and none with one goes past it;
* each key is at most one transfer; every balance equals the model's;
* replaying every request made so far changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import delete, func, select

from duly.banking.customers import Customers, NewAccount
from duly.banking.errors import BankingError
from duly.banking.ledger import LedgerBank
from duly.banking.schema import accounts, ledger_transfers
from duly.clock import ManualClock
from duly.engine.store.schema import alerts
from duly.engine.store.sql import SqlStore

LIMITS = {"A": 0, "B": 0, "C": 3_000}
KEYS = st.sampled_from([f"k{i}" for i in range(20)])
ACCOUNTS = st.sampled_from(sorted(LIMITS))
AMOUNTS = st.integers(min_value=1, max_value=4_000)


@dataclass
class Acct:
    dp: int = 0  # debits posted
    cp: int = 0
    dpend: int = 0
    cpend: int = 0


def machine_for(store: SqlStore, clock: ManualClock) -> type[RuleBasedStateMachine]:
    class LedgerMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            with store.engine.begin() as conn:
                conn.execute(
                    delete(ledger_transfers).where(ledger_transfers.c.pending_id.is_not(None))
                )
                conn.execute(
                    delete(ledger_transfers).where(ledger_transfers.c.reverses_id.is_not(None))
                )
                conn.execute(delete(ledger_transfers))
                conn.execute(delete(accounts))
                conn.execute(delete(alerts))
            people = Customers(store.engine, clock)
            for name, limit in LIMITS.items():
                people.open_account(NewAccount(name, "USD", None, overdraft_limit_minor=limit))
            self.bank = LedgerBank(store.engine, clock)
            self.model = {name: Acct() for name in LIMITS}
            self.model["BANK-FUNDING-USD"] = Acct()
            self.transfers: dict[str, tuple[str, str, int, str, str | None]] = {}
            self.requests: list[tuple[str, tuple[object, ...]]] = []
            self.resolved: set[str] = set()
            self.reversed: dict[str, int] = {}
            for name in ("A", "B"):
                self.bank.fund(name, 5_000, "USD", f"fund-{name}")
                self._post("BANK-FUNDING-USD", name, 5_000)
                self.transfers[f"fund-{name}"] = ("BANK-FUNDING-USD", name, 5_000, "posted", None)

        # -- model helpers -------------------------------------------------------------

        def _post(self, src: str, dst: str, amount: int) -> None:
            self.model[src].dp += amount
            self.model[dst].cp += amount

        def _room(self, src: str) -> int:
            a = self.model[src]
            return a.cp + LIMITS.get(src, 10**12) - a.dp - a.dpend

        def _expect(
            self, key: str, fields: tuple[str, str, int, str, str | None], call: object
        ) -> str:
            """Run ``call``; compare the outcome kind with what the model says."""
            assert callable(call)
            try:
                res = call()
            except BankingError as exc:
                return exc.code
            return "exists" if res.exists else "created"

        # -- rules ---------------------------------------------------------------------

        @rule(src=ACCOUNTS, dst=ACCOUNTS, amount=AMOUNTS, key=KEYS)
        def transfer(self, src: str, dst: str, amount: int, key: str) -> None:
            if src == dst:
                return
            fields = (src, dst, amount, "posted", None)
            got = self._expect(
                key, fields, lambda: self.bank.transfer(src, dst, amount, "USD", key)
            )
            if key in self.transfers:
                assert got == (
                    "exists" if self.transfers[key] == fields else "IDEMPOTENCY_CONFLICT"
                )
                return
            if amount > self._room(src):
                assert got == "INSUFFICIENT_FUNDS"
                return
            assert got == "created"
            self._post(src, dst, amount)
            self.transfers[key] = fields
            self.requests.append(("transfer", (src, dst, amount, "USD", key)))

        @rule(src=ACCOUNTS, dst=ACCOUNTS, amount=AMOUNTS, key=KEYS)
        def reserve(self, src: str, dst: str, amount: int, key: str) -> None:
            if src == dst:
                return
            fields = (src, dst, amount, "pending", None)
            got = self._expect(key, fields, lambda: self.bank.reserve(src, dst, amount, "USD", key))
            if key in self.transfers:
                assert got == (
                    "exists" if self.transfers[key] == fields else "IDEMPOTENCY_CONFLICT"
                )
                return
            if amount > self._room(src):
                assert got == "INSUFFICIENT_FUNDS"
                return
            assert got == "created"
            self.model[src].dpend += amount
            self.model[dst].cpend += amount
            self.transfers[key] = fields
            self.requests.append(("reserve", (src, dst, amount, "USD", key)))

        @rule(pending=KEYS, amount=st.none() | AMOUNTS, void=st.booleans())
        def resolve(self, pending: str, amount: int | None, void: bool) -> None:
            key = f"{pending}:{'void' if void else 'post'}"
            record = self.transfers.get(pending)
            if void:
                got = self._expect(key, (), lambda: self.bank.void_pending(pending, key))
            else:
                got = self._expect(key, (), lambda: self.bank.post_pending(pending, key, amount))
            if record is None:
                assert got == "MISSING_DATA"
                return
            if key in self.transfers:
                stored = self.transfers[key]
                want = record[2] if amount is None or void else amount
                assert got == ("exists" if stored[2] == want else "IDEMPOTENCY_CONFLICT")
                return
            if record[3] != "pending" or pending in self.resolved:
                assert got == "VALIDATION_ERROR"
                return
            src, dst, reserved = record[0], record[1], record[2]
            posted = 0 if void else (reserved if amount is None else amount)
            if not void and not 0 < posted <= reserved:
                assert got == "VALIDATION_ERROR"
                return
            assert got == "created"
            self.model[src].dpend -= reserved
            self.model[dst].cpend -= reserved
            if posted:
                self._post(src, dst, posted)
            self.resolved.add(pending)
            kind = "void_pending" if void else "post_pending"
            self.transfers[key] = (src, dst, reserved if void else posted, kind, pending)
            self.requests.append(
                ("void" if void else "post", (pending, key, None if void else amount))
            )

        @rule(original=KEYS, amount=st.none() | AMOUNTS)
        def reverse(self, original: str, amount: int | None) -> None:
            key = f"{original}:rev:{amount}"
            record = self.transfers.get(original)
            got = self._expect(key, (), lambda: self.bank.reverse(original, key, amount))
            if record is None:
                assert got == "MISSING_DATA"
                return
            if key in self.transfers:
                assert got == "exists"
                return
            if record[3] not in ("posted", "post_pending"):
                assert got == "VALIDATION_ERROR"
                return
            src, dst = record[1], record[0]  # the other way
            left = record[2] - self.reversed.get(original, 0)
            want = left if amount is None else amount
            if not 0 < want <= left:
                assert got == "VALIDATION_ERROR"
                return
            if want > self._room(src):
                assert got == "INSUFFICIENT_FUNDS"
                return
            assert got == "created"
            self._post(src, dst, want)
            self.reversed[original] = self.reversed.get(original, 0) + want
            self.transfers[key] = (src, dst, want, "posted", None)
            self.requests.append(("reverse", (original, key, amount)))

        @rule()
        def replay_everything(self) -> None:
            before = self.bank.check()
            for verb, args in self.requests:
                if verb == "transfer":
                    res = self.bank.transfer(*args)  # type: ignore[arg-type]
                elif verb == "reserve":
                    res = self.bank.reserve(*args)  # type: ignore[arg-type]
                elif verb == "post":
                    res = self.bank.post_pending(*args)  # type: ignore[arg-type]
                elif verb == "void":
                    res = self.bank.void_pending(*args[:2])  # type: ignore[arg-type]
                else:
                    res = self.bank.reverse(*args)  # type: ignore[arg-type]
                assert res.exists
            assert self.bank.check() == before

        # -- invariants ----------------------------------------------------------------

        @invariant()
        def ledger_balances(self) -> None:
            check = self.bank.check()
            assert check.ok, check.problems
            assert check.debits_posted == check.credits_posted
            assert check.debits_pending == check.credits_pending
            with store.engine.connect() as conn:
                rows = {r.id: r for r in conn.execute(select(accounts)).all()}
                n = conn.execute(select(func.count()).select_from(ledger_transfers)).scalar()
                distinct = conn.execute(
                    select(func.count(func.distinct(ledger_transfers.c.id)))
                ).scalar()
            assert n == distinct == len(self.transfers)
            for name, acct in self.model.items():
                row = rows[name]
                assert (
                    row.debits_posted,
                    row.credits_posted,
                    row.debits_pending,
                    row.credits_pending,
                ) == (acct.dp, acct.cp, acct.dpend, acct.cpend), name
                if name in LIMITS:
                    assert (
                        row.debits_posted + row.debits_pending <= row.credits_posted + LIMITS[name]
                    )

    return LedgerMachine


@pytest.mark.slow
def test_ledger_invariants_hold_under_random_operations(
    store: SqlStore, clock: ManualClock, db_url: str
) -> None:
    examples = 40 if db_url.startswith("sqlite") else 20
    run_state_machine_as_test(
        machine_for(store, clock),
        settings=settings(
            max_examples=examples,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
            database=None,
        ),
    )
