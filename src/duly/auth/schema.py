"""The ``tokens`` table, on the engine's ``MetaData`` (migration ``0011``).

One row per token ever issued; revoking sets ``revoked_at`` and keeps the row, so who made
and who revoked a token stays on record. ``id`` is the token's public id (the part between
the underscores); ``secret_hash`` is the SHA-256 of the whole token text, never the text.
A name is unique among tokens not revoked (a partial unique index), so a name can be
reused once its token is revoked, and ``duly token revoke NAME`` always means one token.
"""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, String, Table, text

import duly.banking.schema  # noqa: F401  (customers: referenced below)
from duly.engine.store.schema import metadata
from duly.engine.store.types import IdType, UTCDateTime

__all__ = ["token_customers", "tokens"]

_ACTIVE = text("revoked_at IS NULL")

tokens = Table(
    "tokens",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("name", String(64), nullable=False),
    # admin | operator | auditor | channel
    Column("role", String(16), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("expires_at", UTCDateTime),
    Column("revoked_at", UTCDateTime),
    Column("revoked_by", String(200)),
    Column("last_used_at", UTCDateTime),
    Index(
        "uq_tokens_active_name",
        "name",
        unique=True,
        postgresql_where=_ACTIVE,
        sqlite_where=_ACTIVE,
    ),
)

#: The customers a ``channel`` token acts for (migration ``0014``); a channel token with no
#: row here acts for no customer on the routes that check (a customer's history).
token_customers = Table(
    "token_customers",
    metadata,
    Column("token_id", String(16), ForeignKey("tokens.id"), primary_key=True),
    Column("customer_id", IdType, ForeignKey("customers.id"), primary_key=True),
)
