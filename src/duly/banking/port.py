"""The banking port: what duly asks of a bank, whichever implements it.

Implementations: :class:`~duly.banking.ledger.LedgerBank` (double-entry in duly's own
database, the default) and :class:`~duly.banking.http.HttpBank` (a core-banking REST API;
``duly bank-sim`` serves the same protocol). Every failure is a
:class:`~duly.banking.errors.BankingError` with a taxonomy code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from duly.banking.errors import BankingError, ErrorCode
from duly.banking.money import from_minor

__all__ = [
    "Balance",
    "BalanceReads",
    "BankingPort",
    "TransferRequest",
    "TransferResult",
    "balances_one_by_one",
    "read_balances",
]

#: What a batched balance read returns: each account id's balance, or why it failed.
BalanceReads = dict[str, "Balance | BankingError"]


@dataclass(frozen=True, slots=True)
class Balance:
    """An account's balance in minor units; the ``Decimal`` properties are for the edges.

    ``available = posted - pending_debits``: the one balance duly checks against
    thresholds (finance-rules.md checklist 15).
    """

    account_id: str
    currency: str
    posted_minor: int
    pending_debits_minor: int
    overdraft_limit_minor: int | None = 0

    @property
    def available_minor(self) -> int:
        """Posted balance less debits reserved by pending transfers."""
        return self.posted_minor - self.pending_debits_minor

    @property
    def posted(self) -> Decimal:
        """The posted balance as a ``Decimal``."""
        return from_minor(self.posted_minor, self.currency)

    @property
    def pending_debits(self) -> Decimal:
        """Debits reserved by pending transfers, as a ``Decimal``."""
        return from_minor(self.pending_debits_minor, self.currency)

    @property
    def available(self) -> Decimal:
        """``posted - pending_debits`` as a ``Decimal``."""
        return from_minor(self.available_minor, self.currency)


@dataclass(frozen=True, slots=True)
class TransferRequest:
    """One transfer of a set-based call (:meth:`LedgerBank.transfer_many`)."""

    from_account: str
    to_account: str
    amount_minor: int
    currency: str
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class TransferResult:
    """A transfer as the bank recorded it.

    :ivar id: the transfer's id, which is the idempotency key it was created with.
    :ivar status: ``posted`` or ``pending`` (two-phase), ``posted``/``voided``/``expired``
        for the resolution of a pending one.
    :ivar exists: ``True`` when this call found the transfer already recorded with the same
        fields (a replay), ``False`` when this call created it.
    """

    id: str
    debit_account_id: str
    credit_account_id: str
    amount_minor: int
    currency: str
    status: str
    created_at: datetime | None
    exists: bool = False

    @property
    def amount(self) -> Decimal:
        """The amount as a ``Decimal``."""
        return from_minor(self.amount_minor, self.currency)


class BankingPort(Protocol):
    """A bank duly can move money with.

    ``shares_transaction`` says whether ``transfer(..., conn=c)`` writes on duly's own
    connection ``c`` (the built-in ledger: the posting commits with the run's completion);
    an external bank ignores ``conn`` and is made exactly-once by the idempotency key alone.
    """

    name: str
    shares_transaction: bool

    def get_balance(self, account_id: str) -> Balance:
        """The account's balance.

        :raises BankingError: ``MISSING_DATA`` for an unknown account, or the adapter's codes.
        """
        ...

    def get_balances(self, account_ids: Iterable[str]) -> BalanceReads:
        """Several accounts' balances at once: each id maps to its :class:`Balance` or to the
        :class:`BankingError` its own read would have raised (one account's failure never
        fails the others). Every id asked for is in the answer.

        The default (for a class that subclasses this protocol) reads them one by one; the
        ledger answers a chunk with one query, the http bank with one request.
        """
        return balances_one_by_one(self, account_ids)

    def transfer(
        self,
        from_account: str,
        to_account: str,
        amount_minor: int,
        currency: str,
        idempotency_key: str,
        *,
        conn: Any = None,
    ) -> TransferResult:
        """Move ``amount_minor`` from ``from_account`` to ``to_account``, at most once per key.

        The same key with the same fields returns the recorded transfer (``exists=True``);
        with other fields it raises ``IDEMPOTENCY_CONFLICT`` and posts nothing.
        """
        ...

    def get_transfer(self, idempotency_key: str) -> TransferResult | None:
        """The transfer created with ``idempotency_key``, if any."""
        ...


def balances_one_by_one(port: BankingPort, account_ids: Iterable[str]) -> BalanceReads:
    """:meth:`BankingPort.get_balances` by :meth:`~BankingPort.get_balance` for each id."""
    out: BalanceReads = {}
    for account_id in account_ids:
        if account_id in out:
            continue
        try:
            out[account_id] = port.get_balance(account_id)
        except BankingError as exc:
            out[account_id] = exc
    return out


def read_balances(port: Any, account_ids: Iterable[str]) -> BalanceReads:
    """``port.get_balances(account_ids)``, or one read per id for a port without it.

    An id the port left out of its answer maps to ``MISSING_DATA``. Anything but a
    :class:`BankingError` (a bug) propagates.
    """
    ids = list(dict.fromkeys(account_ids))
    batched = getattr(port, "get_balances", None)
    got: BalanceReads = batched(ids) if callable(batched) else balances_one_by_one(port, ids)
    for account_id in ids:
        if account_id not in got:
            got[account_id] = BankingError(
                ErrorCode.MISSING_DATA, "the bank's answer left an account out"
            )
    return got
