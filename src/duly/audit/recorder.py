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

import functools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from duly.audit.actors import Actor, current_actor, current_request_id
from duly.audit.canonical import ChainHead, EventRecord, canonical_json, event_hash, format_instant
from duly.audit.redaction import redact
from duly.audit.schema import audit_events, audit_head
from duly.engine.auditing import AuditEntry
from duly.engine.store.dialect import insert_rows

__all__ = [
    "AuditEntry",
    "details_text",
    "head_for_update",
    "insert_for_each",
    "record",
    "store_head",
    "to_record",
]


def to_record(entry: AuditEntry, at: datetime, actor: Actor, request_id: str | None) -> EventRecord:
    """``entry`` as an unsealed event with its actor, request id and redacted details."""
    return _to_record(entry, format_instant(at), actor, request_id)


def _to_record(entry: AuditEntry, at: str, actor: Actor, request_id: str | None) -> EventRecord:
    object_id = entry.object_id
    return EventRecord(
        seq=None,
        at=at,
        actor=actor.id,
        actor_name=actor.name,
        actor_role=actor.role,
        action=entry.action,
        object_type=entry.object_type,
        object_id=None if object_id is None else str(object_id),
        request_id=request_id,
        details=details_text(entry.details),
    )


#: Value types whose details :func:`details_text` remembers (exact types: ``True`` and
#: ``1`` are equal as keys but not as JSON; equal instants in two time zones print apart).
_PLAIN = (str, int, bool, type(None))


@functools.lru_cache(maxsize=4096)
def _plain_details_text(items: tuple[tuple[Any, type, Any], ...]) -> str:
    return canonical_json(redact({key: value for key, _, value in items}))


def details_text(details: Mapping[str, Any]) -> str:
    """``details`` redacted, as the canonical JSON stored and hashed.

    Details of plain values only (an attempt number, a node, an error code) repeat from one
    run to the next, so their text is remembered; redaction is pure, so it is the same text.
    """
    items = tuple((key, type(value), value) for key, value in details.items())
    if all(kind in _PLAIN for _, kind, _ in items):
        return _plain_details_text(items)
    return canonical_json(redact(details))


def head_for_update(conn: Connection) -> ChainHead:
    """The chain's head, locked for this transaction on PostgreSQL."""
    stmt = _HEAD_FOR_UPDATE if conn.dialect.name == "postgresql" else _HEAD
    row = conn.execute(stmt).one()
    return ChainHead(int(row.seq), str(row.hash))


# Built once: on SQLite, where every event is sealed as it is written, building these
# statements for each write cost more than running them.
_HEAD = select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)
_HEAD_FOR_UPDATE = _HEAD.with_for_update()
_MOVE_HEAD = update(audit_head).where(audit_head.c.id == 1)


def store_head(conn: Connection, head: ChainHead, **cursor: int) -> None:
    """Move the head to ``head`` (and the sealer's cursor, if given)."""
    conn.execute(_MOVE_HEAD, {"seq": head.seq, "hash": head.hash, **cursor})


def _insert_unsealed(conn: Connection, events: Sequence[EventRecord], at: datetime) -> None:
    """PostgreSQL: the events in one ``INSERT … SELECT FROM unnest(arrays)``, unsealed.

    The statement's text does not depend on the number of rows (see
    :func:`~duly.engine.store.dialect.insert_rows`); ``txid`` is the column's default.
    """
    rows = [
        {
            "at": at,
            "actor": e.actor,
            "actor_name": e.actor_name,
            "actor_role": e.actor_role,
            "action": e.action,
            "object_type": e.object_type,
            "object_id": e.object_id,
            "request_id": e.request_id,
            "details": e.details,
        }
        for e in events
    ]
    insert_rows(conn, audit_events, rows)


#: Rows per INSERT on SQLite: 12 parameters a row, well under its limit of 32,766 a statement.
_SQLITE_ROWS = 500
_SQLITE_COLUMNS = (
    "seq",
    "at",
    "actor",
    "actor_name",
    "actor_role",
    "action",
    "object_type",
    "object_id",
    "request_id",
    "details",
    "prev_hash",
    "hash",
)


@functools.lru_cache(maxsize=64)
def _sqlite_insert(rows: int) -> str:
    """``INSERT INTO audit_events (…) VALUES (?, …), …`` for ``rows`` rows."""
    row = f"({', '.join('?' * len(_SQLITE_COLUMNS))})"
    return f"INSERT INTO audit_events ({', '.join(_SQLITE_COLUMNS)}) VALUES " + ", ".join(
        [row] * rows
    )


def _insert_sealed(conn: Connection, events: Sequence[EventRecord], at: datetime) -> ChainHead:
    """SQLite: the events numbered and hashed after the head, inserted; the new head.

    One ``INSERT … VALUES (…), (…)`` per :data:`_SQLITE_ROWS` events, its text made here and
    its parameters bound by the driver: SQLAlchemy compiles a multi-row ``insert().values()``
    afresh at every call, which cost more than the writes. The linking is
    :func:`~duly.audit.canonical.link`'s, written straight into the rows.
    """
    stored_at = _sqlite_instant(conn, at)  # every event of a call is at the same instant
    head = head_for_update(conn)
    seq, prev = head.seq, head.hash
    params: list[Any] = []
    for start in range(0, len(events), _SQLITE_ROWS):
        chunk = events[start : start + _SQLITE_ROWS]
        params.clear()
        for e in chunk:
            seq += 1
            digest = event_hash(e, seq, prev)
            params += (seq, stored_at, e.actor, e.actor_name, e.actor_role, e.action,
                       e.object_type, e.object_id, e.request_id, e.details, prev, digest)  # fmt: skip
            prev = digest
        conn.exec_driver_sql(_sqlite_insert(len(chunk)), tuple(params))
    return ChainHead(seq, prev)


def _sqlite_instant(conn: Connection, at: datetime) -> Any:
    """``at`` as the ``at`` column stores it on SQLite (what SQLAlchemy would bind)."""
    process = audit_events.c.at.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    return process(at) if process is not None else at


def _record(conn: Connection, entries: Sequence[AuditEntry], at: datetime) -> None:
    if not entries:
        return
    actor, request_id, instant = current_actor(), current_request_id(), format_instant(at)
    events = [_to_record(entry, instant, actor, request_id) for entry in entries]
    if conn.dialect.name == "postgresql":
        _insert_unsealed(conn, events, at)
        return
    store_head(conn, _insert_sealed(conn, events, at))


_FOR_EACH_COLUMNS = ("at", "actor", "actor_name", "actor_role", "action", "object_type",
                     "request_id", "details")  # fmt: skip


def insert_for_each(source: str, entry: AuditEntry, at: datetime) -> tuple[str, dict[str, Any]]:
    """PostgreSQL: ``INSERT … SELECT … FROM source`` writing ``entry`` once per row of ``source``.

    ``source`` is a ``WITH`` query of the statement that makes the change (an ``INSERT …
    RETURNING id``); each event's object id is its row's ``id``. Put in the same statement,
    the change and its events commit together in one round trip. The events are unsealed
    (the sealer numbers them), as :func:`record` writes them on PostgreSQL. Parameters are
    named ``audit_…``.
    """
    event = _to_record(entry, format_instant(at), current_actor(), current_request_id())
    values = {"at": at, "actor": event.actor, "actor_name": event.actor_name,
              "actor_role": event.actor_role, "action": event.action,
              "object_type": event.object_type, "request_id": event.request_id,
              "details": event.details}  # fmt: skip
    sql = (f"INSERT INTO audit_events ({', '.join(_FOR_EACH_COLUMNS)}, object_id) SELECT "
           + ", ".join(f"CAST(:audit_{c} AS {_PG_TYPES[c]})" for c in _FOR_EACH_COLUMNS)
           + f", CAST({source}.id AS text) FROM {source}")  # fmt: skip
    return sql, {f"audit_{c}": v for c, v in values.items()}


_PG_TYPES = {c: ("timestamptz" if c == "at" else "text") for c in _FOR_EACH_COLUMNS}


class _Recorder:
    """The recorder plugged into stores: :func:`record`, and :func:`insert_for_each`."""

    def __call__(self, conn: Connection, entries: Sequence[AuditEntry], at: datetime) -> None:
        _record(conn, entries, at)

    def insert_for_each(
        self, source: str, entry: AuditEntry, at: datetime
    ) -> tuple[str, dict[str, Any]]:
        return insert_for_each(source, entry, at)


#: ``record(conn, entries, at)``: write ``entries`` as events at ``at`` by the current
#: actor, in ``conn``'s transaction (the engine's
#: :class:`~duly.engine.auditing.StatementAuditRecorder`).
record = _Recorder()
