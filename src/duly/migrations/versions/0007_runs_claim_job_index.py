"""ix_runs_claim_job: claims of some jobs only read one ordered range per job

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 18:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_CLAIMABLE = sa.text("status IN ('queued', 'retrying')")


def upgrade() -> None:
    op.create_index(
        "ix_runs_claim_job",
        "runs",
        ["queue", "job_name", sa.literal_column("priority DESC"), "not_before", "id"],
        unique=False,
        postgresql_where=_CLAIMABLE,
        sqlite_where=_CLAIMABLE,
    )


def downgrade() -> None:
    op.drop_index("ix_runs_claim_job", table_name="runs")
