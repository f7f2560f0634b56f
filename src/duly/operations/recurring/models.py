"""Recurring payments' tables and value types.

* ``recurring_payments``: the payment, its recurrence and its failure policy.
* ``recurring_occurrences``: unique on ``(payment_id, unadjusted_date)``, the occurrence key
  of finance-rules.md §2.4.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Final

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
    UniqueConstraint,
    text,
)

import duly.banking.schema  # noqa: F401  (accounts and customers: referenced below)
from duly.banking.money import from_minor
from duly.engine.store.schema import metadata
from duly.engine.store.types import IdType, UTCDateTime
from duly.operations.execution.models import (
    execution_columns,
    policy_columns,
)
from duly.operations.policy import FailurePolicy
from duly.operations.recurring.planning import PaymentPlan
from duly.operations.recurring.recurrence import Recurrence

__all__ = [
    "KEEP",
    "RECURRING_JOB",
    "Keep",
    "NewRecurringPayment",
    "OccurrenceRow",
    "PaymentChange",
    "PaymentRow",
    "recurring_occurrences",
    "recurring_payments",
]

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
    *policy_columns(),
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
    # The payment's customer, copied so a customer's history reads one index (migration 0014).
    Column("customer_id", IdType),
    *execution_columns(),
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
Index(
    "ix_recurring_occurrences_customer_history",
    recurring_occurrences.c.customer_id,
    recurring_occurrences.c.execute_at,
    recurring_occurrences.c.id,
)

RECURRING_JOB = "recurring.execute"


@dataclass(frozen=True, slots=True)
class NewRecurringPayment:
    """A recurring payment to set up.

    :param frequency: ``weekly``, ``monthly``, ``quarterly``, ``yearly`` or ``rrule``.
    :param day_of_month: 1–31 or -1 (last day) for monthly/quarterly/yearly; default: the
        start date's day (clamped to shorter months).
    :param weekday: 0 (Monday)–6 for weekly; default: the start date's weekday.
    :param rrule: for ``rrule``: e.g. ``FREQ=MONTHLY;BYMONTHDAY=-1``.
    :param on_final_failure: ``skip`` (keep paying later occurrences) or ``pause``.
    """

    request_key: str
    from_account: str
    to_account: str
    amount: str
    currency: str
    frequency: str
    start_date: date
    interval: int = 1
    day_of_month: int | None = None
    weekday: int | None = None
    rrule: str | None = None
    end_date: date | None = None
    count: int | None = None
    time_of_day: str = "09:00"
    timezone: str | None = None
    convention: str = "following"
    calendar: str | None = None
    memo: str | None = None
    customer_id: int | None = None
    bank: str = "ledger"
    policy: FailurePolicy = field(default_factory=FailurePolicy)
    on_final_failure: str = "skip"


class Keep(Enum):
    """The value of a :class:`PaymentChange` field that is not to change."""

    KEEP = "keep"


KEEP: Final = Keep.KEEP


@dataclass(frozen=True, slots=True)
class PaymentChange:
    """The terms of a recurring payment to change; a field left :data:`KEEP` stays.

    ``None`` clears ``memo``, ``end_date`` or ``count`` (no memo, no end). ``amount`` is a
    decimal string in the payment's currency; ``time_of_day`` is ``HH:MM``.
    """

    amount: str | Keep = KEEP
    memo: str | Keep | None = KEEP
    end_date: date | Keep | None = KEEP
    count: int | Keep | None = KEEP
    time_of_day: str | Keep = KEEP


@dataclass(frozen=True, slots=True)
class PaymentRow:
    """A stored recurring payment."""

    id: int
    request_key: str
    customer_id: int | None
    bank: str
    from_account: str
    to_account: str
    amount_minor: int
    currency: str
    memo: str | None
    frequency: str
    interval: int
    day_of_month: int | None
    weekday: int | None
    rrule: str | None
    start_date: date
    end_date: date | None
    count: int | None
    time_of_day: str
    timezone: str
    convention: str
    calendar: str | None
    policy: FailurePolicy
    on_final_failure: str
    status: str
    status_reason: str | None
    version: int
    next_index: int
    next_execute_at: datetime | None
    created_at: datetime

    @property
    def amount(self) -> Decimal:
        """The amount as a ``Decimal``."""
        return from_minor(self.amount_minor, self.currency)

    @property
    def plan(self) -> PaymentPlan:
        """The payment's occurrence plan."""
        return PaymentPlan(
            Recurrence(
                frequency=self.frequency,
                start=self.start_date,
                interval=self.interval,
                day_of_month=self.day_of_month,
                weekday=self.weekday,
                rrule=self.rrule,
                count=self.count,
                end=self.end_date,
            ),
            self.time_of_day,
            self.timezone,
            self.convention,
            self.calendar,
        )


@dataclass(frozen=True, slots=True)
class OccurrenceRow:
    """A stored occurrence of a recurring payment."""

    id: int
    payment_id: int
    seq: int
    unadjusted_date: date
    execution_date: date
    execute_at: datetime
    transfer_key: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    run_id: int | None
    error_code: str | None
    error_message: str | None
    executed_at: datetime | None


def payment_row(row: Any) -> PaymentRow:
    m = row._mapping
    return PaymentRow(
        id=int(m["id"]),
        request_key=m["request_key"],
        customer_id=m["customer_id"],
        bank=m["bank"],
        from_account=m["from_account"],
        to_account=m["to_account"],
        amount_minor=int(m["amount_minor"]),
        currency=m["currency"],
        memo=m["memo"],
        frequency=m["frequency"],
        interval=int(m["interval"]),
        day_of_month=m["day_of_month"],
        weekday=m["weekday"],
        rrule=m["rrule"],
        start_date=m["start_date"],
        end_date=m["end_date"],
        count=m["count"],
        time_of_day=m["time_of_day"],
        timezone=m["timezone"],
        convention=m["convention"],
        calendar=m["calendar"],
        policy=FailurePolicy.from_seconds(
            m["max_attempts"], m["retry_every_seconds"], m["retry_window_seconds"]
        ),
        on_final_failure=m["on_final_failure"],
        status=m["status"],
        status_reason=m["status_reason"],
        version=int(m["version"]),
        next_index=int(m["next_index"]),
        next_execute_at=m["next_execute_at"],
        created_at=m["created_at"],
    )


def occurrence_row(row: Any) -> OccurrenceRow:
    m = row._mapping
    return OccurrenceRow(
        id=int(m["id"]),
        payment_id=int(m["payment_id"]),
        seq=int(m["seq"]),
        unadjusted_date=m["unadjusted_date"],
        execution_date=m["execution_date"],
        execute_at=m["execute_at"],
        transfer_key=m["transfer_key"],
        status=m["status"],
        attempts=int(m["attempts"]),
        next_attempt_at=m["next_attempt_at"],
        run_id=m["run_id"],
        error_code=m["error_code"],
        error_message=m["error_message"],
        executed_at=m["executed_at"],
    )
