"""The transactional outbox: events written in the same transaction as their state change.

The relay (:class:`~duly.operations.notifications.relay.OutboxRelay`) publishes unpublished rows in id order, at least
once; consumers deduplicate by ``dedupe_key``. Because the row commits with the change, a
crash can lose neither (finance-rules.md §2.5, checklist 22 and 27).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Index,
    String,
    Table,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

import duly.banking.schema  # noqa: F401  (accounts and customers: referenced below)
from duly.engine.store.dialect import insert_rows
from duly.engine.store.schema import metadata
from duly.engine.store.types import IdType, UTCDateTime

__all__ = [
    "NewEvent",
    "OutboxEvent",
    "emit",
    "emit_many",
    "mark_published",
    "outbox",
    "unpublished",
]

outbox = Table(
    "outbox",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("event_type", String(64), nullable=False),
    Column("aggregate", String(32), nullable=False),
    Column("aggregate_id", String(64), nullable=False),
    Column("dedupe_key", String(300), nullable=False, unique=True),
    Column("payload", JSON, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("published_at", UTCDateTime()),
)

Index(
    "ix_outbox_unpublished",
    outbox.c.id,
    postgresql_where=text("published_at IS NULL"),
    sqlite_where=text("published_at IS NULL"),
)

Index("ix_outbox_aggregate", outbox.c.aggregate, outbox.c.aggregate_id)


def emit(
    conn: Connection,
    *,
    event_type: str,
    aggregate: str,
    aggregate_id: int | str,
    dedupe_key: str,
    payload: dict[str, Any],
    now: datetime,
) -> bool:
    """Write one event on ``conn`` (the state change's transaction).

    Returns ``False`` if an event with ``dedupe_key`` was already written (nothing changes).
    """
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    created = conn.execute(
        insert(outbox)
        .values(
            event_type=event_type,
            aggregate=aggregate,
            aggregate_id=str(aggregate_id),
            dedupe_key=dedupe_key,
            payload=payload,
            created_at=now,
        )
        .on_conflict_do_nothing()
        .returning(outbox.c.id)
    ).scalar()
    return created is not None


@dataclass(frozen=True, slots=True)
class NewEvent:
    """One event for :func:`emit_many`."""

    event_type: str
    aggregate: str
    aggregate_id: int | str
    dedupe_key: str
    payload: dict[str, Any]


def emit_many(conn: Connection, events: Sequence[NewEvent], now: datetime) -> None:
    """Write many events on ``conn`` with one statement; a ``dedupe_key`` already written is skipped.

    The set-based twin of :func:`emit` (it does not say which events were new).
    """
    rows = [
        {
            "event_type": e.event_type,
            "aggregate": e.aggregate,
            "aggregate_id": str(e.aggregate_id),
            "dedupe_key": e.dedupe_key,
            "payload": e.payload,
            "created_at": now,
        }
        for e in events
    ]
    insert_rows(conn, outbox, rows, skip_conflicts=True)


class OutboxEvent:
    """An outbox row as read back."""

    __slots__ = ("aggregate", "aggregate_id", "created_at", "dedupe_key", "event_type", "id",
                 "payload", "published_at")  # fmt: skip

    def __init__(self, row: Any) -> None:
        self.id: int = int(row.id)
        self.event_type: str = row.event_type
        self.aggregate: str = row.aggregate
        self.aggregate_id: str = row.aggregate_id
        self.dedupe_key: str = row.dedupe_key
        self.payload: dict[str, Any] = dict(row.payload)
        self.created_at: datetime = row.created_at
        self.published_at: datetime | None = row.published_at

    def __repr__(self) -> str:
        return f"OutboxEvent({self.id}, {self.event_type!r}, {self.aggregate}:{self.aggregate_id})"


def unpublished(conn: Connection, limit: int = 100, *, after_id: int = 0) -> list[OutboxEvent]:
    """Events not yet published, oldest first."""
    rows = conn.execute(
        select(outbox)
        .where(outbox.c.published_at.is_(None), outbox.c.id > after_id)
        .order_by(outbox.c.id)
        .limit(limit)
    ).all()
    return [OutboxEvent(r) for r in rows]


def mark_published(conn: Connection, ids: list[int], now: datetime) -> int:
    """Record that events ``ids`` were published; returns how many were still unpublished."""
    if not ids:
        return 0
    return conn.execute(
        update(outbox)
        .where(outbox.c.id.in_(ids), outbox.c.published_at.is_(None))
        .values(published_at=now)
    ).rowcount
