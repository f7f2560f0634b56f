"""The delivery queue: one row per message, claimed with a lease, retried with backoff.

A delivery is ``pending`` (due at ``next_attempt_at``) → ``sending`` (claimed: ``attempts``
counts the claim, ``lease_until`` bounds it) → ``sent`` | ``pending`` again (a transient
failure, later) | ``failed`` (a permanent failure or attempts spent) | ``cancelled`` (its
reason went away: a reminder for a cancelled payment). A sender that dies while sending
leaves the row ``sending``; once the lease has passed it is claimed again and re-sent with
the same idempotency key — at-least-once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    and_,
    bindparam,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql.elements import BindParameter

from duly.notify.schema import deliveries

__all__ = [
    "DeliveryRow",
    "NewDelivery",
    "Outcome",
    "cancel_deliveries",
    "claim",
    "claim_on",
    "enqueue",
    "enqueue_many",
    "finish_many",
    "finish_many_on",
    "list_deliveries",
    "next_due",
    "next_due_on",
]

_D = deliveries
STATUSES = ("pending", "sending", "sent", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """A message to queue. ``dedupe_key`` is unique: queuing it twice queues it once."""

    dedupe_key: str
    source: str
    channel: str
    recipient_ref: str
    recipient_masked: str
    template: str
    context: dict[str, Any] = field(default_factory=dict)
    source_ref: str | None = None
    locale: str | None = None
    not_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """A stored delivery."""

    id: int
    dedupe_key: str
    source: str
    source_ref: str | None
    channel: str
    recipient_ref: str
    recipient_masked: str
    template: str
    locale: str | None
    context: dict[str, Any]
    status: str
    attempts: int
    next_attempt_at: datetime | None
    lease_until: datetime | None
    provider_code: str | None
    provider_ref: str | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None


def _row(row: Any) -> DeliveryRow:
    m = row._mapping
    return DeliveryRow(
        id=int(m["id"]),
        dedupe_key=m["dedupe_key"],
        source=m["source"],
        source_ref=m["source_ref"],
        channel=m["channel"],
        recipient_ref=m["recipient_ref"],
        recipient_masked=m["recipient_masked"],
        template=m["template"],
        locale=m["locale"],
        context=dict(m["context"] or {}),
        status=m["status"],
        attempts=int(m["attempts"]),
        next_attempt_at=m["next_attempt_at"],
        lease_until=m["lease_until"],
        provider_code=m["provider_code"],
        provider_ref=m["provider_ref"],
        last_error=m["last_error"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        sent_at=m["sent_at"],
    )


def enqueue(conn: Connection, new: NewDelivery, now: datetime) -> int | None:
    """Queue ``new`` on ``conn``; ``None`` if its dedupe key was queued before."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    created = conn.execute(
        insert(_D)
        .values(
            dedupe_key=new.dedupe_key,
            source=new.source,
            source_ref=new.source_ref,
            channel=new.channel,
            recipient_ref=new.recipient_ref,
            recipient_masked=new.recipient_masked,
            template=new.template,
            locale=new.locale,
            context=new.context,
            status="pending",
            attempts=0,
            next_attempt_at=new.not_before or now,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing()
        .returning(_D.c.id)
    ).scalar()
    return int(created) if created is not None else None


def enqueue_many(conn: Connection, news: Sequence[NewDelivery], now: datetime) -> dict[str, int]:
    """Queue ``news`` on ``conn`` (one ``executemany``, which SQLAlchemy sends as batched
    multi-row inserts); returns the ids of those newly queued by dedupe key (a key queued
    before is left out)."""
    if not news:
        return {}
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    rows = [
        {
            "dedupe_key": n.dedupe_key,
            "source": n.source,
            "source_ref": n.source_ref,
            "channel": n.channel,
            "recipient_ref": n.recipient_ref,
            "recipient_masked": n.recipient_masked,
            "template": n.template,
            "locale": n.locale,
            "context": n.context,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": n.not_before or now,
            "created_at": now,
            "updated_at": now,
        }
        for n in news
    ]
    found = conn.execute(
        insert(_D).on_conflict_do_nothing().returning(_D.c.id, _D.c.dedupe_key), rows
    )
    return {key: int(i) for i, key in found}


#: The queue's rows (the partial index ``ix_deliveries_due`` covers exactly these): every
#: query of due rows names this term, so it reads the queue, not the history.
_QUEUED = _D.c.status.in_(("pending", "sending"))


def _due(now: datetime | BindParameter[Any]) -> Any:
    """Pending and due, or being sent with its lease run out.

    A row being sent kept the ``next_attempt_at`` it was claimed at (≤ now), so both are
    within ``next_attempt_at <= now``: the claim reads the partial index, not the table.
    """
    return and_(
        _QUEUED,
        _D.c.next_attempt_at <= now,
        or_(_D.c.status == "pending", _D.c.lease_until <= now),
    )


def claim(engine: Engine, now: datetime, limit: int, lease: timedelta) -> list[DeliveryRow]:
    """Take up to ``limit`` due deliveries (and those whose sender's lease ran out)."""
    with engine.begin() as conn:
        return claim_on(conn, now, limit, lease)


def claim_on(conn: Connection, now: datetime, limit: int, lease: timedelta) -> list[DeliveryRow]:
    """:func:`claim` on the caller's transaction (the sender records the previous batch,
    claims the next and runs its send-time checks in one)."""
    pick = _PICK_PG if conn.dialect.name == "postgresql" else _PICK
    ids = [int(i) for i in conn.execute(pick, {"now": now, "limit": limit}).scalars().all()]
    if not ids:
        return []
    rows = conn.execute(_TAKE, {"ids": ids, "now": now, "lease_until": now + lease}).all()
    return sorted((_row(r) for r in rows), key=lambda d: (d.next_attempt_at or now, d.id))


#: The claim's statements, built once (a claim per batch rebuilt them: a few per cent of a
#: sender's CPU went to building the expressions and their cache keys).
_NOW = bindparam("now", type_=_D.c.next_attempt_at.type)
_PICK = (
    select(_D.c.id)
    .where(_due(_NOW))
    .order_by(_D.c.next_attempt_at, _D.c.id)
    .limit(bindparam("limit", type_=Integer))
)
_PICK_PG = _PICK.with_for_update(skip_locked=True)
_TAKE = (
    update(_D)
    .where(_D.c.id.in_(bindparam("ids", expanding=True)), _due(_NOW))
    .values(
        status="sending",
        attempts=_D.c.attempts + 1,
        lease_until=bindparam("lease_until", type_=_D.c.lease_until.type),
        updated_at=_NOW,
    )
    .returning(*_D.c)
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one claimed delivery (``status``: sent, pending, failed, cancelled)."""

    delivery: DeliveryRow
    status: str
    code: str | None = None
    ref: str | None = None
    error: str | None = None
    retry_at: datetime | None = None
    #: Raise an operations alert (a permanent failure or attempts spent).
    alert: bool = False


def finish_many(engine: Engine, outcomes: Sequence[Outcome], now: datetime) -> list[bool]:
    """Record ``outcomes`` in one transaction and one ``executemany``; each is fenced by its
    claim's attempt number (``False``: another sender claimed it since, nothing written)."""
    if not outcomes:
        return []
    with engine.begin() as conn:
        return finish_many_on(conn, outcomes, now)


def finish_many_on(conn: Connection, outcomes: Sequence[Outcome], now: datetime) -> list[bool]:
    """:func:`finish_many` on the caller's transaction."""
    if not outcomes:
        return []
    params = [
        {
            "b_id": o.delivery.id,
            "b_attempts": o.delivery.attempts,
            "b_status": o.status,
            "b_code": o.code,
            "b_error": o.error[:500] if o.error else None,
            "b_ref": o.ref[:200] if o.ref is not None else None,
            "b_sent_at": now if o.status == "sent" else None,
            "b_next": (o.retry_at or now) if o.status == "pending" else None,
            "b_now": now,
        }
        for o in outcomes
    ]
    if conn.dialect.name == "postgresql":
        return _finish_pg(conn, outcomes, params, now)
    done = conn.execute(_FINISH, params).rowcount
    if done == len(outcomes) and conn.dialect.supports_sane_multi_rowcount:
        return [True] * len(outcomes)
    # Some were claimed again by another sender (or the driver cannot count): look.
    rows = {
        int(r.id): r
        for r in conn.execute(
            select(_D.c.id, _D.c.status, _D.c.attempts, _D.c.updated_at).where(
                _D.c.id.in_([o.delivery.id for o in outcomes])
            )
        )
    }
    out = []
    for o in outcomes:
        r = rows.get(o.delivery.id)
        out.append(
            r is not None
            and int(r.attempts) == o.delivery.attempts
            and r.status == o.status
            and r.updated_at == now
        )
    return out


#: PostgreSQL: every outcome in one statement (the rows as one JSON parameter), which
#: also says exactly which rows were still this claim's.
_FINISH_PG = text(
    """
    UPDATE deliveries AS d SET
        status = v.status, lease_until = NULL, updated_at = :now,
        provider_code = v.code, last_error = v.error,
        provider_ref = COALESCE(v.ref, d.provider_ref),
        sent_at = COALESCE(v.sent_at, d.sent_at), next_attempt_at = v.next
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(
        id bigint, attempts integer, status text, code text, error text, ref text,
        sent_at timestamptz, next timestamptz)
    WHERE d.id = v.id AND d.status = 'sending' AND d.attempts = v.attempts
    RETURNING d.id
    """
).bindparams(bindparam("now", type_=_D.c.updated_at.type))


def _finish_pg(
    conn: Connection, outcomes: Sequence[Outcome], params: list[dict[str, Any]], now: datetime
) -> list[bool]:
    rows = [
        {
            "id": p["b_id"],
            "attempts": p["b_attempts"],
            "status": p["b_status"],
            "code": p["b_code"],
            "error": p["b_error"],
            "ref": p["b_ref"],
            "sent_at": p["b_sent_at"].isoformat() if p["b_sent_at"] else None,
            "next": p["b_next"].isoformat() if p["b_next"] else None,
        }
        for p in params
    ]
    done = {
        int(i) for i in conn.execute(_FINISH_PG, {"rows": json.dumps(rows), "now": now}).scalars()
    }
    return [o.delivery.id in done for o in outcomes]


_FINISH = (
    update(_D)
    .where(
        _D.c.id == bindparam("b_id"),
        _D.c.status == "sending",
        _D.c.attempts == bindparam("b_attempts"),
    )
    .values(
        status=bindparam("b_status"),
        lease_until=None,
        updated_at=bindparam("b_now", type_=_D.c.updated_at.type),
        provider_code=bindparam("b_code"),
        last_error=bindparam("b_error"),
        provider_ref=func.coalesce(
            bindparam("b_ref", type_=_D.c.provider_ref.type), _D.c.provider_ref
        ),
        sent_at=func.coalesce(bindparam("b_sent_at", type_=_D.c.sent_at.type), _D.c.sent_at),
        next_attempt_at=bindparam("b_next", type_=_D.c.next_attempt_at.type),
    )
)


def cancel_deliveries(conn: Connection, ids: Sequence[int], now: datetime, reason: str) -> int:
    """Cancel those of ``ids`` that are still pending; returns how many."""
    if not ids:
        return 0
    return conn.execute(
        update(_D)
        .where(_D.c.id.in_(list(ids)), _D.c.status == "pending")
        .values(status="cancelled", last_error=reason, next_attempt_at=None, updated_at=now)
    ).rowcount


def next_due(engine: Engine) -> datetime | None:
    """When the next pending delivery (or expiring lease) is due."""
    with engine.connect() as conn:
        return next_due_on(conn)


def next_due_on(conn: Connection) -> datetime | None:
    """:func:`next_due` on the caller's connection."""
    pending = conn.execute(
        select(func.min(_D.c.next_attempt_at)).where(_QUEUED, _D.c.status == "pending")
    ).scalar()
    leased = conn.execute(
        select(func.min(_D.c.lease_until)).where(_QUEUED, _D.c.status == "sending")
    ).scalar()
    found = [t for t in (pending, leased) if t is not None]
    return min(found) if found else None


def list_deliveries(
    engine: Engine,
    *,
    status: str | None = None,
    source: str | None = None,
    channel: str | None = None,
    limit: int = 100,
) -> list[DeliveryRow]:
    """Deliveries, newest first."""
    conds = []
    if status:
        conds.append(_D.c.status == status)
    if source:
        conds.append(_D.c.source == source)
    if channel:
        conds.append(_D.c.channel == channel)
    with engine.connect() as conn:
        rows = conn.execute(select(_D).where(*conds).order_by(_D.c.id.desc()).limit(limit)).all()
    return [_row(r) for r in rows]
