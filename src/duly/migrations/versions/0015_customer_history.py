"""customer history: keyset indexes per operation kind, occurrences' customer, token_customers

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-20 09:00:00

* Each kind the execution history reads gets an index on ``(customer_id, time, id)``, the
  history's order, so a page is one bounded index range at any depth.
* ``recurring_occurrences.customer_id``: the payment's customer, copied (and backfilled
  here) so occurrences are read by customer without sorting all of a customer's payments'
  occurrences for every page.
* ``token_customers``: the customers a ``channel`` token acts for.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("recurring_occurrences", sa.Column("customer_id", _ID, nullable=True))
    op.execute(
        "UPDATE recurring_occurrences SET customer_id = (SELECT p.customer_id "
        "FROM recurring_payments p WHERE p.id = recurring_occurrences.payment_id)"
    )
    op.create_index(
        "ix_recurring_occurrences_customer_history",
        "recurring_occurrences",
        ["customer_id", "execute_at", "id"],
    )
    # the new index has the old one's columns first: the old one would only cost writes
    op.drop_index("ix_scheduled_transfers_customer", table_name="scheduled_transfers")
    op.create_index(
        "ix_scheduled_transfers_customer_history",
        "scheduled_transfers",
        ["customer_id", "execute_at", "id"],
    )
    handed_over = sa.text("delivery_id IS NOT NULL")
    op.create_index(
        "ix_reminders_customer_history",
        "reminders",
        ["customer_id", "send_at", "id"],
        postgresql_where=handed_over,
        sqlite_where=handed_over,
    )
    op.create_index(
        "ix_balance_check_results_customer_history",
        "balance_check_results",
        ["customer_id", "checked_at", "id"],
    )
    op.create_table(
        "token_customers",
        sa.Column("token_id", sa.String(length=16), nullable=False),
        sa.Column("customer_id", _ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["token_id"], ["tokens.id"], name=op.f("fk_token_customers_token_id_tokens")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_token_customers_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("token_id", "customer_id", name=op.f("pk_token_customers")),
    )


def downgrade() -> None:
    op.drop_table("token_customers")
    op.drop_index("ix_balance_check_results_customer_history", table_name="balance_check_results")
    op.drop_index("ix_reminders_customer_history", table_name="reminders")
    op.drop_index("ix_scheduled_transfers_customer_history", table_name="scheduled_transfers")
    op.create_index(
        "ix_scheduled_transfers_customer", "scheduled_transfers", ["customer_id", "execute_at"]
    )
    op.drop_index("ix_recurring_occurrences_customer_history", table_name="recurring_occurrences")
    with op.batch_alter_table("recurring_occurrences") as batch:
        batch.drop_column("customer_id")
