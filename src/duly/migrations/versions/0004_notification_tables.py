"""notification tables (deliveries, reminders)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 04:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, nullable: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("dedupe_key", sa.String(length=300), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("source_ref", sa.String(length=200), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("recipient_ref", sa.String(length=200), nullable=False),
        sa.Column("recipient_masked", sa.String(length=200), nullable=False),
        sa.Column("template", sa.String(length=64), nullable=False),
        sa.Column("locale", sa.String(length=35), nullable=True),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        _ts("next_attempt_at"),
        _ts("lease_until"),
        sa.Column("provider_code", sa.String(length=32), nullable=True),
        sa.Column("provider_ref", sa.String(length=200), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        _ts("created_at", False),
        _ts("updated_at", False),
        _ts("sent_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_deliveries_dedupe_key")),
    )
    due = sa.text("status IN ('pending', 'sending')")
    op.create_index(
        "ix_deliveries_due",
        "deliveries",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=due,
        sqlite_where=due,
    )
    op.create_index("ix_deliveries_source", "deliveries", ["source", "source_ref"], unique=False)

    op.create_table(
        "reminders",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("reminder_key", sa.String(length=300), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("ref_id", _ID, nullable=False),
        sa.Column("occurrence_key", sa.String(length=255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("customer_id", _ID, nullable=True),
        sa.Column("offset", sa.String(length=8), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        _ts("execute_at", False),
        _ts("send_at", False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("delivery_id", _ID, nullable=True),
        _ts("created_at", False),
        _ts("updated_at", False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reminders")),
        sa.UniqueConstraint("reminder_key", name=op.f("uq_reminders_reminder_key")),
    )
    op.create_index(
        "ix_reminders_occurrence", "reminders", ["occurrence_key", "status"], unique=False
    )
    op.create_index("ix_reminders_ref", "reminders", ["kind", "ref_id"], unique=False)

    op.create_table(
        "reminder_plans",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("occurrence_key", sa.String(length=255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        _ts("execute_at", False),
        _ts("planned_at", False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reminder_plans")),
        sa.UniqueConstraint(
            "occurrence_key", "version", name=op.f("uq_reminder_plans_occurrence_key_version")
        ),
    )
    op.create_table(
        "alert_notifications",
        sa.Column("alert_id", _ID, nullable=False),
        _ts("notified_at", False),
        sa.Column("rounds", sa.Integer(), nullable=False),
        sa.Column("occurrences", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("alert_id", name=op.f("pk_alert_notifications")),
    )


def downgrade() -> None:
    op.drop_table("alert_notifications")
    op.drop_table("reminder_plans")
    op.drop_index("ix_reminders_ref", table_name="reminders")
    op.drop_index("ix_reminders_occurrence", table_name="reminders")
    op.drop_table("reminders")
    op.drop_index("ix_deliveries_source", table_name="deliveries")
    op.drop_index("ix_deliveries_due", table_name="deliveries")
    op.drop_table("deliveries")
