"""Banking tables, on the engine's ``MetaData`` (one schema, one Alembic history).

* ``customers``: pseudonymous facts (tier, minimum balance, timezone, preferences);
  ``customer_pii``: name, e-mail, phone, in a row of its own so erasing it touches no
  ledger or audit row (finance-rules.md §6, checklist 30).
* ``accounts``: a customer's (or the bank's internal) account, and its TigerBeetle-style
  balances: debits/credits, posted and pending, in integer minor units.
* ``ledger_transfers``: immutable; the primary key is the idempotency key. Pending
  transfers are resolved by a post/void/expire transfer whose ``pending_id`` is unique,
  so a pending transfer ends exactly once.
* ``error_codes``: the taxonomy, seeded by migration ``0002``.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    String,
    Table,
    Text,
    text,
)

from duly.engine.store.schema import metadata
from duly.engine.store.types import IdType, UTCDateTime

__all__ = ["accounts", "customer_pii", "customers", "error_codes", "ledger_transfers"]

customers = Table(
    "customers",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("external_id", String(100), nullable=False, unique=True),
    Column("tier", String(16), nullable=False, server_default="standard"),
    Column("min_balance_minor", BigInteger),
    Column("min_balance_currency", String(3)),
    Column("timezone", String(64), nullable=False, server_default="UTC"),
    Column("locale", String(35), nullable=False, server_default="en"),
    Column("notification_prefs", JSON, nullable=False),
    Column("pii_erased_at", UTCDateTime()),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    CheckConstraint("tier IN ('standard', 'premium')", name="tier"),
)
Index("ix_customers_tier", customers.c.tier)

customer_pii = Table(
    "customer_pii",
    metadata,
    Column(
        "customer_id",
        IdType,
        ForeignKey("customers.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("name", Text),
    Column("email", Text),
    Column("phone", Text),
    Column("updated_at", UTCDateTime(), nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("customer_id", IdType, ForeignKey("customers.id")),
    Column("currency", String(3), nullable=False),
    # NULL: no limit (the bank's own internal accounts); 0: no overdraft.
    Column("overdraft_limit_minor", BigInteger, server_default="0"),
    Column("status", String(16), nullable=False, server_default="open"),
    Column("debits_pending", BigInteger, nullable=False, server_default="0"),
    Column("debits_posted", BigInteger, nullable=False, server_default="0"),
    Column("credits_pending", BigInteger, nullable=False, server_default="0"),
    Column("credits_posted", BigInteger, nullable=False, server_default="0"),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("closed_at", UTCDateTime()),
    CheckConstraint("status IN ('open', 'closed')", name="status"),
    CheckConstraint(
        "debits_pending >= 0 AND debits_posted >= 0 AND credits_pending >= 0 "
        "AND credits_posted >= 0",
        name="balances_not_negative",
    ),
    CheckConstraint(
        "overdraft_limit_minor IS NULL OR "
        "debits_posted + debits_pending <= credits_posted + overdraft_limit_minor",
        name="within_overdraft",
    ),
)
Index("ix_accounts_customer", accounts.c.customer_id)

ledger_transfers = Table(
    "ledger_transfers",
    metadata,
    Column("id", String(255), primary_key=True),  # the idempotency key
    Column("debit_account_id", String(64), ForeignKey("accounts.id"), nullable=False),
    Column("credit_account_id", String(64), ForeignKey("accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    # posted | pending | post_pending | void_pending | expire_pending
    Column("kind", String(16), nullable=False),
    Column("pending_id", String(255), ForeignKey("ledger_transfers.id")),
    Column("reverses_id", String(255), ForeignKey("ledger_transfers.id")),
    Column("expires_at", UTCDateTime()),
    Column("reference", String(255)),
    Column("created_at", UTCDateTime(), nullable=False),
    CheckConstraint("amount >= 0", name="amount_not_negative"),
    CheckConstraint("debit_account_id <> credit_account_id", name="distinct_accounts"),
    CheckConstraint(
        "kind IN ('posted', 'pending', 'post_pending', 'void_pending', 'expire_pending')",
        name="kind",
    ),
)
# A pending transfer is resolved (posted, voided or expired) at most once.
Index(
    "uq_ledger_transfers_pending_id",
    ledger_transfers.c.pending_id,
    unique=True,
    postgresql_where=text("pending_id IS NOT NULL"),
    sqlite_where=text("pending_id IS NOT NULL"),
)
Index("ix_ledger_transfers_reverses_id", ledger_transfers.c.reverses_id)
Index("ix_ledger_transfers_debit", ledger_transfers.c.debit_account_id)
Index("ix_ledger_transfers_credit", ledger_transfers.c.credit_account_id)
Index(
    "ix_ledger_transfers_open_pending",
    ledger_transfers.c.expires_at,
    postgresql_where=text("kind = 'pending'"),
    sqlite_where=text("kind = 'pending'"),
)

error_codes = Table(
    "error_codes",
    metadata,
    Column("code", String(64), primary_key=True),
    Column("description", Text, nullable=False),
    Column("severity", String(16), nullable=False),
    Column("suggested_action", Text, nullable=False),
    Column("transient", Boolean, nullable=False),
)
