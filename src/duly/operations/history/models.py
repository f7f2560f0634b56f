"""The execution history's value types: a filter, entries with their attempts, a page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

__all__ = ["KINDS", "MAX_LIMIT", "AttemptEntry", "HistoryEntry", "HistoryFilter", "HistoryPage"]

KINDS = ("transfer", "recurring")

MAX_LIMIT = 500


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    """Which entries: one customer's, optionally narrowed."""

    customer_id: int
    kinds: tuple[str, ...] = KINDS
    statuses: tuple[str, ...] | None = None
    scheduled_from: datetime | None = None  # inclusive
    scheduled_until: datetime | None = None  # exclusive
    account_id: str | None = None
    payment_id: int | None = None


@dataclass(frozen=True, slots=True)
class AttemptEntry:
    """One try."""

    attempt: int
    started_at: datetime
    finished_at: datetime
    status: str
    error_code: str | None
    error_message: str | None


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One operation occurrence in a customer's history."""

    kind: str  # transfer | recurring
    id: int
    payment_id: int | None
    reference: str
    description: str | None
    from_account: str  # masked
    to_account: str  # masked
    amount: Decimal
    currency: str
    scheduled_date: date  # unadjusted (recurring) or requested local date (transfer)
    execution_date: date
    scheduled_for: datetime
    executed_at: datetime | None
    status: str
    failure_code: str | None
    failure_message: str | None
    failure_description: str | None
    suggested_action: str | None
    attempts: tuple[AttemptEntry, ...]


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """A page of entries and the cursor of the next one (``None`` on the last page)."""

    entries: tuple[HistoryEntry, ...]
    next_cursor: str | None
