"""Scheduled transfers' tables and value types.

* ``scheduled_transfers``: one-off transfers at a local date and time.
* ``payment_returns``: ACH returns reported for executed transfers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
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
    text,
)

import duly.banking.schema  # noqa: F401  (accounts and customers: referenced below)
from duly.banking.money import from_minor
from duly.engine.store.schema import metadata
from duly.engine.store.types import IdType, UTCDateTime
from duly.operations.execution.models import execution_columns, policy_columns
from duly.operations.policy import FailurePolicy

__all__ = ["TRANSFER_JOB", "NewTransfer", "TransferRow", "payment_returns", "scheduled_transfers"]


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
    *policy_columns(),
    *execution_columns(),
    CheckConstraint("amount_minor > 0", name="amount_positive"),
    CheckConstraint(
        "status IN ('scheduled', 'executing', 'executed', 'failed', 'cancelled')", name="status"
    ),
)

# A customer's transfers newest first, tie-broken by id: the history's keyset (migration 0014).
Index(
    "ix_scheduled_transfers_customer_history",
    scheduled_transfers.c.customer_id,
    scheduled_transfers.c.execute_at,
    scheduled_transfers.c.id,
)

Index(
    "ix_scheduled_transfers_due",
    scheduled_transfers.c.next_attempt_at,
    postgresql_where=text("status IN ('scheduled', 'executing')"),
    sqlite_where=text("status IN ('scheduled', 'executing')"),
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

TRANSFER_JOB = "transfers.execute"


@dataclass(frozen=True, slots=True)
class NewTransfer:
    """A transfer to schedule.

    :param request_key: the caller's idempotency key (1–255 characters).
    :param amount: a decimal string in the currency's major unit (``"125.50"``).
    :param local_date: the date wanted, in ``timezone`` (before business-day adjustment).
    :param local_time: ``HH:MM`` on the execution date, in ``timezone``.
    :param timezone: IANA zone; default: the customer's.
    :param convention: business-day convention (``following`` by default).
    :param calendar: the rail (``US-FED``, ``GB-BACS``, ``TARGET``) or a calendar code;
        ``None``: weekends only.
    :param bank: which bank moves the money (``ledger`` or a registered name).
    """

    request_key: str
    from_account: str
    to_account: str
    amount: str
    currency: str
    local_date: date
    local_time: str = "09:00"
    timezone: str | None = None
    convention: str = "following"
    calendar: str | None = None
    memo: str | None = None
    customer_id: int | None = None
    bank: str = "ledger"
    policy: FailurePolicy = field(default_factory=FailurePolicy)


@dataclass(frozen=True, slots=True)
class TransferRow:
    """A stored scheduled transfer."""

    id: int
    request_key: str
    transfer_key: str
    customer_id: int | None
    bank: str
    from_account: str
    to_account: str
    amount_minor: int
    currency: str
    memo: str | None
    local_date: date
    local_time: str
    timezone: str
    convention: str
    calendar: str | None
    execution_date: date
    execute_at: datetime
    status: str
    version: int
    attempts: int
    next_attempt_at: datetime | None
    run_id: int | None
    error_code: str | None
    error_message: str | None
    executed_at: datetime | None
    cancelled_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def amount(self) -> Decimal:
        """The amount as a ``Decimal``."""
        return from_minor(self.amount_minor, self.currency)


def transfer_row(row: Any) -> TransferRow:
    m = row._mapping
    return TransferRow(
        id=int(m["id"]),
        request_key=m["request_key"],
        transfer_key=m["transfer_key"],
        customer_id=m["customer_id"],
        bank=m["bank"],
        from_account=m["from_account"],
        to_account=m["to_account"],
        amount_minor=int(m["amount_minor"]),
        currency=m["currency"],
        memo=m["memo"],
        local_date=m["local_date"],
        local_time=m["local_time"],
        timezone=m["timezone"],
        convention=m["convention"],
        calendar=m["calendar"],
        execution_date=m["execution_date"],
        execute_at=m["execute_at"],
        status=m["status"],
        version=int(m["version"]),
        attempts=int(m["attempts"]),
        next_attempt_at=m["next_attempt_at"],
        run_id=m["run_id"],
        error_code=m["error_code"],
        error_message=m["error_message"],
        executed_at=m["executed_at"],
        cancelled_at=m["cancelled_at"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )
