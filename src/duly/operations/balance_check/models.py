"""The nightly balance check's names and value types: job, events, results, decisions."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from duly.banking.errors import ErrorCode

__all__ = [
    "BELOW_MINIMUM_EVENT",
    "ERROR_CODES",
    "JOB_NAME",
    "SCHEDULE_NAME",
    "Decision",
    "PremiumCustomer",
    "Result",
]

JOB_NAME = "daily_balance_check"

SCHEDULE_NAME = "daily_balance_check"

#: The outbox event a ``FAIL`` writes (for the customer notification).
BELOW_MINIMUM_EVENT = "balance_check.below_minimum"

#: The codes a customer's ``ERROR`` carries (plus ``INTERNAL`` for a bug in duly).
ERROR_CODES: tuple[str, ...] = (
    ErrorCode.TIMEOUT,
    ErrorCode.MISSING_DATA,
    ErrorCode.INVALID_RESPONSE,
    ErrorCode.API_ERROR,
    ErrorCode.NETWORK_ERROR,
    ErrorCode.NULL_BALANCE,
    ErrorCode.NEGATIVE_BALANCE,
)


class Result(StrEnum):
    """A customer's outcome for a night."""

    PASS = "PASS"
    FAIL = "FAIL"
    ERROR = "ERROR"


@dataclass(frozen=True, slots=True)
class PremiumCustomer:
    """A premium customer to check: the minimum (minor units) and the accounts it applies to."""

    id: int
    min_balance_minor: int | None
    currency: str | None
    accounts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Decision:
    """A decided check (``PASS`` or ``FAIL``): never carries the balance itself."""

    result: Result
    accounts_checked: int
