"""schedules.broken_reason, broken_at: a schedule whose definition cannot be evaluated is set aside

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("schedules", sa.Column("broken_reason", sa.Text(), nullable=True))
    op.add_column("schedules", sa.Column("broken_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("schedules") as batch:
        batch.drop_column("broken_at")
        batch.drop_column("broken_reason")
