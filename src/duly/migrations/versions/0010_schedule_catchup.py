"""schedules.catchup_*: a catch-up spanning several scheduler passes carries its count of late fires

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_COUNTS = ("catchup_late", "catchup_missed")
_TIMES = ("catchup_first_late", "catchup_last_late")


def upgrade() -> None:
    for name in _COUNTS:
        op.add_column(
            "schedules", sa.Column(name, sa.Integer(), server_default="0", nullable=False)
        )
    for name in _TIMES:
        op.add_column("schedules", sa.Column(name, sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("schedules") as batch:
        for name in (*_TIMES, *_COUNTS):
            batch.drop_column(name)
