"""ACH returns of executed transfers and their reinitiations (payment_returns)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 21:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "payment_returns",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("transfer_id", _ID, nullable=False),
        sa.Column("original_id", _ID, nullable=False),
        sa.Column("code", sa.String(length=8), nullable=False),
        sa.Column("returned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("reinitiation_id", _ID, nullable=True),
        sa.Column("reversal_key", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_returns")),
        sa.ForeignKeyConstraint(
            ["transfer_id"],
            ["scheduled_transfers.id"],
            name=op.f("fk_payment_returns_transfer_id_scheduled_transfers"),
        ),
        sa.UniqueConstraint("transfer_id", name=op.f("uq_payment_returns_transfer_id")),
        sa.CheckConstraint(
            "decision IN ('reinitiated', 'refused')", name=op.f("ck_payment_returns_decision")
        ),
    )
    op.create_index(
        op.f("ix_payment_returns_original_id"), "payment_returns", ["original_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_payment_returns_original_id"), table_name="payment_returns")
    op.drop_table("payment_returns")
