"""The nightly balance check's names, value types and tables: job, events, results, decisions."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

from duly.banking.errors import ErrorCode
from duly.engine.store.schema import metadata
from duly.engine.store.types import IdType, UTCDateTime

__all__ = [
    "BELOW_MINIMUM_EVENT",
    "ERROR_CODES",
    "JOB_NAME",
    "RESULTS",
    "SCHEDULE_NAME",
    "Decision",
    "PremiumCustomer",
    "Result",
    "balance_check_results",
    "error_logs",
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


# -- tables (migration 0003) ------------------------------------------------------
# Tables of the nightly balance check, on the engine's ``MetaData`` (migration ``0003``).
#
# * ``balance_check_results``: one row per (business date, customer) — the unique key is
#   what makes a rerun resume instead of re-checking (finance-rules.md §2.4, checklist 14).
#   It records the outcome, never a balance.
# * ``error_logs``: every customer the check could not decide, with its taxonomy code, and
#   any other error a job flags for people to look at. Append-only except the resolution
#   fields (``resolved``, ``resolved_at``, ``resolved_by``, ``resolution_notes``); database
#   triggers refuse any other change and any delete.

#: The outcomes a customer's check can have.
RESULTS = ("PASS", "FAIL", "ERROR")

balance_check_results = Table(
    "balance_check_results",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("run_id", IdType, nullable=False),
    Column("business_date", Date, nullable=False),
    Column("customer_id", IdType, ForeignKey("customers.id"), nullable=False),
    Column("result", String(8), nullable=False),
    Column("error_code", String(64)),
    Column("attempts", Integer, nullable=False),
    Column("accounts_checked", Integer, nullable=False, server_default="0"),
    Column("checked_at", UTCDateTime(), nullable=False),
    UniqueConstraint("business_date", "customer_id", name="uq_balance_check_results_date_customer"),
    CheckConstraint("result IN ('PASS', 'FAIL', 'ERROR')", name="result"),
    CheckConstraint("(result = 'ERROR') = (error_code IS NOT NULL)", name="error_code_iff_error"),
)
Index("ix_balance_check_results_run", balance_check_results.c.run_id)
Index(
    "ix_balance_check_results_customer",
    balance_check_results.c.customer_id,
    balance_check_results.c.business_date,
)
# A customer's checks by time, tie-broken by id: the execution history's keyset (migration 0014).
Index(
    "ix_balance_check_results_customer_history",
    balance_check_results.c.customer_id,
    balance_check_results.c.checked_at,
    balance_check_results.c.id,
)

error_logs = Table(
    "error_logs",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("run_id", IdType),
    Column("job_name", String(200), nullable=False),
    Column("customer_id", IdType, ForeignKey("customers.id")),
    Column("business_date", Date),
    Column("error_code", String(64), nullable=False),
    Column("message", Text, nullable=False),
    Column("retry_count", Integer, nullable=False, server_default="0"),
    # Kept for engineers; never shown by the CLI, the API or the dashboard.
    Column("stack_trace", Text),
    Column("logged_at", UTCDateTime(), nullable=False),
    Column("resolved", Boolean, nullable=False, server_default=false()),
    Column("resolved_at", UTCDateTime()),
    Column("resolved_by", String(200)),
    Column("resolution_notes", Text),
)
Index("ix_error_logs_code", error_logs.c.error_code)
Index("ix_error_logs_logged_at", error_logs.c.logged_at)
Index("ix_error_logs_customer", error_logs.c.customer_id)
