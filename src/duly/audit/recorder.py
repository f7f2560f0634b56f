"""Recording events in the transaction of the change they describe.

:func:`record` implements the engine's :class:`~duly.engine.auditing.AuditRecorder` port
and is what every layer calls, on the connection whose transaction makes the change:

* **SQLite** has one writer at a time (every write transaction begins ``IMMEDIATE``), so an
  event is sealed as it is inserted: numbered after the head, hashed over it, and the head
  moved, all before the change commits.
* **PostgreSQL** lets transactions commit in any order, so numbering at insert would either
  serialise every writer on the head row or leave the chain's order different from commit
  order. Events are inserted unsealed, stamped with their transaction's id, and the sealer
  (:mod:`duly.audit.sealing`) numbers them later in an order no transaction still open can
  break. Nothing waits for the chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from duly.audit.actors import Actor, current_actor, current_request_id
from duly.audit.canonical import ChainHead, EventRecord, canonical_json, format_instant, link
from duly.audit.redaction import redact
from duly.audit.schema import audit_events, audit_head
from duly.engine.auditing import AuditEntry
from duly.engine.store.dialect import insert_rows

__all__ = ["AuditEntry", "head_for_update", "record", "store_head", "to_record"]


def to_record(entry: AuditEntry, at: datetime, actor: Actor, request_id: str | None) -> EventRecord:
    """``entry`` as an unsealed event with its actor, request id and redacted details."""
    object_id = entry.object_id
    return EventRecord(
        seq=None,
        at=format_instant(at),
        actor=actor.id,
        actor_name=actor.name,
        actor_role=actor.role,
        action=entry.action,
        object_type=entry.object_type,
        object_id=None if object_id is None else str(object_id),
        request_id=request_id,
        details=canonical_json(redact(entry.details)),
    )


def _row(event: EventRecord, at: datetime) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "at": at,
        "actor": event.actor,
        "actor_name": event.actor_name,
        "actor_role": event.actor_role,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "request_id": event.request_id,
        "details": event.details,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


def _unsealed_row(event: EventRecord, at: datetime) -> dict[str, Any]:
    """An event's row before sealing: no place in the chain yet (``txid`` is the column's default)."""
    return {
        "at": at,
        "actor": event.actor,
        "actor_name": event.actor_name,
        "actor_role": event.actor_role,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "request_id": event.request_id,
        "details": event.details,
    }


def head_for_update(conn: Connection) -> ChainHead:
    """The chain's head, locked for this transaction on PostgreSQL."""
    stmt = select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).one()
    return ChainHead(int(row.seq), str(row.hash))


def store_head(conn: Connection, head: ChainHead, **cursor: int) -> None:
    """Move the head to ``head`` (and the sealer's cursor, if given)."""
    conn.execute(
        update(audit_head)
        .where(audit_head.c.id == 1)
        .values(seq=head.seq, hash=head.hash, **cursor)
    )


#: Rows per INSERT on SQLite: 12 parameters a row, well under its limit of 32,766 a statement.
_SQLITE_ROWS = 500


def _insert_events(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """One multi-row INSERT for a batch of events (never one statement per event).

    PostgreSQL: ``INSERT … SELECT FROM unnest(arrays)``, a statement whose text does not
    depend on the number of rows (see :func:`~duly.engine.store.dialect.insert_rows`).
    SQLite: one ``INSERT … VALUES (…), (…)`` per :data:`_SQLITE_ROWS` rows.
    """
    if conn.dialect.name == "postgresql":
        insert_rows(conn, audit_events, rows)
        return
    for start in range(0, len(rows), _SQLITE_ROWS):
        conn.execute(insert(audit_events).values(rows[start : start + _SQLITE_ROWS]))


def record(conn: Connection, entries: Sequence[AuditEntry], at: datetime) -> None:
    """Write ``entries`` as events at ``at`` by the current actor, in ``conn``'s transaction."""
    if not entries:
        return
    actor, request_id = current_actor(), current_request_id()
    events = [to_record(entry, at, actor, request_id) for entry in entries]
    if conn.dialect.name == "postgresql":
        _insert_events(conn, [_unsealed_row(event, at) for event in events])
        return
    head = head_for_update(conn)
    sealed = list(link(events, head))
    _insert_events(conn, [_row(event, at) for event in sealed])
    last = sealed[-1]
    assert last.seq is not None and last.hash is not None
    store_head(conn, ChainHead(last.seq, last.hash))
