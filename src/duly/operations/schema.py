"""Operations tables, on the engine's ``MetaData``.

* ``scheduled_transfers``: one-off transfers at a local date and time.
* ``recurring_payments`` and their ``recurring_occurrences`` (unique on
  ``(payment_id, unadjusted_date)``, the occurrence key of finance-rules.md §2.4).
* ``payment_attempts``: one row per try of a transfer or occurrence, kept as long as the
  operation history (the engine's ``job_executions`` are pruned after 90 days).
* ``outbox``: events written in the same transaction as the state change they describe
  (finance-rules.md §2.5, checklist 27); a relay publishes them later.

A transfer and an occurrence share the execution columns (``status``, ``attempts``,
``next_attempt_at``, ``run_attempt``, ``run_id``, ``error_code``, ``error_message``,
``executed_at``, ``transfer_key``), so one executor serves both (:mod:`duly.operations.execution`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
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
    text,
)

import duly.banking.schema  # noqa: F401  (accounts and customers: referenced below)
from duly.engine.store.schema import metadata
from duly.engine.store.types import IdType, UTCDateTime

__all__ = [
    "outbox",
    "payment_attempts",
    "payment_returns",
    "recurring_occurrences",
    "recurring_payments",
    "scheduled_transfers",
]


def _execution_columns() -> list[Column[Any]]:
    """The columns the executor reads and writes on a transfer or an occurrence."""
    return [
        Column("transfer_key", String(255), nullable=False, unique=True),
        Column("execute_at", UTCDateTime(), nullable=False),
        Column("status", String(16), nullable=False),
        Column("attempts", Integer, nullable=False, server_default="0"),
        Column("next_attempt_at", UTCDateTime()),
        # The attempt number the latest engine run was enqueued for, and that run.
        Column("run_attempt", Integer, nullable=False, server_default="0"),
        Column("run_id", IdType),
        Column("error_code", String(64)),
        Column("error_message", Text),
        Column("executed_at", UTCDateTime()),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("updated_at", UTCDateTime(), nullable=False),
    ]


def _policy_columns() -> list[Column[Any]]:
    """The failure policy for transient failures (finance-rules.md §4)."""
    return [
        Column("max_attempts", Integer, nullable=False),
        Column("retry_every_seconds", Integer, nullable=False),
        Column("retry_window_seconds", Integer, nullable=False),
    ]


scheduled_transfers = Table(
    "scheduled_transfers",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("request_key", String(255), nullable=False, unique=True),
    Column("request_hash", String(64), nullable=False),
    Column("customer_id", IdType, ForeignKey("customers.id")),
    Column("bank", String(32), nullable=False, server_default="ledger"),
    Column("from_account", String(64), nullable=False),
    Column("to_account", String(64), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("memo", String(140)),
    Column("local_date", Date, nullable=False),
    Column("local_time", String(5), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("convention", String(24), nullable=False),
    Column("calendar", String(32)),
    Column("execution_date", Date, nullable=False),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("cancelled_at", UTCDateTime()),
    *_policy_columns(),
    *_execution_columns(),
    CheckConstraint("amount_minor > 0", name="amount_positive"),
    CheckConstraint(
        "status IN ('scheduled', 'executing', 'executed', 'failed', 'cancelled')", name="status"
    ),
)
Index(
    "ix_scheduled_transfers_customer",
    scheduled_transfers.c.customer_id,
    scheduled_transfers.c.execute_at,
)
Index(
    "ix_scheduled_transfers_due",
    scheduled_transfers.c.next_attempt_at,
    postgresql_where=text("status IN ('scheduled', 'executing')"),
    sqlite_where=text("status IN ('scheduled', 'executing')"),
)

recurring_payments = Table(
    "recurring_payments",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("request_key", String(255), nullable=False, unique=True),
    Column("request_hash", String(64), nullable=False),
    Column("customer_id", IdType, ForeignKey("customers.id")),
    Column("bank", String(32), nullable=False, server_default="ledger"),
    Column("from_account", String(64), nullable=False),
    Column("to_account", String(64), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("memo", String(140)),
    # weekly | monthly | quarterly | yearly | rrule
    Column("frequency", String(16), nullable=False),
    Column("interval", Integer, nullable=False, server_default="1"),
    Column("day_of_month", Integer),  # 1..31, or -1 for the last day
    Column("weekday", Integer),  # 0 = Monday (weekly)
    Column("rrule", Text),
    Column("start_date", Date, nullable=False),
    Column("end_date", Date),
    Column("count", Integer),
    Column("time_of_day", String(5), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("convention", String(24), nullable=False),
    Column("calendar", String(32)),
    *_policy_columns(),
    # skip: keep paying later occurrences after a final failure; pause: pause the payment.
    Column("on_final_failure", String(8), nullable=False, server_default="skip"),
    Column("status", String(16), nullable=False),
    Column("status_reason", Text),
    Column("version", Integer, nullable=False, server_default="1"),
    # The next occurrence to materialise: its index k and its execution instant.
    Column("next_index", Integer, nullable=False, server_default="0"),
    Column("next_execute_at", UTCDateTime()),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    CheckConstraint("amount_minor > 0", name="amount_positive"),
    CheckConstraint("status IN ('active', 'paused', 'cancelled', 'completed')", name="status"),
)
Index("ix_recurring_payments_customer", recurring_payments.c.customer_id)
Index(
    "ix_recurring_payments_due",
    recurring_payments.c.next_execute_at,
    postgresql_where=text("status IN ('active', 'paused')"),
    sqlite_where=text("status IN ('active', 'paused')"),
)

recurring_occurrences = Table(
    "recurring_occurrences",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("payment_id", IdType, ForeignKey("recurring_payments.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("unadjusted_date", Date, nullable=False),
    Column("execution_date", Date, nullable=False),
    *_execution_columns(),
    UniqueConstraint("payment_id", "unadjusted_date"),
    CheckConstraint(
        "status IN ('scheduled', 'executing', 'retrying', 'executed', 'failed', 'skipped', "
        "'cancelled')",
        name="status",
    ),
)
Index(
    "ix_recurring_occurrences_due",
    recurring_occurrences.c.next_attempt_at,
    postgresql_where=text("status IN ('scheduled', 'executing', 'retrying')"),
    sqlite_where=text("status IN ('scheduled', 'executing', 'retrying')"),
)
Index("ix_recurring_occurrences_execute_at", recurring_occurrences.c.execute_at)

payment_attempts = Table(
    "payment_attempts",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # transfer | occurrence
    Column("ref_id", IdType, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("run_id", IdType),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=False),
    Column("status", String(16), nullable=False),  # succeeded | failed
    Column("error_code", String(64)),
    Column("error_message", Text),
    UniqueConstraint("kind", "ref_id", "attempt"),
)

payment_returns = Table(
    "payment_returns",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column(
        "transfer_id", IdType, ForeignKey("scheduled_transfers.id"), nullable=False, unique=True
    ),
    Column("original_id", IdType, nullable=False, index=True),  # first presentment of the chain
    Column("code", String(8), nullable=False),  # Nacha return code, e.g. R01
    Column("returned_at", UTCDateTime(), nullable=False),
    Column("decision", String(16), nullable=False),  # reinitiated | refused
    Column("reason", Text, nullable=False),
    Column("reinitiation_id", IdType),  # the scheduled transfer presenting it again
    Column("reversal_key", String(255)),  # the ledger reversal, for ledger transfers
    Column("created_at", UTCDateTime(), nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("event_type", String(64), nullable=False),
    Column("aggregate", String(32), nullable=False),
    Column("aggregate_id", String(64), nullable=False),
    Column("dedupe_key", String(300), nullable=False, unique=True),
    Column("payload", JSON, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("published_at", UTCDateTime()),
)
Index(
    "ix_outbox_unpublished",
    outbox.c.id,
    postgresql_where=text("published_at IS NULL"),
    sqlite_where=text("published_at IS NULL"),
)
Index("ix_outbox_aggregate", outbox.c.aggregate, outbox.c.aggregate_id)
