"""schedules.paused_set_by: an operator's pause or resume outlives upserts of the definition

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 09:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("schedules", sa.Column("paused_set_by", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("schedules") as batch:
        batch.drop_column("paused_set_by")
