"""Tables of the nightly balance check, on the engine's ``MetaData`` (migration ``0003``).

* ``balance_check_results``: one row per (business date, customer) — the unique key is
  what makes a rerun resume instead of re-checking (finance-rules.md §2.4, checklist 14).
  It records the outcome, never a balance.
* ``error_logs``: every customer the check could not decide, with its taxonomy code, and
  any other error a job flags for people to look at. Append-only except the resolution
  fields (``resolved``, ``resolved_at``, ``resolved_by``, ``resolution_notes``); database
  triggers refuse any other change and any delete.
"""

from __future__ import annotations

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

from duly.engine.store.schema import metadata
from duly.engine.store.types import IdType, UTCDateTime

__all__ = ["RESULTS", "balance_check_results", "error_logs"]

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
