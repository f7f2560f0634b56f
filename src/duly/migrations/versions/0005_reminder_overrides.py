"""per-operation reminder offsets (reminder_overrides)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 05:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "reminder_overrides",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("ref_id", _ID, nullable=False),
        sa.Column("offsets", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reminder_overrides")),
        sa.UniqueConstraint("kind", "ref_id", name=op.f("uq_reminder_overrides_kind_ref_id")),
        sa.CheckConstraint(
            "kind IN ('transfer', 'payment')", name=op.f("ck_reminder_overrides_kind")
        ),
    )


def downgrade() -> None:
    op.drop_table("reminder_overrides")
