"""The banking error taxonomy: :class:`BankingError` with a code, each code transient or terminal.

Transient failures may succeed if tried again later (a timeout, a 5xx, insufficient funds
today); terminal ones will not (the account is closed, the key was reused with other
fields). Jobs turn a :class:`BankingError` into the engine's
:class:`~duly.engine.errors.JobError` with :func:`to_job_error`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from duly.engine.errors import JobError

__all__ = ["TRANSIENT_CODES", "BankingError", "ErrorCode", "is_transient", "to_job_error"]


class ErrorCode(StrEnum):
    """Codes a bank adapter reports (a subset of the ``error_codes`` table)."""

    TIMEOUT = "TIMEOUT"  #: the bank did not answer within the call's timeout
    NETWORK_ERROR = "NETWORK_ERROR"  #: no connection, reset, DNS…
    API_ERROR = "API_ERROR"  #: the bank answered with an error status (5xx, 429, unexpected 4xx)
    INVALID_RESPONSE = "INVALID_RESPONSE"  #: the answer is not the JSON the protocol promises
    MISSING_DATA = "MISSING_DATA"  #: the record or a required field is not there
    NULL_BALANCE = "NULL_BALANCE"  #: the bank reported a balance of null
    NEGATIVE_BALANCE = "NEGATIVE_BALANCE"  #: a balance below what the account's overdraft allows
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"  #: the debit would exceed credits + overdraft
    ACCOUNT_CLOSED = "ACCOUNT_CLOSED"  #: an account of the transfer is closed
    IDEMPOTENCY_CONFLICT = "IDEMPOTENCY_CONFLICT"  #: the key was used before with other fields
    VALIDATION_ERROR = "VALIDATION_ERROR"  #: the request itself is wrong (currency, amount, state)


#: Codes worth trying again later (finance-rules.md §4: only transient failures are retried).
TRANSIENT_CODES: frozenset[str] = frozenset(
    {
        ErrorCode.TIMEOUT,
        ErrorCode.NETWORK_ERROR,
        ErrorCode.API_ERROR,
        ErrorCode.INVALID_RESPONSE,
        ErrorCode.INSUFFICIENT_FUNDS,
        # engine codes that also reach a payment's history
        "LEASE_EXPIRED",
        "JOB_TIMEOUT",
        "INTERNAL",
        "SHUTDOWN",
    }
)


def is_transient(code: str) -> bool:
    """Whether a failure with ``code`` may succeed when tried again later."""
    return code in TRANSIENT_CODES


class BankingError(Exception):
    """A failed banking call, classified.

    :param code: an :class:`ErrorCode` value.
    :param message: one line for people; never a balance, full account number or secret.
    :param transient: whether trying again later may help; defaults to the code's class.
    """

    def __init__(
        self,
        code: ErrorCode | str,
        message: str = "",
        *,
        transient: bool | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.code = str(code)
        self.message = message or self.code
        self.transient = is_transient(self.code) if transient is None else transient
        self.details = details or {}
        super().__init__(f"{self.code}: {self.message}")


def to_job_error(error: BankingError) -> JobError:
    """The engine error for ``error``: same code, retryable exactly when transient."""
    return JobError(error.code, error.message, retryable=error.transient, details=error.details)
