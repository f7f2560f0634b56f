"""Notification tables, on the engine's ``MetaData``.

* ``deliveries``: one message to one recipient on one channel — a customer notification, a
  payment reminder, an operations alert or a test. Unique on ``dedupe_key`` (also the
  idempotency key the channel is given). The recipient is stored masked; the address is
  looked up when sending (``recipient_ref``), so erasing a customer's personal data also
  stops what is queued for them.
* ``reminders``: the plan of payment reminders, one row per
  ``(occurrence, version, offset, channel)``, each with the delivery that sends it.
* ``reminder_plans``: which ``(occurrence, version)`` has been planned.
* ``reminder_overrides``: reminder offsets set on one scheduled transfer (``kind``
  ``transfer``) or recurring payment (``payment``), in place of the customer's and the
  configured ones (migration ``0005``).
* ``alert_notifications``: when each alert was last sent to its routes (the dedupe window).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from duly.engine.store.schema import metadata
from duly.engine.store.types import IdType, UTCDateTime

__all__ = [
    "alert_notifications",
    "deliveries",
    "reminder_overrides",
    "reminder_plans",
    "reminders",
]

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("dedupe_key", String(300), nullable=False, unique=True),
    # outbox | reminder | alert | test
    Column("source", String(16), nullable=False),
    Column("source_ref", String(200)),
    Column("channel", String(16), nullable=False),
    # customer:<id> | ops:<sha256 prefix of the configured address>
    Column("recipient_ref", String(200), nullable=False),
    Column("recipient_masked", String(200), nullable=False),
    Column("template", String(64), nullable=False),
    Column("locale", String(35)),
    Column("context", JSON, nullable=False),
    # pending | sending | sent | failed | cancelled
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime()),
    Column("lease_until", UTCDateTime()),
    Column("provider_code", String(32)),
    Column("provider_ref", String(200)),
    Column("last_error", Text),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("sent_at", UTCDateTime()),
)
_due = text("status IN ('pending', 'sending')")
Index("ix_deliveries_due", deliveries.c.next_attempt_at, postgresql_where=_due, sqlite_where=_due)
Index("ix_deliveries_source", deliveries.c.source, deliveries.c.source_ref)

reminders = Table(
    "reminders",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    # (occurrence_key, version, offset, channel): finance-rules.md §5
    Column("reminder_key", String(300), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),  # transfer | occurrence
    Column("ref_id", IdType, nullable=False),  # the transfer's or the payment's id
    Column("occurrence_key", String(255), nullable=False),
    Column("version", Integer, nullable=False),
    Column("customer_id", IdType),
    Column("offset", String(8), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("execute_at", UTCDateTime(), nullable=False),
    Column("send_at", UTCDateTime(), nullable=False),
    # planned | cancelled | skipped (a quiet-hours clash, or past)
    Column("status", String(16), nullable=False),
    Column("reason", Text),
    Column("delivery_id", IdType),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)
Index("ix_reminders_occurrence", reminders.c.occurrence_key, reminders.c.status)
Index("ix_reminders_ref", reminders.c.kind, reminders.c.ref_id)
_handed_over = text("delivery_id IS NOT NULL")
# Reminders sent, per customer by send time: the execution history's keyset (migration 0014).
Index(
    "ix_reminders_customer_history",
    reminders.c.customer_id,
    reminders.c.send_at,
    reminders.c.id,
    postgresql_where=_handed_over,
    sqlite_where=_handed_over,
)

reminder_plans = Table(
    "reminder_plans",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("occurrence_key", String(255), nullable=False),
    Column("version", Integer, nullable=False),
    Column("execute_at", UTCDateTime(), nullable=False),
    Column("planned_at", UTCDateTime(), nullable=False),
    UniqueConstraint("occurrence_key", "version"),
)

reminder_overrides = Table(
    "reminder_overrides",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # transfer | payment
    Column("ref_id", IdType, nullable=False),
    Column("offsets", JSON, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    UniqueConstraint("kind", "ref_id"),
    CheckConstraint("kind IN ('transfer', 'payment')", name="kind"),
)

alert_notifications = Table(
    "alert_notifications",
    metadata,
    Column("alert_id", IdType, primary_key=True),
    Column("notified_at", UTCDateTime(), nullable=False),
    Column("rounds", Integer, nullable=False),
    Column("occurrences", Integer, nullable=False),
)
