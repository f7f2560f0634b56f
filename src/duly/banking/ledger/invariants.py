"""The ledger's invariants, checked over every account and transfer (``duly ledger check``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from duly.banking.ledger.core import PENDING, POST_PENDING, POSTED, LedgerCore
from duly.banking.money import mask_account
from duly.banking.schema import accounts, ledger_transfers


@dataclass(frozen=True, slots=True)
class LedgerCheck:
    """The ledger's invariants, checked (``duly ledger check``)."""

    accounts: int
    transfers: int
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """Whether every invariant holds."""
        return not self.problems


def _balances_from_transfers(transfers: list[Any]) -> dict[str, tuple[int, int, int, int]]:
    """(debits_posted, credits_posted, debits_pending, credits_pending) per account, recomputed."""
    resolved = {t.pending_id for t in transfers if t.pending_id is not None}
    out: dict[str, list[int]] = {}
    for t in transfers:
        amount = int(t.amount)
        debit = out.setdefault(t.debit_account_id, [0, 0, 0, 0])
        credit = out.setdefault(t.credit_account_id, [0, 0, 0, 0])
        if t.kind in (POSTED, POST_PENDING):
            debit[0] += amount
            credit[1] += amount
        elif t.kind == PENDING and t.id not in resolved:
            debit[2] += amount
            credit[3] += amount
    return {k: (v[0], v[1], v[2], v[3]) for k, v in out.items()}


class LedgerInvariants(LedgerCore):
    """The ledger check."""

    def check(self) -> LedgerCheck:
        """Check every invariant of finance-rules.md §3 against the stored rows.

        Σ debits = Σ credits (posted and pending); no limited account beyond its overdraft;
        each account's balances equal the sums of its transfers; no pending transfer
        resolved twice; no transfer reversed beyond its amount.
        """
        problems: list[str] = []
        with self.engine.connect() as conn:
            rows = conn.execute(select(accounts)).all()
            transfers = conn.execute(select(ledger_transfers)).all()
        sums = {
            key: sum(int(getattr(r, key)) for r in rows)
            for key in ("debits_posted", "credits_posted", "debits_pending", "credits_pending")
        }
        if sums["debits_posted"] != sums["credits_posted"]:
            problems.append(
                f"Σ debits_posted {sums['debits_posted']} ≠ Σ credits_posted {sums['credits_posted']}"
            )
        if sums["debits_pending"] != sums["credits_pending"]:
            problems.append(
                f"Σ debits_pending {sums['debits_pending']} ≠ Σ credits_pending {sums['credits_pending']}"
            )
        expected = _balances_from_transfers(list(transfers))
        for r in rows:
            limit = r.overdraft_limit_minor
            if limit is not None and r.debits_posted + r.debits_pending > r.credits_posted + limit:
                problems.append(f"account {mask_account(r.id)} is beyond its overdraft limit")
            want = expected.get(r.id, (0, 0, 0, 0))
            have = (r.debits_posted, r.credits_posted, r.debits_pending, r.credits_pending)
            if tuple(int(v) for v in have) != want:
                problems.append(f"account {mask_account(r.id)}: balances differ from its transfers")
        resolutions: dict[str, int] = {}
        reversed_total: dict[str, int] = {}
        amounts = {t.id: int(t.amount) for t in transfers}
        for t in transfers:
            if t.pending_id is not None:
                resolutions[t.pending_id] = resolutions.get(t.pending_id, 0) + 1
            if t.reverses_id is not None:
                reversed_total[t.reverses_id] = reversed_total.get(t.reverses_id, 0) + int(t.amount)
        problems += [
            f"pending transfer {p} resolved {n} times" for p, n in resolutions.items() if n > 1
        ]
        problems += [
            f"transfer {t} reversed beyond its amount"
            for t, total in reversed_total.items()
            if total > amounts.get(t, 0)
        ]
        return LedgerCheck(
            accounts=len(rows),
            transfers=len(transfers),
            debits_posted=sums["debits_posted"],
            credits_posted=sums["credits_posted"],
            debits_pending=sums["debits_pending"],
            credits_pending=sums["credits_pending"],
            problems=tuple(problems),
        )
