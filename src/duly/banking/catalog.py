"""The error catalogue: every code a run, a transfer or a balance read can end with.

The ``error_codes`` table is seeded from the same list by migration ``0002`` (a test
checks the two agree). Operators and customers see ``suggested_action``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select

from duly.banking.schema import error_codes

__all__ = ["CATALOG", "ErrorCodeInfo", "describe", "error_code_get", "error_code_list"]


@dataclass(frozen=True, slots=True)
class ErrorCodeInfo:
    """One row of ``error_codes``."""

    code: str
    description: str
    severity: str  # critical | high | medium | low
    suggested_action: str
    transient: bool


CATALOG: tuple[ErrorCodeInfo, ...] = (
    ErrorCodeInfo("TIMEOUT", "The core banking system did not answer in time.", "medium",
                  "Retried automatically; if it persists, check the core banking system's health.", True),
    ErrorCodeInfo("NETWORK_ERROR", "The core banking system could not be reached.", "high",
                  "Retried automatically; check connectivity to the core banking system.", True),
    ErrorCodeInfo("API_ERROR", "The core banking system answered with an error status.", "medium",
                  "Retried automatically; if it persists, raise it with the core banking team.", True),
    ErrorCodeInfo("INVALID_RESPONSE", "The core banking system's answer could not be read.", "high",
                  "Retried automatically; report the malformed answer to the core banking team.", True),
    ErrorCodeInfo("MISSING_DATA", "A record or a required field was missing in the answer.", "medium",
                  "Check that the account exists in the core banking system.", False),
    ErrorCodeInfo("NULL_BALANCE", "The core banking system reported no balance for the account.", "medium",
                  "Check the account's data in the core banking system.", False),
    ErrorCodeInfo("NEGATIVE_BALANCE", "The balance is below what the account's overdraft allows.", "high",
                  "Investigate the account: its balance breaks its overdraft limit.", False),
    ErrorCodeInfo("INSUFFICIENT_FUNDS", "The account did not have enough available funds.", "low",
                  "Add funds before the next attempt, or change the payment's amount or date.", True),
    ErrorCodeInfo("ACCOUNT_CLOSED", "An account of the payment is closed.", "medium",
                  "Choose an open account; the payment will not be retried.", False),
    ErrorCodeInfo("IDEMPOTENCY_CONFLICT", "An idempotency key was reused with different details.", "critical",
                  "Nothing was posted. Investigate the caller: a key must never change its payment.", False),
    ErrorCodeInfo("VALIDATION_ERROR", "The request was not valid.", "medium",
                  "Correct the request; it will not be retried as is.", False),
    ErrorCodeInfo("AUTHORIZATION_REVOKED", "The customer revoked the authorisation for the payment.", "medium",
                  "A new authorisation is needed; the payment will not be retried.", False),
    ErrorCodeInfo("CANCELLED", "The run or payment was cancelled.", "low",
                  "None.", False),
    ErrorCodeInfo("LEASE_EXPIRED", "The node running the job stopped responding; the run was taken back.", "medium",
                  "Retried automatically; check the node that lost its lease.", True),
    ErrorCodeInfo("JOB_TIMEOUT", "The job exceeded its timeout and was stopped.", "high",
                  "Retried automatically; check what made the job slow.", True),
    ErrorCodeInfo("SHUTDOWN", "The node shut down before the run finished; it was handed back.", "low",
                  "None: another node runs it.", True),
    ErrorCodeInfo("INTERNAL", "An unexpected error in duly.", "high",
                  "Retried automatically; report it with the run id if it persists.", True),
    ErrorCodeInfo("UNKNOWN_JOB", "No job of that name is registered on the node.", "high",
                  "Deploy the code that defines the job, then retry the run.", False),
    ErrorCodeInfo("MISFIRE", "A scheduled fire was missed while no node was running.", "medium",
                  "Check why no node was running at the scheduled time.", False),
    ErrorCodeInfo("OVERLAP", "A fire was skipped or cancelled because a previous run was active.", "low",
                  "None, unless the job is regularly slower than its schedule.", False),
)  # fmt: skip

_BY_CODE = {info.code: info for info in CATALOG}


def describe(code: str) -> ErrorCodeInfo | None:
    """The catalogue entry for ``code``, if there is one."""
    return _BY_CODE.get(code)


def error_code_list(
    engine: Engine,
    *,
    severity: str | None = None,
    after: str | None = None,
    limit: int | None = None,
) -> list[ErrorCodeInfo]:
    """Rows of the ``error_codes`` table by code, optionally of one ``severity``.

    Page with ``after`` (the last code shown). The table, not :data:`CATALOG`, is read: it is
    what the database's other readers (reports, history) join with.
    """
    c = error_codes.c
    conds: list[Any] = []
    if severity is not None:
        conds.append(c.severity == severity)
    if after is not None:
        conds.append(c.code > after)
    query = select(error_codes).where(*conds).order_by(c.code)
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        return [_info(r) for r in conn.execute(query)]


def error_code_get(engine: Engine, code: str) -> ErrorCodeInfo | None:
    """The ``error_codes`` row of ``code``, if there is one."""
    with engine.connect() as conn:
        row = conn.execute(select(error_codes).where(error_codes.c.code == code)).one_or_none()
    return _info(row) if row is not None else None


def _info(row: Any) -> ErrorCodeInfo:
    return ErrorCodeInfo(
        code=row.code,
        description=row.description,
        severity=row.severity,
        suggested_action=row.suggested_action,
        transient=bool(row.transient),
    )
