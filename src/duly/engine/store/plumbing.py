"""The store's connections: write and read transactions, in-process change subscribers, the effects transaction."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Engine, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from duly.engine.auditing import AuditEntry, AuditRecorder
from duly.engine.store.connect import create_db_engine
from duly.engine.store.dialect import pg_execute
from duly.engine.store.events import batched
from duly.engine.store.rows import aware
from duly.engine.store.schema import runs


class SqlEffects:
    """A job's effects transaction; opened on first use, ended by the worker."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Connection | None = None

    @property
    def opened(self) -> bool:
        """Whether the job used it."""
        return self._conn is not None

    @property
    def connection(self) -> Connection:
        """The connection, in a transaction that commits with the run's completion."""
        if self._conn is None:
            self._conn = self._engine.connect()
            self._conn.begin()
        return self._conn

    def rollback(self) -> None:
        """Discard the job's effects."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.rollback()
            self._conn.close()
            self._conn = None

    def commit(self) -> None:
        """Commit the effects with the completion written on the same connection."""
        if self._conn is not None:
            self._conn.commit()
            self._conn.close()
            self._conn = None


class SqlBase:
    """Connections and change notification, shared by every entity's queries."""

    def __init__(self, engine_or_url: Engine | str) -> None:
        self.engine = (
            create_db_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
        )
        self.dialect = self.engine.dialect.name
        self.is_postgres = self.dialect == "postgresql"
        #: The same pool, for single statements that need no transaction around them.
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        #: Records run and schedule changes in their transactions; ``None`` records nothing.
        self.audit: AuditRecorder | None = None
        self._subscribers: list[Callable[[str], None]] = []
        self._sub_lock = threading.Lock()

    @contextlib.contextmanager
    def _write(self, channels: Sequence[str] = ()) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn
            if self.is_postgres:
                for channel in channels:
                    conn.execute(text("SELECT pg_notify(:c, '')"), {"c": f"duly_{channel}"})
        for channel in channels:
            self._publish(channel)

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn = conn.execution_options(duly_readonly=True)
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def _one_statement(self) -> Iterator[Connection]:
        """A connection for a change made in one statement.

        Autocommit (one round trip) when nothing is recorded; with an audit recorder, a
        transaction, so the statement and its events commit together.
        """
        if self.audit is None:
            with self._autocommit.connect() as conn:
                yield conn
        else:
            with self.engine.begin() as conn:
                yield conn

    def _audit(self, conn: Connection, entries: Sequence[AuditEntry], at: datetime) -> None:
        """Record ``entries`` in ``conn``'s transaction, if an audit recorder is plugged in.

        Several runs changed with the same action become one event (see
        :func:`~duly.engine.store.events.batched`).
        """
        if self.audit is not None and entries:
            self.audit(conn, batched(entries), at)

    def _insert(self, table: Any) -> Any:
        return pg_insert(table) if self.is_postgres else sqlite_insert(table)

    def subscribe(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(channel)`` after this process commits a change on ``runs`` or ``schedules``."""
        with self._sub_lock:
            self._subscribers.append(callback)

    def unsubscribe(self, callback: Callable[[str], None]) -> None:
        """Stop calling ``callback``."""
        with self._sub_lock, contextlib.suppress(ValueError):
            self._subscribers.remove(callback)

    def _publish(self, channel: str) -> None:
        with self._sub_lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            callback(channel)

    def effects_begin(self) -> SqlEffects:
        """A lazily opened transaction for a job's effects (see :meth:`run_complete`)."""
        return SqlEffects(self.engine)

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def _insert_many(self, conn: Connection, chunk: Sequence[dict[str, Any]]) -> dict[str, int]:
        """Insert the runs of ``chunk`` that do not exist yet; ``{idempotency_key: id}`` of the new."""
        rows = self._insert_runs(conn, chunk, "idempotency_key", "id")
        return {str(key): int(run_id) for key, run_id in rows}

    def _insert_new_runs(
        self, conn: Connection, chunk: Sequence[dict[str, Any]]
    ) -> list[tuple[datetime, int]]:
        """Insert the runs of ``chunk`` that do not exist yet; ``(scheduled_for, id)`` of each new one."""
        rows = self._insert_runs(conn, chunk, "scheduled_for", "id")
        return [(cast(datetime, aware(at)), int(run_id)) for at, run_id in rows]

    def _insert_runs(
        self, conn: Connection, chunk: Sequence[dict[str, Any]], *returning: str
    ) -> list[Any]:
        """Insert the rows of ``chunk`` (all with the same columns) unless they conflict."""
        if self.is_postgres and len(chunk) > 1:
            # The whole chunk as one JSON parameter: a multi-row VALUES list has a parameter
            # per cell, and compiling and quoting those cost several times the insert.
            columns = ", ".join(chunk[0])
            sql = (f"INSERT INTO runs ({columns}) SELECT {columns} FROM "
                   "json_populate_recordset(NULL::runs, CAST(:rows AS json)) "
                   f"ON CONFLICT DO NOTHING RETURNING {', '.join(returning)}")  # fmt: skip
            rows = json.dumps(list(chunk), default=_json_instant, separators=(",", ":"))
            return list(pg_execute(conn, sql, {"rows": rows}).all())
        stmt = self._insert(runs).on_conflict_do_nothing()
        stmt = stmt.returning(*(runs.c[c] for c in returning))
        # Executed many: SQLAlchemy sends them as few multi-row statements, compiled once.
        return list(conn.execute(stmt, list(chunk)).all())


def _json_instant(value: Any) -> str:
    """An aware instant as PostgreSQL reads a ``timestamptz`` from JSON."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.isoformat()
    raise TypeError(f"not JSON: {value!r}")

