"""The audit trail's operations: read, verify, export, seal, checkpoint, prune.

The CLI (``duly audit …``), the API (``/api/v1/audit``) and the node's sealer all go
through :class:`AuditLog`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    String,
    and_,
    case,
    func,
    literal,
    or_,
    select,
    type_coerce,
)

from duly.audit.canonical import ChainHead, Checkpoint, EventRecord, format_instant
from duly.audit.export import write_export
from duly.audit.schema import audit_checkpoints, audit_events, audit_head
from duly.audit.sealing import (
    checkpoint_if_due,
    checkpoint_of,
    event_of,
    last_checkpoint,
    prune_before,
    seal_pending,
    unsealed_count,
)
from duly.audit.signing import (
    AuditKeyError,
    SigningKey,
    VerifyKey,
    generate_key_pair,
    load_signing_key,
    load_verify_key,
)
from duly.audit.verify import VerifyReport, verify_chain
from duly.clock import Clock
from duly.config.audit import AuditSettings

__all__ = ["AuditEvent", "AuditFilter", "AuditKeyError", "AuditLog", "AuditStatus"]

log = logging.getLogger(__name__)

#: Events read per round trip when streaming the chain.
_BATCH = 5000


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which events to list (newest first); ``before_id`` continues a page."""

    actor: str | None = None
    action: str | None = None
    object_type: str | None = None
    object_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    before_id: int | None = None


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """An event as listed: its row id, its place in the chain (``None`` until sealed), the rest."""

    id: int
    at: datetime
    record: EventRecord


@dataclass(frozen=True, slots=True)
class AuditStatus:
    """The chain at a glance."""

    head: ChainHead
    unsealed: int
    last_checkpoint: Checkpoint | None


def _of_object(object_type: str | None, object_id: str) -> ColumnElement[bool]:
    """Events on ``object_id``: its own, and (given its type) the batches that list it."""
    own = audit_events.c.object_id == object_id
    if object_type is None or not _is_count(object_id):
        return own
    return or_(own, _in_batch(int(object_id)))


def _is_count(text: str) -> bool:
    """``text`` is a number as JSON prints it: digits, no leading zero (``17``, not ``017``)."""
    return text.isascii() and text.isdigit() and str(int(text)) == text


def _in_batch(object_id: int) -> ColumnElement[bool]:
    """Batch events (no ``object_id``) whose details list ``object_id`` as an item's ``id``.

    Details are canonical JSON (sorted keys, no spaces), and in a batch each run's item is
    ``{..., "id":<n>, ...}``: the text ``"id":<n>`` followed by ``,`` or ``}`` is exactly a
    key ``id`` whose value is the number ``<n>``, not ``<n>0`` or ``<n>5`` (``"id":12`` does
    not match ``"id":123``), nor a string value (a quote inside a string is escaped). Only
    batch items have an ``id`` key in a run batch's details; the text is searched, so the
    batches of the type are scanned (the ``object_type`` index narrows them).
    """
    e = audit_events.c
    key = f'%"id":{object_id}'
    return and_(e.object_id.is_(None), or_(e.details.like(key + ",%"), e.details.like(key + "}%")))


class AuditLog:
    """The audit trail over one database."""

    def __init__(self, engine: Engine, clock: Clock, settings: AuditSettings | None = None) -> None:
        self._engine = engine
        self._clock = clock
        self.settings = settings or AuditSettings()
        self._key: SigningKey | None = None

    # keys

    def signing_key(self) -> SigningKey:
        """The configured private key, created first if missing and ``create_key`` allows."""
        if self._key is None:
            path = self.settings.signing_key_file
            if not path.exists() and self.settings.create_key:
                self._key = generate_key_pair(path)
                log.warning("audit signing key created at %s (public key beside it)", path)
            else:
                self._key = load_signing_key(path)
        return self._key

    def verify_key(self, public_key: Path | None = None) -> VerifyKey:
        """The key to check signatures with: ``public_key``, else the configured key's public half.

        Never creates a key: verifying with a key made on the spot would prove nothing.
        """
        if public_key is not None:
            return load_verify_key(public_key)
        if self._key is not None:
            return self._key.public
        private = self.settings.signing_key_file
        pub = private.with_suffix(".pub")
        if pub.exists():
            return load_verify_key(pub)
        if private.exists():
            return load_signing_key(private).public
        raise AuditKeyError(
            f"no audit key at {private} (nor {pub.name} beside it): give the public key"
        )

    # the chain's upkeep

    def seal(self, limit: int = 5000) -> int:
        """Seal what can be sealed (PostgreSQL); how many events."""
        total = 0
        while True:
            with self._engine.begin() as conn:
                sealed = seal_pending(conn, limit)
            total += sealed
            if sealed < limit:
                return total

    def checkpoint(self, *, force: bool = False) -> Checkpoint | None:
        """Sign the head if a checkpoint is due (or ``force``)."""
        key = self.signing_key()
        settings = self.settings
        with self._engine.begin() as conn:
            return checkpoint_if_due(
                conn,
                key,
                self._clock.now(),
                settings.checkpoint_every_events,
                timedelta(seconds=settings.checkpoint_every_seconds),
                force=force,
            )

    def prune(self, retention_days: int | None = None) -> tuple[int, int | None]:
        """Delete whole checkpointed ranges older than the retention; (events removed, cut)."""
        days = retention_days if retention_days is not None else self.settings.retention_days
        now = self._clock.now()
        with self._engine.begin() as conn:
            return prune_before(conn, now - timedelta(days=days), now)

    # reading

    def status(self) -> AuditStatus:
        """The head, the unsealed count and the last checkpoint, read at one instant."""
        with self._snapshot() as conn:
            return AuditStatus(_head(conn), unsealed_count(conn), last_checkpoint(conn))

    def list(self, flt: AuditFilter) -> list[AuditEvent]:
        """Events matching ``flt``, newest first.

        With ``object_type`` and a numeric ``object_id`` (a run), the batch events listing
        that object are found too: events of that type with no ``object_id`` whose details
        hold an item ``"id":<n>`` (see :func:`_in_batch`).
        """
        e = audit_events.c
        stmt = select(audit_events).order_by(e.id.desc()).limit(flt.limit)
        for column, value in (
            (e.actor, flt.actor),
            (e.action, flt.action),
            (e.object_type, flt.object_type),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if flt.object_id is not None:
            stmt = stmt.where(_of_object(flt.object_type, flt.object_id))
        if flt.since is not None:
            stmt = stmt.where(e.at >= flt.since)
        if flt.until is not None:
            stmt = stmt.where(e.at < flt.until)
        if flt.before_id is not None:
            stmt = stmt.where(e.id < flt.before_id)
        with self._snapshot() as conn:
            rows = conn.execute(stmt).all()
        return [AuditEvent(int(row.id), row.at, event_of(row)) for row in rows]

    def verify(self, from_seq: int | None = None, key: VerifyKey | None = None) -> VerifyReport:
        """Recompute the chain from ``from_seq`` (default: its start) and check every checkpoint."""
        # One snapshot for the head and the events, so sealing meanwhile cannot look like tampering.
        with self._snapshot() as conn:
            head = _head(conn)
            checkpoints = [
                checkpoint_of(r)
                for r in conn.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.seq))
            ]
            anchor = None
            if from_seq is not None and from_seq > 1:
                anchor = _hash_at(conn, from_seq - 1)
            pending = unsealed_count(conn)
            with closing(_sealed(conn, from_seq, None)) as events:
                return verify_chain(
                    events,
                    checkpoints,
                    key,
                    anchor=anchor,
                    head=head,
                    start=from_seq,
                    pending=pending,
                )

    def export(
        self,
        out: IO[str],
        from_seq: int | None = None,
        to_seq: int | None = None,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Write events ``from_seq``..``to_seq`` with their checkpoints as JSON lines; how many.

        ``progress(n)`` is called after every :data:`PROGRESS_EVERY` events written.
        """
        start = from_seq or 1
        with self._snapshot() as conn:
            anchor = _hash_at(conn, start - 1) if start > 1 else None
            cps = audit_checkpoints.c
            stmt = select(audit_checkpoints).where(cps.seq >= start - 1).order_by(cps.seq)
            if to_seq is not None:
                stmt = stmt.where(cps.seq <= to_seq)
            checkpoints = [checkpoint_of(r) for r in conn.execute(stmt)]
            header: dict[str, Any] = {
                "from": start,
                "to": to_seq,
                "anchor": None if anchor is None else {"seq": anchor.seq, "hash": anchor.hash},
                "exported_at": format_instant(self._clock.now()),
            }
            with closing(_sealed(conn, start, to_seq)) as events:
                return write_export(out, events, checkpoints, header=header, progress=progress)

    @contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        """A read-only transaction on one snapshot (SQLite: without taking the write lock)."""
        with self._engine.connect() as conn:
            options: dict[str, Any] = {"duly_readonly": True}
            if conn.dialect.name == "postgresql":
                options["isolation_level"] = "REPEATABLE READ"
            conn = conn.execution_options(**options)
            with conn.begin():
                yield conn


def _head(conn: Connection) -> ChainHead:
    row = conn.execute(
        select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)
    ).one()
    return ChainHead(int(row.seq), str(row.hash))


def _hash_at(conn: Connection, seq: int) -> ChainHead | None:
    digest = conn.execute(select(audit_events.c.hash).where(audit_events.c.seq == seq)).scalar()
    if digest is None:
        cp = conn.execute(
            select(audit_checkpoints.c.hash).where(audit_checkpoints.c.seq == seq)
        ).scalar()
        return None if cp is None else ChainHead(seq, str(cp))
    return ChainHead(seq, str(digest))


def _instant_text(conn: Connection) -> ColumnElement[str]:
    """``at`` as :func:`~duly.audit.canonical.format_instant` writes it, computed by the database.

    Reading it as text skips building a datetime per row only to format it again: SQLite
    stores ``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC), PostgreSQL formats its ``timestamptz``.
    """
    at = audit_events.c.at
    if conn.dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", at), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    raw = type_coerce(at, String)
    fast = func.substr(raw, 1, 10).concat("T").concat(func.substr(raw, 12)).concat("Z")
    # Text written some other way (a row copied by hand) is read as the type reads it.
    written_by_duly = and_(func.length(raw) == 26, func.substr(raw, 11, 1) == " ")
    return case((written_by_duly, fast), else_=literal(_OTHER).concat(raw))


_OTHER = "!"
"""Marks an instant the database could not format (see :func:`_instant_text`)."""


def _formatted(text: str) -> str:
    """An instant the database could not format, formatted as :class:`UTCDateTime` reads it."""
    try:
        value = datetime.fromisoformat(text[len(_OTHER) :])
    except ValueError:
        return text  # not an instant: it will not hash to what was sealed
    return format_instant(value if value.tzinfo else value.replace(tzinfo=UTC))


def _sealed(
    conn: Connection, from_seq: int | None, to_seq: int | None
) -> Generator[EventRecord, None, None]:
    """The sealed events from ``from_seq`` to ``to_seq`` in order, streamed."""
    e = audit_events.c
    # The columns in EventRecord's field order, so each row is built with one call.
    columns = (e.seq, _instant_text(conn), e.actor, e.actor_name, e.actor_role, e.action,
               e.object_type, e.object_id, e.request_id, e.details, e.prev_hash, e.hash)  # fmt: skip
    stmt = select(*columns).where(e.seq.is_not(None)).order_by(e.seq)
    if from_seq is not None:
        stmt = stmt.where(e.seq >= from_seq)
    if to_seq is not None:
        stmt = stmt.where(e.seq <= to_seq)
    make = EventRecord
    with conn.execution_options(yield_per=_BATCH).execute(stmt) as result:
        for rows in result.partitions(_BATCH):  # a list at a time: no call per row
            for row in rows:
                event = make(*row)
                if event.at[0] == _OTHER:
                    event.at = _formatted(event.at)
                yield event
