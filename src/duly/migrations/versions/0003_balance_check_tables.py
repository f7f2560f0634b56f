"""balance check tables (results, error logs)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 04:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

#: error_logs columns that never change once written (the rest are the resolution).
_IMMUTABLE = (
    "id", "run_id", "job_name", "customer_id", "business_date", "error_code", "message",
    "retry_count", "stack_trace", "logged_at",
)  # fmt: skip


def upgrade() -> None:
    op.create_table(
        "balance_check_results",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("run_id", _ID, nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("customer_id", _ID, nullable=False),
        sa.Column("result", sa.String(length=8), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("accounts_checked", sa.Integer(), server_default="0", nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "result IN ('PASS', 'FAIL', 'ERROR')", name=op.f("ck_balance_check_results_result")
        ),
        sa.CheckConstraint(
            "(result = 'ERROR') = (error_code IS NOT NULL)",
            name=op.f("ck_balance_check_results_error_code_iff_error"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_balance_check_results_customer_id_customers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_balance_check_results")),
        sa.UniqueConstraint(
            "business_date", "customer_id", name="uq_balance_check_results_date_customer"
        ),
    )
    op.create_index(
        "ix_balance_check_results_run", "balance_check_results", ["run_id"], unique=False
    )
    op.create_index(
        "ix_balance_check_results_customer",
        "balance_check_results",
        ["customer_id", "business_date"],
        unique=False,
    )

    op.create_table(
        "error_logs",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("run_id", _ID, nullable=True),
        sa.Column("job_name", sa.String(length=200), nullable=False),
        sa.Column("customer_id", _ID, nullable=True),
        sa.Column("business_date", sa.Date(), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("retry_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("stack_trace", sa.Text(), nullable=True),
        sa.Column("logged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=200), nullable=True),
        sa.Column("resolution_notes", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_error_logs_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_error_logs")),
    )
    op.create_index("ix_error_logs_code", "error_logs", ["error_code"], unique=False)
    op.create_index("ix_error_logs_logged_at", "error_logs", ["logged_at"], unique=False)
    op.create_index("ix_error_logs_customer", "error_logs", ["customer_id"], unique=False)

    # Append-only except the resolution fields: enforced by the database itself.
    if op.get_bind().dialect.name == "postgresql":
        changed = " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in _IMMUTABLE)
        op.execute(
            f"""
            CREATE FUNCTION error_logs_append_only() RETURNS trigger AS $$
            BEGIN
              IF TG_OP = 'DELETE' THEN
                RAISE EXCEPTION 'error_logs is append-only: rows cannot be deleted';
              END IF;
              IF {changed} THEN
                RAISE EXCEPTION 'error_logs is append-only: only the resolution fields may change';
              END IF;
              RETURN NEW;
            END;
            $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            "CREATE TRIGGER error_logs_append_only BEFORE UPDATE OR DELETE ON error_logs "
            "FOR EACH ROW EXECUTE FUNCTION error_logs_append_only()"
        )
    else:
        op.execute(
            f"CREATE TRIGGER error_logs_no_update BEFORE UPDATE OF {', '.join(_IMMUTABLE)} "
            "ON error_logs BEGIN SELECT RAISE(ABORT, "
            "'error_logs is append-only: only the resolution fields may change'); END"
        )
        op.execute(
            "CREATE TRIGGER error_logs_no_delete BEFORE DELETE ON error_logs BEGIN "
            "SELECT RAISE(ABORT, 'error_logs is append-only: rows cannot be deleted'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS error_logs_append_only ON error_logs")
        op.execute("DROP FUNCTION IF EXISTS error_logs_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS error_logs_no_update")
        op.execute("DROP TRIGGER IF EXISTS error_logs_no_delete")
    op.drop_index("ix_error_logs_customer", table_name="error_logs")
    op.drop_index("ix_error_logs_logged_at", table_name="error_logs")
    op.drop_index("ix_error_logs_code", table_name="error_logs")
    op.drop_table("error_logs")
    op.drop_index("ix_balance_check_results_customer", table_name="balance_check_results")
    op.drop_index("ix_balance_check_results_run", table_name="balance_check_results")
    op.drop_table("balance_check_results")
