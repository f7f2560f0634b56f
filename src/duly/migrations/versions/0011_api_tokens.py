"""tokens: API tokens with a role, stored as a hash

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        _ts("created_at", False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        _ts("expires_at"),
        _ts("revoked_at"),
        sa.Column("revoked_by", sa.String(length=200), nullable=True),
        _ts("last_used_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tokens")),
    )
    # a name is unique among the tokens not revoked, so it can be reused after a revoke
    active = sa.text("revoked_at IS NULL")
    op.create_index(
        "uq_tokens_active_name",
        "tokens",
        ["name"],
        unique=True,
        postgresql_where=active,
        sqlite_where=active,
    )


def downgrade() -> None:
    op.drop_index("uq_tokens_active_name", table_name="tokens")
    op.drop_table("tokens")
