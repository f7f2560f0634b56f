"""The execution history's value types: a filter, one entry per operation occurrence, a page.

One model covers every kind of operation a customer has: a scheduled transfer, an occurrence
of a recurring payment, a reminder sent about one of them, and a night's balance check. Each
kind fills the fields it has; the others are ``None`` (a balance check has no amount, since
no balance or amount is ever shown for it, and no counterparty).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

__all__ = [
    "KINDS",
    "MAX_LIMIT",
    "CustomerInfo",
    "HistoryEntry",
    "HistoryFilter",
    "HistoryPage",
]

#: Every kind, in the order of entries scheduled at the same instant (last first).
KINDS = ("transfer", "recurring", "reminder", "balance_check")

#: The largest page the query answers.
MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    """Which entries: one customer's, optionally narrowed.

    ``since`` is inclusive and ``until`` exclusive, both on the scheduled instant. An
    ``account_id``, ``currency`` or amount bound leaves out balance checks (they have none).
    Amounts are decimals in each entry's own currency.
    """

    customer_id: int
    kinds: tuple[str, ...] = KINDS
    statuses: tuple[str, ...] | None = None
    since: datetime | None = None
    until: datetime | None = None
    account_id: str | None = None
    currency: str | None = None
    amount_min: Decimal | None = None
    amount_max: Decimal | None = None
    payment_id: int | None = None

    @property
    def needs_money(self) -> bool:
        """Whether the filter names an account, a currency or an amount."""
        return any(
            v is not None
            for v in (self.account_id, self.currency, self.amount_min, self.amount_max)
        )


@dataclass(frozen=True, slots=True)
class CustomerInfo:
    """Who the history is of: what a statement's heading and its times need."""

    id: int
    external_id: str
    name: str | None  # None once the personal data was erased
    timezone: str

    @property
    def display_name(self) -> str:
        """The name, or the bank's reference once the name was erased."""
        return self.name or self.external_id


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One operation occurrence in a customer's history; times in the customer's zone.

    :ivar id: unique across kinds (``transfer:12``), the order's tie-breaker.
    :ivar operation_id: the transfer's, occurrence's, reminder's or check result's own id.
    :ivar occurrence: which occurrence of the operation, as the customer knows it: the
        requested date (transfer), the unadjusted date (recurring), the offset and channel
        (reminder), the business date (balance check).
    :ivar counterparty: the account paid (a reminder: of the payment reminded of), masked.
    :ivar failure_reason: the catalogue's description of ``failure_code``.
    :ivar run_id: the engine run of the latest attempt, when there is one.
    """

    kind: str
    id: str
    operation_id: int
    payment_id: int | None
    occurrence: str
    reference: str | None
    description: str | None
    from_account: str | None
    counterparty: str | None
    amount: Decimal | None
    currency: str | None
    status: str
    scheduled_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    failure_code: str | None
    failure_reason: str | None
    suggested_action: str | None
    run_id: int | None


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """A page of entries and the cursor of the next one (``None`` on the last page)."""

    entries: tuple[HistoryEntry, ...]
    next_cursor: str | None
