"""audit trail: hash-chained events, signed checkpoints, the chain head, guards against edits

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

GENESIS = "0" * 64
# The columns an event is born with; the sealer may only fill in seq, prev_hash and hash.
_FIXED = (
    "id",
    "txid",
    "at",
    "actor",
    "actor_name",
    "actor_role",
    "action",
    "object_type",
    "object_id",
    "request_id",
    "details",
)


def _pg_guard(table: str, allow_update: str) -> str:
    """A trigger function for ``table``: deletes only through the prune gate, updates only if ``allow_update``."""
    gate = (
        ""
        if table == "audit_head"
        else ("IF EXISTS (SELECT 1 FROM audit_prune_gate) THEN RETURN OLD; END IF;")
    )
    return f"""
CREATE FUNCTION duly_{table}_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        {gate}
        RAISE EXCEPTION 'duly audit: {table} rows cannot be deleted outside pruning'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF {allow_update} THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'duly audit: {table} rows cannot be changed'
        USING ERRCODE = 'insufficient_privilege';
END $$;
"""


_PG_GUARDS = {
    # The sealer fills in seq, prev_hash and hash once; nothing else ever changes.
    "audit_events": (
        "OLD.seq IS NULL AND NEW.seq IS NOT NULL AND "
        f"({', '.join(f'NEW.{c}' for c in _FIXED)}) IS NOT DISTINCT FROM "
        f"({', '.join(f'OLD.{c}' for c in _FIXED)})"
    ),
    "audit_checkpoints": "false",
    "audit_head": "NEW.id = OLD.id AND NEW.seq >= OLD.seq",
}
_PG_NO_TRUNCATE = """
CREATE FUNCTION duly_audit_no_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'duly audit: % cannot be truncated', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;
"""


def _sqlite_guards() -> list[str]:
    changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in _FIXED)
    deny = "BEGIN SELECT RAISE(ABORT, 'duly audit: {what}'); END"
    gate_closed = "NOT EXISTS (SELECT 1 FROM audit_prune_gate)"
    return [
        f"CREATE TRIGGER audit_events_guard_update BEFORE UPDATE ON audit_events "
        f"WHEN OLD.seq IS NOT NULL OR NEW.seq IS NULL OR {changed} "
        + deny.format(what="audit_events rows cannot be changed"),
        f"CREATE TRIGGER audit_events_guard_delete BEFORE DELETE ON audit_events "
        f"WHEN {gate_closed} "
        + deny.format(what="audit_events rows cannot be deleted outside pruning"),
        "CREATE TRIGGER audit_checkpoints_guard_update BEFORE UPDATE ON audit_checkpoints "
        + deny.format(what="audit_checkpoints rows cannot be changed"),
        f"CREATE TRIGGER audit_checkpoints_guard_delete BEFORE DELETE ON audit_checkpoints "
        f"WHEN {gate_closed} "
        + deny.format(what="audit_checkpoints rows cannot be deleted outside pruning"),
        "CREATE TRIGGER audit_head_guard_update BEFORE UPDATE ON audit_head "
        "WHEN NEW.id IS NOT OLD.id OR NEW.seq < OLD.seq "
        + deny.format(what="audit_head cannot move back"),
        "CREATE TRIGGER audit_head_guard_delete BEFORE DELETE ON audit_head "
        + deny.format(what="audit_head rows cannot be deleted"),
    ]


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("txid", sa.BigInteger(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("actor_name", sa.String(length=200), nullable=True),
        sa.Column("actor_role", sa.String(length=32), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("object_type", sa.String(length=64), nullable=False),
        sa.Column("object_id", sa.String(length=200), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=True),
        sa.Column("hash", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
        sa.UniqueConstraint("seq", name=op.f("uq_audit_events_seq")),
    )
    op.create_index("ix_audit_events_txid_id", "audit_events", ["txid", "id"])
    op.create_index("ix_audit_events_object", "audit_events", ["object_type", "object_id"])
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_checkpoints")),
    )
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("sealed_txid", sa.BigInteger(), nullable=False),
        sa.Column("sealed_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    op.create_table(
        "audit_prune_gate",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_prune_gate")),
    )
    op.execute(
        sa.text(
            "INSERT INTO audit_head (id, seq, hash, sealed_txid, sealed_id) "
            f"VALUES (1, 0, '{GENESIS}', 0, 0)"
        )
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE audit_events ALTER COLUMN txid SET DEFAULT (pg_current_xact_id()::text::bigint)"
        )
        op.execute(_PG_NO_TRUNCATE)
        for table, allow_update in _PG_GUARDS.items():
            op.execute(_pg_guard(table, allow_update))
            op.execute(
                f"CREATE TRIGGER {table}_guard BEFORE UPDATE OR DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION duly_{table}_guard()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION duly_audit_no_truncate()"
            )
    else:
        for statement in _sqlite_guards():
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in ("audit_events", "audit_checkpoints", "audit_head"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_guard ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS duly_{table}_guard()")
        op.execute("DROP FUNCTION IF EXISTS duly_audit_no_truncate()")
    op.drop_table("audit_prune_gate")
    op.drop_table("audit_head")
    op.drop_table("audit_checkpoints")
    op.drop_index("ix_audit_events_at", table_name="audit_events")
    op.drop_index("ix_audit_events_object", table_name="audit_events")
    op.drop_index("ix_audit_events_txid_id", table_name="audit_events")
    op.drop_table("audit_events")
