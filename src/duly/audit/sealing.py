"""Sealing events into the chain, signing checkpoints, and pruning whole checkpointed ranges.

**Sealing on PostgreSQL.** Events are inserted unsealed with their transaction's id
(``txid``). An event may be sealed only when no transaction still open could commit an
event that belongs before it. ``pg_snapshot_xmin(pg_current_snapshot())`` is the oldest
transaction id still running: every transaction below it has ended, and every transaction
that has not yet written gets an id above it. So the events with ``txid`` below that horizon
form a closed set that will never grow, and sealing them in ``(txid, id)`` order, after
those already sealed, gives a linear chain no later commit can contradict. The horizon is
read in a statement *before* the one that reads the events: under READ COMMITTED each
statement sees everything committed before it began, so every transaction under the
horizon is visible to the read. One sealer at a time holds the advisory lock; the others
skip their turn. Sealing lags commits by the sealer's interval, plus the length of the
longest transaction open at the time — in any database of the cluster, since transaction
ids are the cluster's. Recording never waits; only the chain's tail does.

**SQLite** seals at insert (:func:`duly.audit.recorder.record`); only checkpoints and
pruning happen here.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, text

from duly.audit.canonical import (
    ChainHead,
    Checkpoint,
    EventRecord,
    event_hash,
    format_instant,
    parse_instant,
)
from duly.audit.recorder import head_for_update, record, store_head
from duly.audit.schema import audit_checkpoints, audit_events, audit_head, audit_prune_gate
from duly.audit.signing import SigningKey
from duly.engine.auditing import AuditEntry
from duly.engine.store.dialect import pg_execute

__all__ = [
    "SEALER_LOCK",
    "checkpoint_if_due",
    "checkpoint_of",
    "event_of",
    "last_checkpoint",
    "prune_before",
    "seal_pending",
    "unsealed_count",
]

#: The advisory lock one sealer holds while it seals (any number; unique within duly).
SEALER_LOCK = 0x6475_6C79_6175_6474  # "dulyaudt"

_EVENT_COLUMNS = (
    audit_events.c.id,
    audit_events.c.txid,
    audit_events.c.at,
    audit_events.c.actor,
    audit_events.c.actor_name,
    audit_events.c.actor_role,
    audit_events.c.action,
    audit_events.c.object_type,
    audit_events.c.object_id,
    audit_events.c.request_id,
    audit_events.c.details,
)


def event_of(row: Any) -> EventRecord:
    """An ``audit_events`` row as the chain sees it."""
    return EventRecord(
        seq=getattr(row, "seq", None),
        at=format_instant(row.at),
        actor=row.actor,
        actor_name=row.actor_name,
        actor_role=row.actor_role,
        action=row.action,
        object_type=row.object_type,
        object_id=row.object_id,
        request_id=row.request_id,
        details=row.details,
        prev_hash=getattr(row, "prev_hash", None),
        hash=getattr(row, "hash", None),
    )


def seal_pending(conn: Connection, limit: int = 5000) -> int:
    """Seal up to ``limit`` events no open transaction can precede; how many were sealed.

    PostgreSQL only (SQLite seals at insert). Returns 0 when another sealer holds the lock.
    Call it in a transaction of its own and commit.
    """
    if conn.dialect.name != "postgresql":
        return 0
    locked = conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": SEALER_LOCK}).scalar()
    if not locked:
        return 0
    horizon = conn.execute(
        text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
    ).scalar_one()
    cursor = conn.execute(
        select(audit_head.c.sealed_txid, audit_head.c.sealed_id).where(audit_head.c.id == 1)
    ).one()
    rows = conn.execute(
        select(*_EVENT_COLUMNS)
        .where(
            audit_events.c.txid < horizon,
            func.row(audit_events.c.txid, audit_events.c.id)
            > func.row(cursor.sealed_txid, cursor.sealed_id),
        )
        .order_by(audit_events.c.txid, audit_events.c.id)
        .limit(limit)
    ).all()
    if not rows:
        return 0
    head = head_for_update(conn)
    # link()'s numbering and hashing, without building a sealed copy of every event.
    seqs, prevs, hashes = [], [], []
    seq, prev = head.seq, head.hash
    for row in rows:
        seq += 1
        seqs.append(seq)
        prevs.append(prev)
        prev = event_hash(event_of(row), seq, prev)
        hashes.append(prev)
    # Arrays sent in binary (pg_execute): psycopg's text format quotes every element.
    pg_execute(
        conn,
        "UPDATE audit_events AS e SET seq = u.seq, prev_hash = u.prev_hash, hash = u.hash "
        "FROM unnest(CAST(:ids AS bigint[]), CAST(:seqs AS bigint[]), "
        "CAST(:prevs AS text[]), CAST(:hashes AS text[])) AS u(id, seq, prev_hash, hash) "
        "WHERE e.id = u.id",
        {"ids": [row.id for row in rows], "seqs": seqs, "prevs": prevs, "hashes": hashes},
    )
    last_row = rows[-1]
    store_head(
        conn, ChainHead(seq, prev), sealed_txid=int(last_row.txid), sealed_id=int(last_row.id)
    )
    return len(rows)


def unsealed_count(conn: Connection) -> int:
    """Events recorded but not yet in the chain (always 0 on SQLite)."""
    return int(
        conn.execute(
            select(func.count()).select_from(audit_events).where(audit_events.c.seq.is_(None))
        ).scalar_one()
    )


def checkpoint_of(row: Any) -> Checkpoint:
    return Checkpoint(int(row.seq), row.hash, format_instant(row.at), row.key_id, row.signature)


def last_checkpoint(conn: Connection) -> Checkpoint | None:
    row = conn.execute(
        select(audit_checkpoints).order_by(audit_checkpoints.c.seq.desc()).limit(1)
    ).first()
    return None if row is None else checkpoint_of(row)


def checkpoint_if_due(
    conn: Connection,
    key: SigningKey,
    now: datetime,
    every_events: int,
    every: timedelta,
    force: bool = False,
) -> Checkpoint | None:
    """Sign the head if ``every_events`` were sealed or ``every`` passed since the last checkpoint."""
    head = head_for_update(conn)
    last = last_checkpoint(conn)
    if head.seq == 0 or (last is not None and last.seq >= head.seq):
        return None
    if (
        not force
        and last is not None
        and head.seq - last.seq < every_events
        and now - parse_instant(last.at) < every
    ):
        return None
    at = format_instant(now)
    checkpoint = Checkpoint(head.seq, head.hash, at, key.key_id, key.sign(head.seq, head.hash, at))
    conn.execute(
        insert(audit_checkpoints).values(
            seq=checkpoint.seq,
            hash=checkpoint.hash,
            at=now,
            key_id=checkpoint.key_id,
            signature=checkpoint.signature,
        )
    )
    return checkpoint


def prune_before(conn: Connection, cutoff: datetime, now: datetime) -> tuple[int, int | None]:
    """Delete the events up to the newest checkpoint signed before ``cutoff``.

    Whole checkpointed ranges only: the checkpoint at the cut stays, so what remains starts
    from a signed hash and still verifies. The pruning is itself recorded (in this
    transaction). Returns (events removed, the sequence number of the cut, or ``None``).
    """
    cut = conn.execute(
        select(func.max(audit_checkpoints.c.seq)).where(audit_checkpoints.c.at < cutoff)
    ).scalar()
    if cut is None:
        return 0, None
    conn.execute(insert(audit_prune_gate).values(id=1))
    removed = conn.execute(delete(audit_events).where(audit_events.c.seq <= cut)).rowcount
    conn.execute(delete(audit_checkpoints).where(audit_checkpoints.c.seq < cut))
    conn.execute(delete(audit_prune_gate))
    record(
        conn,
        [
            AuditEntry(
                "audit.prune",
                "audit",
                None,
                {
                    "through_seq": int(cut),
                    "events_removed": int(removed),
                    "cutoff": format_instant(cutoff),
                },
            )
        ],
        now,
    )
    return int(removed), int(cut)
