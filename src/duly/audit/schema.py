"""The audit tables, on the engine's ``MetaData`` (migration ``0013``).

* ``audit_events``: one row per event. ``id`` is the row's identity in insert order;
  ``seq``, ``prev_hash`` and ``hash`` are its place in the chain, set once when it is sealed
  (at insert on SQLite, by the sealer on PostgreSQL). ``txid`` is the inserting
  transaction's id on PostgreSQL (``pg_current_xact_id()``), which the sealer uses to seal
  only events no open transaction can still precede. ``details`` is canonical JSON text,
  hashed as stored.
* ``audit_checkpoints``: signed statements "the chain up to ``seq`` hashes to ``hash``".
* ``audit_head``: one row, the last sealed event (and the sealer's cursor) kept apart from
  the events, so deleting the newest events leaves a head pointing past them.
* ``audit_prune_gate``: empty except inside the pruning transaction; the triggers that
  reject deletes let them through only while a row is there.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text

from duly.engine.store.schema import metadata
from duly.engine.store.types import IdType, UTCDateTime

__all__ = ["audit_checkpoints", "audit_events", "audit_head", "audit_prune_gate"]

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("seq", BigInteger, nullable=True, unique=True),
    Column("txid", BigInteger, nullable=True),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("actor_name", String(200), nullable=True),
    Column("actor_role", String(32), nullable=True),
    Column("action", String(64), nullable=False),
    Column("object_type", String(64), nullable=False),
    Column("object_id", String(200), nullable=True),
    Column("request_id", String(128), nullable=True),
    Column("details", Text, nullable=False),
    Column("prev_hash", String(64), nullable=True),
    Column("hash", String(64), nullable=True),
    Index("ix_audit_events_txid_id", "txid", "id"),
    Index("ix_audit_events_object", "object_type", "object_id"),
    Index("ix_audit_events_at", "at"),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", String(64), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("signature", String(128), nullable=False),
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("sealed_txid", BigInteger, nullable=False),
    Column("sealed_id", BigInteger, nullable=False),
)

audit_prune_gate = Table(
    "audit_prune_gate",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
)
