"""The store on SQLAlchemy Core, for SQLite (embedded) and PostgreSQL (production).

Dialect differences are few and explicit:

* claiming: PostgreSQL locks candidate rows ``FOR UPDATE SKIP LOCKED`` and serialises
  per-job and per-serial-key limits with transaction advisory locks; SQLite has one writer,
  so every write transaction starts ``BEGIN IMMEDIATE`` and nothing else is needed;
* wake-ups: PostgreSQL sends ``NOTIFY duly_runs`` / ``duly_schedules`` at commit (see
  :mod:`duly.engine.notifier`); on SQLite subscribers in this process are called after commit,
  and other processes notice within ``max_idle_seconds``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import threading
import zlib
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    Connection,
    Engine,
    Select,
    Table,
    and_,
    any_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    literal,
    literal_column,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from duly.engine.errors import LeaseLost, NotFound, RunConflict
from duly.engine.states import ACTIVE, CLAIMABLE, FINAL, RunStatus
from duly.engine.store.base import (
    AlertRow,
    AttemptRow,
    ClaimedRun,
    ClaimParams,
    CompleteParams,
    FiredSchedule,
    FirePlanner,
    NewAlert,
    NewRun,
    NewSchedule,
    NodeRow,
    RunFilter,
    RunRow,
    ScheduleRow,
    iter_chunks,
)
from duly.engine.store.schema import alerts, job_executions, nodes, runs, schedules
from duly.engine.store.types import UTCDateTime

__all__ = ["SqlEffects", "SqlStore", "create_db_engine"]

log = logging.getLogger(__name__)

_CLAIMABLE = [s.value for s in CLAIMABLE]
#: The claim index's predicate, word for word: SQLite uses a partial index only for a query
#: whose WHERE contains its predicate with the same literals (bound parameters do not
#: count), and a PostgreSQL generic plan likewise. Without it, SQLite sorted every
#: claimable run on each claim.
_IS_CLAIMABLE = runs.c.status.in_([literal_column("'queued'"), literal_column("'retrying'")])
if set(_CLAIMABLE) != {"queued", "retrying"}:  # pragma: no cover - states and index moved apart
    raise RuntimeError("the claim filter must match ix_runs_claim's predicate")
_ACTIVE = [s.value for s in ACTIVE]
_RUN_FIELDS = [f.name for f in fields(RunRow)]
_SCHEDULE_FIELDS = [f.name for f in fields(ScheduleRow)]


def create_db_engine(url: str, *, pool_size: int = 10) -> Engine:
    """An SQLAlchemy engine set up for duly: WAL and ``BEGIN IMMEDIATE`` on SQLite."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30, "isolation_level": None},
            pool_size=pool_size,
            max_overflow=pool_size * 2,
        )
        _setup_sqlite(engine)
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size * 2, pool_pre_ping=True)


#: How long a writer waits for SQLite's single write lock before giving up.
SQLITE_LOCK_TIMEOUT = 30.0


def _setup_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(SQLITE_LOCK_TIMEOUT * 1000)}")
        cur.close()

    # Writers of this process queue on a Python lock before taking SQLite's: waiting in
    # SQLite's busy handler means sleeping in steps of up to 100 ms, which would cap a
    # busy node at a few hundred transactions a second. Other processes on the same file
    # still meet SQLite's own lock.
    lock = threading.Lock()
    holders: set[int] = set()
    holders_guard = threading.Lock()

    def release(proxied: Any) -> None:
        with holders_guard:
            held = id(proxied) in holders
            holders.discard(id(proxied))
        if held:
            lock.release()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # One writer at a time, decided when the transaction starts rather than at its
        # first write, so two processes on one file never deadlock on lock upgrades.
        if conn.get_execution_options().get("duly_readonly", False):
            conn.exec_driver_sql("BEGIN")
            return
        if not lock.acquire(timeout=SQLITE_LOCK_TIMEOUT):
            raise TimeoutError("database is locked: no write lock within "
                               f"{SQLITE_LOCK_TIMEOUT:g} s (a transaction left open?)")
        proxied = conn.connection
        with holders_guard:
            holders.add(id(proxied))
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            release(proxied)
            raise

    dialect = engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(proxied: Any) -> None:
        try:
            commit(proxied)
        finally:
            release(proxied)

    def do_rollback(proxied: Any) -> None:
        try:
            rollback(proxied)
        finally:
            release(proxied)

    dialect.do_commit = do_commit  # type: ignore[method-assign,assignment]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign,assignment]


_COMPLETE_RUN = (
    update(runs)
    .where(runs.c.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        result=bindparam("b_result", type_=runs.c.result.type),
        error_code=bindparam("b_error_code"),
        error_message=bindparam("b_error_message"),
        finished_at=bindparam("b_finished_at", type_=runs.c.finished_at.type),
        not_before=bindparam("b_not_before", type_=runs.c.not_before.type),
        lease_owner=None,
        lease_expires_at=None,
        updated_at=bindparam("b_now", type_=runs.c.updated_at.type),
    )
)
_COMPLETE_ATTEMPT = (
    update(job_executions)
    .where(
        job_executions.c.job_id == bindparam("b_id"),
        job_executions.c.attempt == bindparam("b_attempt"),
    )
    .values(
        status=bindparam("b_status"),
        completed_at=bindparam("b_now", type_=job_executions.c.completed_at.type),
        error_code=bindparam("b_error_code"),
        error_message=bindparam("b_error_message"),
        execution_time_ms=bindparam("b_ms"),
    )
)


def _new_run_values(new: NewRun, now: datetime) -> dict[str, Any]:
    """The row of a queued run made from ``new`` at ``now``."""
    window = new.window_seconds
    return {
        "job_name": new.job_name,
        "scheduled_for": new.scheduled_for,
        "idempotency_key": new.idempotency_key,
        "origin": new.origin,
        "args": new.args,
        "status": RunStatus.QUEUED.value,
        "queue": new.queue,
        "priority": new.priority,
        "max_attempts": new.max_attempts,
        "not_before": new.scheduled_for,
        "window_ends_at": new.scheduled_for + timedelta(seconds=window) if window is not None else None,
        "created_at": now,
        "updated_at": now,
    }


def any_of(column: Any, values: Collection[Any], *, postgres: bool) -> ColumnElement[bool]:
    """``column IN (values)``; on PostgreSQL ``column = ANY(:array)``.

    One array parameter keeps the statement's text the same for any number of values, so
    the driver parses it once and the server reuses its plan: an expanded ``IN`` of a few
    hundred ids costs more to build and parse than to run.
    """
    result: ColumnElement[bool] = (
        column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
        if postgres
        else column.in_(list(values))
    )
    return result


def pg_execute(conn: Connection, sql: str, params: dict[str, Any]) -> Any:
    """Run a PostgreSQL-only statement, its ``:name`` parameters sent in binary.

    For statements over arrays (``unnest``, ``= ANY``): psycopg's text format quotes and
    escapes every element of an array with a regular expression, which cost more than the
    statement; the binary format does not.
    """
    return conn.exec_driver_sql(_binary_placeholders(sql), params)


@functools.lru_cache(maxsize=128)
def _binary_placeholders(sql: str) -> str:
    return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)b", sql)


def insert_rows(
    conn: Connection, table: Table, rows: Sequence[dict[str, Any]], *, skip_conflicts: bool = False
) -> None:
    """Insert ``rows`` (dicts with the same keys) into ``table`` with one statement.

    On PostgreSQL: ``INSERT … SELECT … FROM unnest(arrays)`` — one statement whose text does
    not depend on the number of rows, instead of one statement per row (``executemany``),
    whose per-row cost dominated set-based jobs. On SQLite: ``executemany``.
    ``skip_conflicts`` adds ``ON CONFLICT DO NOTHING``.
    """
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        stmt = sqlite_insert(table).on_conflict_do_nothing() if skip_conflicts else insert(table)
        conn.execute(stmt, list(rows))
        return
    names = list(rows[0])
    json_cols = {n for n in names if isinstance(table.c[n].type, JSON)}
    params = {
        f"a{i}": [json.dumps(r[n]) for r in rows] if n in json_cols else [r[n] for r in rows]
        for i, n in enumerate(names)
    }
    pg_execute(conn, _unnest_insert(conn.dialect, table, tuple(names), skip_conflicts), params)


@functools.lru_cache(maxsize=64)
def _unnest_insert(dialect: Any, table: Table, names: tuple[str, ...], skip: bool) -> str:
    arrays, picks = [], []
    for i, name in enumerate(names):
        col_type = table.c[name].type
        if isinstance(col_type, JSON):
            arrays.append(f"CAST(:a{i} AS text[])")
            picks.append(f"CAST(v.c{i} AS json)")
        else:
            arrays.append(f"CAST(:a{i} AS {col_type.compile(dialect=dialect)}[])")
            picks.append(f"v.c{i}")
    aliases = ", ".join(f"c{i}" for i in range(len(names)))
    return (
        f"INSERT INTO {table.name} ({', '.join(names)}) SELECT {', '.join(picks)}"
        f" FROM unnest({', '.join(arrays)}) AS v({aliases})"
        + (" ON CONFLICT DO NOTHING" if skip else "")
    )


def _channels_of(batch: Sequence[CompleteParams]) -> list[str]:
    """A retry puts its run back in the queue: wake the workers."""
    return ["runs"] if any(p.status is RunStatus.RETRYING for p in batch) else []


# PostgreSQL: a batch of outcomes as one statement over arrays (one row each), instead of
# one statement per row — the per-row cost of executemany dominated the completion path.
_PG_COMPLETE_RUNS = (
    "UPDATE runs AS r SET status = v.status, result = CAST(v.result AS json),"
    " error_code = v.error_code, error_message = v.error_message,"
    " finished_at = v.finished_at, not_before = v.not_before, lease_owner = NULL,"
    " lease_expires_at = NULL, updated_at = v.now"
    " FROM unnest(CAST(:ids AS bigint[]), CAST(:statuses AS text[]), CAST(:results AS text[]),"
    " CAST(:codes AS text[]), CAST(:messages AS text[]), CAST(:finished AS timestamptz[]),"
    " CAST(:not_before AS timestamptz[]), CAST(:now AS timestamptz[]))"
    " AS v(id, status, result, error_code, error_message, finished_at, not_before, now)"
    " WHERE r.id = v.id"
)
_PG_COMPLETE_ATTEMPTS = (
    "UPDATE job_executions AS e SET status = v.status, completed_at = v.now,"
    " error_code = v.error_code, error_message = v.error_message, execution_time_ms = v.ms"
    " FROM unnest(CAST(:ids AS bigint[]), CAST(:attempts AS integer[]),"
    " CAST(:statuses AS text[]), CAST(:now AS timestamptz[]), CAST(:codes AS text[]),"
    " CAST(:messages AS text[]), CAST(:ms AS integer[]))"
    " AS v(id, attempt, status, now, error_code, error_message, ms)"
    " WHERE e.job_id = v.id AND e.attempt = v.attempt"
)


# PostgreSQL: fenced outcomes without job effects in one statement (one round trip, run
# in autocommit): the attempt rows are updated only for the runs whose lease held.
_PG_COMPLETE_FENCED = (
    "WITH v AS (SELECT * FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS integer[]),"
    " CAST(:attempts AS integer[]), CAST(:statuses AS text[]), CAST(:results AS text[]),"
    " CAST(:codes AS text[]), CAST(:messages AS text[]), CAST(:finished AS timestamptz[]),"
    " CAST(:not_before AS timestamptz[]), CAST(:now AS timestamptz[]),"
    " CAST(:attempt_statuses AS text[]), CAST(:ms AS integer[]))"
    " AS v(id, token, attempt, status, result, error_code, error_message, finished_at,"
    " not_before, now, attempt_status, ms)),"
    " done AS (UPDATE runs AS r SET status = v.status, result = CAST(v.result AS json),"
    " error_code = v.error_code, error_message = v.error_message,"
    " finished_at = v.finished_at, not_before = v.not_before, lease_owner = NULL,"
    " lease_expires_at = NULL, updated_at = v.now"
    " FROM v WHERE r.id = v.id AND r.fencing_token = v.token AND r.status = 'running'"
    " RETURNING r.id),"
    " attempts AS (UPDATE job_executions AS e SET status = v.attempt_status,"
    " completed_at = v.now, error_code = v.error_code, error_message = v.error_message,"
    " execution_time_ms = v.ms FROM v JOIN done ON done.id = v.id"
    " WHERE e.job_id = v.id AND e.attempt = v.attempt)"
    " SELECT id FROM done"
)

# PostgreSQL: take the leases and add the attempt records in one statement. The columns
# are those of RunRow, in its order (see _pg_run).
_PG_TAKE_LEASES = (
    "WITH taken AS (UPDATE runs SET status = 'running', attempt = attempt + 1,"
    " fencing_token = fencing_token + 1, lease_owner = :node, lease_expires_at = :expires,"
    " started_at = coalesce(started_at, :now), updated_at = :now"
    # No status guard: the rows were selected claimable FOR UPDATE by this transaction, so
    # they still are; and a guard on status leads the planner to the partial indexes of
    # claimable runs (thousands of entries) instead of the primary key.
    " WHERE id = ANY(CAST(:ids AS bigint[]))"
    f" RETURNING {', '.join(_RUN_FIELDS)}),"
    " attempts AS (INSERT INTO job_executions"
    " (job_id, job_name, attempt, fencing_token, node, started_at, status)"
    " SELECT id, job_name, attempt, fencing_token, :node, :now, 'running' FROM taken)"
    f" SELECT {', '.join(_RUN_FIELDS)} FROM taken"
)
# PostgreSQL, the common case in one autocommit statement (one round trip): the first
# ``limit`` claimable runs, taken only if none of them is of a limited job or has a serial
# key (``ok``); otherwise nothing is taken and the claim goes the general way
# (SqlStore._claim_candidates and _filter_by_limits, under advisory locks). One row is
# always returned: ``ok`` and the run's columns (NULL when nothing was claimable). One
# queue: the claim index then yields the runs in claim order (``queue = ANY(…)`` sorted
# every claimable run).
_PG_CLAIM_TAKE = (
    " free AS (SELECT NOT EXISTS (SELECT 1 FROM cand WHERE serial_key IS NOT NULL"
    " OR job_name = ANY(CAST(:limited AS text[]))) AS ok),"
    " taken AS (UPDATE runs SET status = 'running', attempt = attempt + 1,"
    " fencing_token = fencing_token + 1, lease_owner = :node, lease_expires_at = :expires,"
    " started_at = coalesce(started_at, :now), updated_at = :now"
    " FROM cand, free WHERE free.ok AND runs.id = cand.id"
    f" RETURNING {', '.join(f'runs.{name}' for name in _RUN_FIELDS)}),"
    " attempts AS (INSERT INTO job_executions"
    " (job_id, job_name, attempt, fencing_token, node, started_at, status)"
    " SELECT id, job_name, attempt, fencing_token, :node, :now, 'running' FROM taken)"
    f" SELECT free.ok, {', '.join(f'taken.{name}' for name in _RUN_FIELDS)}"
    " FROM free LEFT JOIN taken ON true"
)
_PG_CLAIM_FAST = (
    "WITH cand AS (SELECT id, job_name, serial_key FROM runs"
    " WHERE runs.status IN ('queued', 'retrying') AND queue = :queue AND not_before <= :now"
    " ORDER BY priority DESC, not_before, id LIMIT :limit FOR UPDATE SKIP LOCKED),"
    + _PG_CLAIM_TAKE
)
# The same for a worker that asks for some jobs only (a node with batch jobs claims them
# apart from the rest): the first ``limit`` of each job from ix_runs_claim_job, then the
# first ``limit`` of those. A filter ``job_name = ANY(…)`` over ix_runs_claim read every
# queued run of other jobs (12–20 ms a claim with 50,000 queued), or sorted every run of
# those jobs, as the planner's statistics happened to be; one ordered index range per job
# reads at most ``limit`` rows each, whatever the statistics. Rows locked by a job's range
# but not taken are free again when the statement ends.
_PG_CLAIM_FAST_JOBS = (
    "WITH cand AS (SELECT c.id, c.job_name, c.serial_key"
    " FROM unnest(CAST(:jobs AS text[])) AS j(name) CROSS JOIN LATERAL"
    " (SELECT id, job_name, serial_key, priority, not_before FROM runs"
    " WHERE runs.status IN ('queued', 'retrying') AND queue = :queue AND job_name = j.name"
    " AND not_before <= :now ORDER BY priority DESC, not_before, id LIMIT :limit"
    " FOR UPDATE SKIP LOCKED) AS c"
    " ORDER BY c.priority DESC, c.not_before, c.id LIMIT :limit),"
    + _PG_CLAIM_TAKE
)
_RUN_TIMES = tuple(
    i for i, name in enumerate(_RUN_FIELDS) if isinstance(runs.c[name].type, UTCDateTime)
)
_RUN_STATUS = _RUN_FIELDS.index("status")


def _pg_run(row: Sequence[Any]) -> RunRow:
    """A :class:`RunRow` from a row of :data:`_PG_TAKE_LEASES` (psycopg loads json itself)."""
    values = list(row)
    for i in _RUN_TIMES:
        if values[i] is not None:
            values[i] = values[i].astimezone(UTC)
    values[_RUN_STATUS] = RunStatus(values[_RUN_STATUS])
    return RunRow(*values)


def _pg_complete_params(batch: Sequence[CompleteParams]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The array parameters of :data:`_PG_COMPLETE_RUNS` and :data:`_PG_COMPLETE_ATTEMPTS`."""
    run_rows = [_complete_run_params(p) for p in batch]
    attempt_rows = [_complete_attempt_params(p) for p in batch]
    runs_params = {
        "ids": [r["b_id"] for r in run_rows],
        "statuses": [r["b_status"] for r in run_rows],
        "results": [json.dumps(r["b_result"]) for r in run_rows],
        "codes": [r["b_error_code"] for r in run_rows],
        "messages": [r["b_error_message"] for r in run_rows],
        "finished": [r["b_finished_at"] for r in run_rows],
        "not_before": [r["b_not_before"] for r in run_rows],
        "now": [r["b_now"] for r in run_rows],
    }
    attempts_params = {
        "ids": [a["b_id"] for a in attempt_rows],
        "attempts": [a["b_attempt"] for a in attempt_rows],
        "statuses": [a["b_status"] for a in attempt_rows],
        "now": [a["b_now"] for a in attempt_rows],
        "codes": [a["b_error_code"] for a in attempt_rows],
        "messages": [a["b_error_message"] for a in attempt_rows],
        "ms": [a["b_ms"] for a in attempt_rows],
    }
    return runs_params, attempts_params


def _pg_fenced_params(batch: Sequence[CompleteParams]) -> dict[str, Any]:
    """The array parameters of :data:`_PG_COMPLETE_FENCED`."""
    runs_params, attempts_params = _pg_complete_params(batch)
    return {
        **runs_params,
        "tokens": [p.fencing_token for p in batch],
        "attempts": attempts_params["attempts"],
        "attempt_statuses": attempts_params["statuses"],
        "ms": attempts_params["ms"],
    }


def _complete_run_params(p: CompleteParams) -> dict[str, Any]:
    return {
        "b_id": p.run_id,
        "b_status": p.status.value,
        "b_result": p.result,
        "b_error_code": p.error_code,
        "b_error_message": p.error_message,
        "b_finished_at": p.now if p.status in FINAL else None,
        "b_not_before": p.not_before or p.now,
        "b_now": p.now,
    }


def _complete_attempt_params(p: CompleteParams) -> dict[str, Any]:
    failed = p.status in (RunStatus.RETRYING, RunStatus.FAILED)
    return {
        "b_id": p.run_id,
        "b_attempt": p.attempt,
        "b_status": "failed" if failed else p.status.value,
        "b_now": p.now,
        "b_error_code": p.error_code,
        "b_error_message": p.error_message,
        "b_ms": int((p.now - p.started_at).total_seconds() * 1000),
    }


def _lock_id(key: str) -> int:
    """A stable signed 64-bit id for a PostgreSQL advisory lock."""
    return zlib.crc32(f"duly:{key}".encode()) - (1 << 31)


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


class SqlStore:
    """The :class:`~duly.engine.store.base.Store` over SQLAlchemy Core."""

    def __init__(self, engine_or_url: Engine | str) -> None:
        self.engine = (
            create_db_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
        )
        self.dialect = self.engine.dialect.name
        self.is_postgres = self.dialect == "postgresql"
        #: The same pool, for single statements that need no transaction around them.
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._subscribers: list[Callable[[str], None]] = []
        self._sub_lock = threading.Lock()

    # -- plumbing -----------------------------------------------------------------

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

    # -- schedules ----------------------------------------------------------------

    def schedule_upsert(
        self,
        new: NewSchedule,
        now: datetime,
        next_fire_at: Callable[[NewSchedule], datetime | None],
    ) -> ScheduleRow:
        """Create the schedule ``new.name`` or update it; its next fire moves only if its definition changed."""
        values = {f.name: getattr(new, f.name) for f in fields(NewSchedule)}
        with self._write(["schedules"]) as conn:
            if self.is_postgres:
                # Nodes starting together upsert the same configured schedules: serialise
                # on the name so the second sees the first's row instead of a unique error.
                conn.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
                    {"k": f"duly.schedule:{new.name}"},
                )
            current = conn.execute(
                select(schedules).where(schedules.c.name == new.name)
            ).one_or_none()
            if current is None:
                values.update(next_fire_at=next_fire_at(new), created_at=now, updated_at=now)
                conn.execute(insert(schedules).values(**values))
            else:
                old = _schedule(current)
                changed = _definition(old) != new.definition()
                if changed or old.paused != new.paused:
                    values["next_fire_at"] = next_fire_at(new)
                    values["version"] = old.version + 1
                values["updated_at"] = now
                conn.execute(update(schedules).where(schedules.c.id == old.id).values(**values))
            row = conn.execute(select(schedules).where(schedules.c.name == new.name)).one()
        return _schedule(row)

    def schedule_get(self, name: str) -> ScheduleRow | None:
        """The schedule called ``name``, if any."""
        with self._read() as conn:
            row = conn.execute(select(schedules).where(schedules.c.name == name)).one_or_none()
        return _schedule(row) if row is not None else None

    def schedule_list(self) -> list[ScheduleRow]:
        """Every schedule, by name."""
        with self._read() as conn:
            rows = conn.execute(select(schedules).order_by(schedules.c.name)).all()
        return [_schedule(r) for r in rows]

    def schedule_set_paused(
        self, name: str, paused: bool, now: datetime, next_fire_at: datetime | None
    ) -> ScheduleRow:
        """Pause or resume ``name``; resuming sets the next fire given (fires while paused are not run)."""
        with self._write(["schedules"]) as conn:
            values: dict[str, Any] = {"paused": paused, "updated_at": now}
            if not paused:
                values["next_fire_at"] = next_fire_at
            res = conn.execute(
                update(schedules)
                .where(schedules.c.name == name)
                .values(**values)
                .returning(*schedules.c)
            ).one_or_none()
        if res is None:
            raise NotFound(f"no schedule named {name!r}")
        return _schedule(res)

    def schedule_delete(self, name: str) -> bool:
        """Delete ``name`` (its runs stay, detached); report whether it existed."""
        with self._write(["schedules"]) as conn:
            sid = conn.execute(select(schedules.c.id).where(schedules.c.name == name)).scalar()
            if sid is None:
                return False
            conn.execute(update(runs).where(runs.c.schedule_id == sid).values(schedule_id=None))
            conn.execute(delete(schedules).where(schedules.c.id == sid))
        return True

    def schedule_next_due(self) -> datetime | None:
        """The earliest ``next_fire_at`` of an unpaused schedule."""
        with self._read() as conn:
            value = conn.execute(
                select(func.min(schedules.c.next_fire_at)).where(
                    schedules.c.paused.is_(False), schedules.c.next_fire_at.is_not(None)
                )
            ).scalar()
        return _aware(value)

    def schedule_fire_due(
        self, now: datetime, limit: int, planner: FirePlanner
    ) -> list[FiredSchedule]:
        """Fire up to ``limit`` due schedules in one transaction.

        For each, ``planner`` says which runs to insert and the next fire; runs are unique on
        ``(schedule_id, scheduled_for)`` so two nodes firing the same schedule insert one run.
        """
        fired: list[FiredSchedule] = []
        with self._write(["runs"]) as conn:
            stmt = (
                select(schedules)
                .where(schedules.c.paused.is_(False), schedules.c.next_fire_at <= now)
                .order_by(schedules.c.next_fire_at)
                .limit(limit)
            )
            if self.is_postgres:
                stmt = stmt.with_for_update(skip_locked=True)
            due = [_schedule(r) for r in conn.execute(stmt).all()]
            if not due:
                return []
            active = self._active_schedule_ids(conn, [s.id for s in due])
            for sched in due:
                decision = planner(sched, sched.id in active)
                created = self._insert_fired_runs(conn, sched, decision, now)
                if decision.cancel_previous:
                    self._cancel_active_of_schedule(conn, sched.id, now, keep=created)
                last = max((r.scheduled_for for r in decision.runs), default=sched.last_fire_at)
                conn.execute(
                    update(schedules)
                    .where(schedules.c.id == sched.id)
                    .values(next_fire_at=decision.next_fire_at, last_fire_at=last, updated_at=now)
                )
                fired.append(FiredSchedule(sched, decision, tuple(created)))
        return fired

    def _active_schedule_ids(self, conn: Connection, ids: list[int]) -> set[int]:
        rows = conn.execute(
            select(runs.c.schedule_id)
            .where(runs.c.schedule_id.in_(ids), runs.c.status.in_(_ACTIVE))
            .distinct()
        ).scalars()
        return set(rows)

    def _insert_fired_runs(
        self, conn: Connection, sched: ScheduleRow, decision: Any, now: datetime
    ) -> list[int]:
        if not decision.runs:
            return []
        window = decision.window_seconds
        serial = f"s{sched.id}" if sched.overlap == "queue" else None
        values = [
            {
                "job_name": sched.job_name,
                "schedule_id": sched.id,
                "scheduled_for": planned.scheduled_for,
                "idempotency_key": f"{sched.id}:{planned.scheduled_for.isoformat()}",
                "origin": "schedule",
                "args": sched.args,
                "status": planned.status.value,
                "queue": decision.queue or sched.queue,
                "priority": decision.priority if decision.priority is not None else sched.priority,
                "serial_key": serial,
                "max_attempts": decision.max_attempts,
                "not_before": planned.scheduled_for,
                "window_ends_at": planned.scheduled_for + timedelta(seconds=window)
                if window is not None
                else None,
                "finished_at": None if planned.status is RunStatus.QUEUED else now,
                "error_code": "MISFIRE"
                if planned.status is RunStatus.MISSED
                else ("OVERLAP" if planned.status is RunStatus.SKIPPED else None),
                "created_at": now,
                "updated_at": now,
            }
            for planned in decision.runs
        ]
        stmt = self._insert(runs).on_conflict_do_nothing().returning(runs.c.id)
        created: list[int] = []
        for chunk in iter_chunks(values, 500):
            created.extend(
                conn.execute(stmt, list(chunk)).scalars().all()
                if len(chunk) == 1
                else self._insert_many(conn, chunk)
            )
        return created

    def _insert_many(self, conn: Connection, chunk: Sequence[dict[str, Any]]) -> list[int]:
        # executemany with RETURNING is supported on both drivers in SQLAlchemy 2 ("insertmanyvalues").
        stmt = self._insert(runs).values(list(chunk)).on_conflict_do_nothing().returning(runs.c.id)
        return list(conn.execute(stmt).scalars().all())

    def _cancel_active_of_schedule(
        self, conn: Connection, schedule_id: int, now: datetime, keep: list[int]
    ) -> None:
        base = and_(runs.c.schedule_id == schedule_id, runs.c.id.not_in(keep or [-1]))
        conn.execute(
            update(runs)
            .where(base, runs.c.status.in_(_CLAIMABLE))
            .values(
                status=RunStatus.CANCELLED.value,
                finished_at=now,
                updated_at=now,
                error_code="OVERLAP",
                error_message="cancelled by a newer fire (cancel_previous)",
            )
        )
        conn.execute(
            update(runs)
            .where(base, runs.c.status == RunStatus.RUNNING.value)
            .values(cancel_requested=True, updated_at=now)
        )

    # -- runs ---------------------------------------------------------------------

    def run_enqueue(self, new: NewRun, now: datetime) -> tuple[RunRow, bool]:
        """Insert a run unless one with the same idempotency key exists; return it and whether it is new."""
        values = _new_run_values(new, now)
        with self._write(["runs"]) as conn:
            created = conn.execute(
                self._insert(runs).values(**values).on_conflict_do_nothing().returning(runs.c.id)
            ).scalar()
            row = conn.execute(
                select(runs).where(runs.c.idempotency_key == new.idempotency_key)
            ).one()
        return _run(row), created is not None

    def run_enqueue_many(self, news: Sequence[NewRun], now: datetime) -> dict[str, int]:
        """:meth:`run_enqueue` for many runs in one transaction; returns ``{idempotency_key: run id}``.

        A key that exists already keeps its run (and its id is returned).
        """
        values = [_new_run_values(new, now) for new in news]
        ids: dict[str, int] = {}
        with self._write(["runs"]) as conn:
            for chunk in iter_chunks(values, 500):
                self._insert_many(conn, chunk)
                keys = [v["idempotency_key"] for v in chunk]
                for key, run_id in conn.execute(
                    select(runs.c.idempotency_key, runs.c.id).where(runs.c.idempotency_key.in_(keys))
                ).all():
                    ids[key] = int(run_id)
        return ids

    def run_claim(self, params: ClaimParams) -> list[ClaimedRun]:
        """Take up to ``params.limit`` claimable runs under a new lease each.

        Respects per-job limits across nodes and runs serial keys one at a time, in order.
        """
        if params.limit <= 0:
            return []
        if self.is_postgres and len(params.queues) == 1:
            fast = self._claim_fast(params)
            if fast is not None:
                return fast
        with self._write() as conn:
            candidates = self._claim_candidates(conn, params)
            if not candidates:
                return []
            chosen = self._filter_by_limits(conn, candidates, params)
            if not chosen:
                return []
            return self._take_leases(conn, chosen, params)

    def _claim_fast(self, params: ClaimParams) -> list[ClaimedRun] | None:
        """PostgreSQL: claim in one statement; ``None`` if a limit or serial key is involved."""
        with self._autocommit.connect() as conn:
            values: dict[str, Any] = {
                "queue": params.queues[0],
                "now": params.now,
                "limit": params.limit,
                "limited": sorted(params.job_limits),
                "node": params.node,
                "expires": params.now + timedelta(seconds=params.lease_seconds),
            }
            sql = _PG_CLAIM_FAST
            if params.job_names is not None:
                sql, values["jobs"] = _PG_CLAIM_FAST_JOBS, sorted(params.job_names)
            rows = pg_execute(conn, sql, values).all()
        if not rows[0][0]:
            return None
        taken = [_pg_run(row[1:]) for row in rows if row[1] is not None]
        taken.sort(key=lambda r: (-r.priority, r.not_before, r.id))
        return [ClaimedRun(r) for r in taken]

    def _claim_candidates(self, conn: Connection, params: ClaimParams) -> list[Any]:
        # Look further than the limit so runs held back by a limit do not starve the rest
        # (bounded: a big batch claim should not lock and read four times its size).
        limit = params.limit + min(params.limit * 3, 64)
        if params.job_names is None:
            stmt = self._candidates_query(limit, params.now, runs.c.queue.in_(list(params.queues)))
            return list(conn.execute(stmt).all())
        # Some jobs only: one ordered range of ix_runs_claim_job per queue and job, then the
        # first of those (see _PG_CLAIM_FAST_JOBS for why not ``job_name IN (…)``).
        ranges = [
            select(*self._candidates_query(limit, params.now, runs.c.queue == queue,
                                           runs.c.job_name == job)
                   .subquery().c)
            for queue in params.queues
            for job in sorted(params.job_names)
        ]  # fmt: skip
        if not ranges:
            return []
        found = union_all(*ranges).subquery()
        return list(conn.execute(
            select(found.c.id, found.c.job_name, found.c.serial_key, found.c.scheduled_for)
            .order_by(found.c.priority.desc(), found.c.not_before, found.c.id)
            .limit(limit)
        ).all())  # fmt: skip

    def _candidates_query(
        self, limit: int, now: datetime, *where: ColumnElement[bool]
    ) -> Select[Any]:
        """The first ``limit`` claimable runs due now matching ``where``, in claim order."""
        stmt = (
            select(runs.c.id, runs.c.job_name, runs.c.serial_key, runs.c.scheduled_for,
                   runs.c.priority, runs.c.not_before)
            .where(_IS_CLAIMABLE, runs.c.not_before <= now, *where)
            .order_by(runs.c.priority.desc(), runs.c.not_before, runs.c.id)
            .limit(limit)
        )  # fmt: skip
        return stmt.with_for_update(skip_locked=True) if self.is_postgres else stmt

    def _filter_by_limits(
        self, conn: Connection, candidates: list[Any], params: ClaimParams
    ) -> list[int]:
        limited_jobs = sorted({c.job_name for c in candidates if c.job_name in params.job_limits})
        serial_keys = sorted({c.serial_key for c in candidates if c.serial_key})
        if self.is_postgres:
            for key in [f"job:{j}" for j in limited_jobs] + [f"serial:{k}" for k in serial_keys]:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_id(key)})
        running: dict[str, int] = {}
        if limited_jobs:
            running = dict(
                conn.execute(
                    select(runs.c.job_name, func.count())
                    .where(
                        runs.c.job_name.in_(limited_jobs), runs.c.status == RunStatus.RUNNING.value
                    )
                    .group_by(runs.c.job_name)
                ).all()
            )
        busy_serial: set[str] = set()
        first_of_key: dict[str, datetime | None] = {}
        if serial_keys:
            busy_serial = set(
                conn.execute(
                    select(runs.c.serial_key).where(
                        runs.c.serial_key.in_(serial_keys), runs.c.status == RunStatus.RUNNING.value
                    )
                ).scalars()
            )
            # A run waiting to retry holds its place: later runs of the key wait for it.
            waiting = conn.execute(
                select(runs.c.serial_key, func.min(runs.c.scheduled_for))
                .where(runs.c.serial_key.in_(serial_keys), runs.c.status.in_(_CLAIMABLE))
                .group_by(runs.c.serial_key)
            ).all()
            first_of_key = {k: _aware(t) for k, t in waiting}
        chosen: list[int] = []
        for cand in candidates:
            if len(chosen) >= params.limit:
                break
            limit = params.job_limits.get(cand.job_name)
            if limit is not None and running.get(cand.job_name, 0) >= limit:
                continue
            if cand.serial_key:
                if cand.serial_key in busy_serial:
                    continue
                if _aware(cand.scheduled_for) != first_of_key.get(cand.serial_key):
                    continue
                busy_serial.add(cand.serial_key)
            if cand.job_name in params.job_limits:
                running[cand.job_name] = running.get(cand.job_name, 0) + 1
            chosen.append(cand.id)
        return chosen

    def _take_leases(
        self, conn: Connection, ids: list[int], params: ClaimParams
    ) -> list[ClaimedRun]:
        expires = params.now + timedelta(seconds=params.lease_seconds)
        order = {run_id: i for i, run_id in enumerate(ids)}
        if self.is_postgres:
            taken = pg_execute(conn, _PG_TAKE_LEASES, {
                "ids": ids, "node": params.node, "expires": expires, "now": params.now,
            }).all()  # fmt: skip
            return [ClaimedRun(r) for r in sorted(map(_pg_run, taken), key=lambda r: order[r.id])]
        rows = conn.execute(
            update(runs)
            .where(any_of(runs.c.id, ids, postgres=self.is_postgres), runs.c.status.in_(_CLAIMABLE))
            .values(
                status=RunStatus.RUNNING.value,
                attempt=runs.c.attempt + 1,
                fencing_token=runs.c.fencing_token + 1,
                lease_owner=params.node,
                lease_expires_at=expires,
                started_at=func.coalesce(runs.c.started_at, params.now),
                updated_at=params.now,
            )
            .returning(*runs.c)
        ).all()
        claimed = sorted((_run(r) for r in rows), key=lambda r: order[r.id])
        if not claimed:
            return []
        # One attempt record per claimed run, copied from the rows just updated (one statement).
        taken = [r.id for r in claimed]
        conn.execute(
            insert(job_executions).from_select(
                ["job_id", "job_name", "attempt", "fencing_token", "node", "started_at", "status"],
                select(
                    runs.c.id,
                    runs.c.job_name,
                    runs.c.attempt,
                    runs.c.fencing_token,
                    literal(params.node, job_executions.c.node.type),
                    literal(params.now, job_executions.c.started_at.type),
                    literal(RunStatus.RUNNING.value, job_executions.c.status.type),
                ).where(runs.c.id.in_(taken)),
            )
        )
        return [ClaimedRun(r) for r in claimed]

    def run_complete(self, params: CompleteParams, effects: SqlEffects | None = None) -> RunRow:
        """Write an attempt's outcome if the lease is still ours, with the job's effects if any.

        :raises LeaseLost: the fencing token moved on (the reaper or another node took the run);
            the job's effects are rolled back.
        """
        channels = ["runs"] if params.status is RunStatus.RETRYING else []
        if effects is not None and effects.opened:
            conn = effects.connection
            try:
                row = self._complete_on(conn, params)
            except BaseException:
                effects.rollback()
                raise
            effects.commit()
            for channel in channels:
                self._publish(channel)
            return row
        with self._write(channels) as conn:
            return self._complete_on(conn, params)

    def run_complete_many(self, batch: Sequence[CompleteParams]) -> list[bool]:
        """Write several attempts' outcomes (without job effects) in one transaction.

        Each is fenced on its own: the result is ``False`` where the lease was lost, and the
        others are written regardless. Batching, with statements built once and executed
        for many rows, is what lets one node complete thousands of short runs a second.
        """
        if not batch:
            return []
        channels = _channels_of(batch)
        if self.is_postgres and not channels:
            # One fenced statement: atomic on its own, so no transaction around it.
            with self._autocommit.connect() as conn:
                held = set(pg_execute(conn, _PG_COMPLETE_FENCED, _pg_fenced_params(batch)).scalars())
            return [p.run_id in held for p in batch]
        with self._write(channels) as conn:
            return self._complete_many_on(conn, batch, all_or_nothing=False)

    def run_complete_batch(self, batch: Sequence[CompleteParams], effects: SqlEffects) -> list[bool]:
        """Write the outcomes of a batch job's runs with their shared effects, all or nothing.

        If every lease is still held, the outcomes and the effects commit together and the
        result is all ``True``. Otherwise nothing is written, the effects are rolled back,
        and the result says which leases are still held (their runs may be handed back).
        """
        if not batch:
            effects.rollback()
            return []
        channels = _channels_of(batch)
        conn = effects.connection
        try:
            ok = self._complete_many_on(conn, batch, all_or_nothing=True)
            if not all(ok):
                effects.rollback()
                return ok
            if self.is_postgres:
                for channel in channels:
                    conn.execute(text("SELECT pg_notify(:c, '')"), {"c": f"duly_{channel}"})
        except BaseException:
            effects.rollback()
            raise
        effects.commit()
        for channel in channels:
            self._publish(channel)
        return ok

    def _complete_many_on(
        self, conn: Connection, batch: Sequence[CompleteParams], *, all_or_nothing: bool
    ) -> list[bool]:
        check = select(runs.c.id, runs.c.fencing_token).where(
            any_of(runs.c.id, [p.run_id for p in batch], postgres=self.is_postgres),
            runs.c.status == RunStatus.RUNNING.value,
        )
        if self.is_postgres:
            check = check.with_for_update()
        held = {(run_id, token) for run_id, token in conn.execute(check)}
        ok = [(p.run_id, p.fencing_token) in held for p in batch]
        if all_or_nothing and not all(ok):
            return ok
        mine = [p for p, good in zip(batch, ok, strict=True) if good]
        if mine and self.is_postgres:
            runs_params, attempts_params = _pg_complete_params(mine)
            pg_execute(conn, _PG_COMPLETE_RUNS, runs_params)
            pg_execute(conn, _PG_COMPLETE_ATTEMPTS, attempts_params)
        elif mine:
            conn.execute(_COMPLETE_RUN, [_complete_run_params(p) for p in mine])
            conn.execute(_COMPLETE_ATTEMPT, [_complete_attempt_params(p) for p in mine])
        return ok

    def _complete_on(self, conn: Connection, params: CompleteParams) -> RunRow:
        final = params.status in FINAL
        row = conn.execute(
            update(runs)
            .where(
                runs.c.id == params.run_id,
                runs.c.status == RunStatus.RUNNING.value,
                runs.c.fencing_token == params.fencing_token,
            )
            .values(
                status=params.status.value,
                result=params.result,
                error_code=params.error_code,
                error_message=params.error_message,
                finished_at=params.now if final else None,
                not_before=params.not_before or params.now,
                lease_owner=None,
                lease_expires_at=None,
                updated_at=params.now,
            )
            .returning(*runs.c)
        ).one_or_none()
        if row is None:
            raise LeaseLost(f"run {params.run_id}: lease {params.fencing_token} is no longer held")
        self._finish_attempt(
            conn,
            params.run_id,
            params.attempt,
            params.status.value,
            params.error_code,
            params.error_message,
            params.started_at,
            params.now,
        )
        return _run(row)

    def _finish_attempt(
        self,
        conn: Connection,
        run_id: int,
        attempt: int,
        status: str,
        code: str | None,
        message: str | None,
        started_at: datetime,
        now: datetime,
    ) -> None:
        attempt_status = (
            "failed" if status in (RunStatus.RETRYING.value, RunStatus.FAILED.value) else status
        )
        values: dict[str, Any] = {
            "status": attempt_status,
            "completed_at": now,
            "error_code": code,
            "error_message": message,
        }
        if attempt_status != "handed_back":
            values["execution_time_ms"] = int((now - started_at).total_seconds() * 1000)
        conn.execute(
            update(job_executions)
            .where(job_executions.c.job_id == run_id, job_executions.c.attempt == attempt)
            .values(**values)
        )

    def run_hand_back(self, run_id: int, fencing_token: int, attempt: int, now: datetime) -> bool:
        """Return a run this node could not finish (shutdown) to the queue; the attempt is not counted."""
        with self._write(["runs"]) as conn:
            res = conn.execute(
                update(runs)
                .where(
                    runs.c.id == run_id,
                    runs.c.fencing_token == fencing_token,
                    runs.c.status == RunStatus.RUNNING.value,
                )
                .values(
                    status=RunStatus.RETRYING.value,
                    not_before=now,
                    max_attempts=runs.c.max_attempts + 1,
                    lease_owner=None,
                    lease_expires_at=None,
                    error_code="SHUTDOWN",
                    error_message="handed back by a node shutting down",
                    updated_at=now,
                )
            )
            if res.rowcount == 1:
                self._finish_attempt(
                    conn,
                    run_id,
                    attempt,
                    "handed_back",
                    "SHUTDOWN",
                    "handed back by a node shutting down",
                    now,
                    now,
                )
        return res.rowcount == 1

    def run_next_claimable_at(self, queues: Sequence[str]) -> datetime | None:
        """The earliest ``not_before`` of a claimable run in ``queues``."""
        with self._read() as conn:
            value = conn.execute(
                select(func.min(runs.c.not_before)).where(
                    _IS_CLAIMABLE, runs.c.queue.in_(list(queues))
                )
            ).scalar()
        return _aware(value)

    def run_get(self, run_id: int) -> RunRow | None:
        """The run ``run_id``, if any."""
        with self._read() as conn:
            row = conn.execute(select(runs).where(runs.c.id == run_id)).one_or_none()
        return _run(row) if row is not None else None

    def run_list(self, flt: RunFilter) -> list[RunRow]:
        """Runs matching ``flt``, newest first."""
        conds = []
        if flt.job_name:
            conds.append(runs.c.job_name == flt.job_name)
        if flt.status:
            conds.append(runs.c.status == flt.status.value)
        if flt.since:
            conds.append(runs.c.scheduled_for >= flt.since)
        if flt.schedule_id is not None:
            conds.append(runs.c.schedule_id == flt.schedule_id)
        if flt.before_id is not None:
            conds.append(runs.c.id < flt.before_id)
        with self._read() as conn:
            rows = conn.execute(
                select(runs).where(*conds).order_by(runs.c.id.desc()).limit(flt.limit)
            ).all()
        return [_run(r) for r in rows]

    def run_attempts(self, run_id: int) -> list[AttemptRow]:
        """The attempts of ``run_id``, in order."""
        with self._read() as conn:
            rows = conn.execute(
                select(job_executions)
                .where(job_executions.c.job_id == run_id)
                .order_by(job_executions.c.attempt)
            ).all()
        return [
            AttemptRow(
                id=r.id,
                job_id=r.job_id,
                job_name=r.job_name,
                attempt=r.attempt,
                node=r.node,
                started_at=r.started_at,
                completed_at=r.completed_at,
                status=r.status,
                error_code=r.error_code,
                error_message=r.error_message,
                execution_time_ms=r.execution_time_ms,
            )
            for r in rows
        ]

    def run_retry(self, run_id: int, now: datetime) -> RunRow:
        """Put a failed, cancelled or missed run back in the queue with a fresh set of attempts."""
        with self._write(["runs"]) as conn:
            row = conn.execute(
                update(runs)
                .where(
                    runs.c.id == run_id,
                    runs.c.status.in_(
                        [RunStatus.FAILED.value, RunStatus.CANCELLED.value, RunStatus.MISSED.value]
                    ),
                )
                .values(
                    status=RunStatus.QUEUED.value,
                    max_attempts=runs.c.attempt + runs.c.max_attempts,
                    not_before=now,
                    finished_at=None,
                    cancel_requested=False,
                    updated_at=now,
                    start_alerted=False,
                    window_alerted=False,
                )
                .returning(*runs.c)
            ).one_or_none()
            if row is None:
                self._raise_missing_or_conflict(conn, run_id, "retried")
        return _run(row)

    def run_cancel(self, run_id: int, now: datetime) -> RunRow:
        """Cancel a queued or retrying run now; ask the worker to stop a running one."""
        with self._write() as conn:
            row = conn.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.status.in_(_CLAIMABLE))
                .values(
                    status=RunStatus.CANCELLED.value,
                    finished_at=now,
                    updated_at=now,
                    error_code="CANCELLED",
                    error_message="cancelled by an operator",
                )
                .returning(*runs.c)
            ).one_or_none()
            if row is None:
                row = conn.execute(
                    update(runs)
                    .where(runs.c.id == run_id, runs.c.status == RunStatus.RUNNING.value)
                    .values(cancel_requested=True, updated_at=now)
                    .returning(*runs.c)
                ).one_or_none()
            if row is None:
                self._raise_missing_or_conflict(conn, run_id, "cancelled")
        return _run(row)

    def _raise_missing_or_conflict(self, conn: Connection, run_id: int, verb: str) -> None:
        status = conn.execute(select(runs.c.status).where(runs.c.id == run_id)).scalar()
        if status is None:
            raise NotFound(f"no run {run_id}")
        raise RunConflict(f"run {run_id} is {status} and cannot be {verb}")

    def run_progress(
        self, run_id: int, fencing_token: int, done: int, total: int | None, now: datetime
    ) -> bool:
        """Record progress of a running run; False if the lease is no longer held."""
        with self._write() as conn:
            res = conn.execute(
                update(runs)
                .where(
                    runs.c.id == run_id,
                    runs.c.fencing_token == fencing_token,
                    runs.c.status == RunStatus.RUNNING.value,
                )
                .values(progress_done=done, progress_total=total, updated_at=now)
            )
        return res.rowcount == 1

    def run_reap_expired(
        self, now: datetime, limit: int, decide: Callable[[RunRow], tuple[RunStatus, datetime]]
    ) -> list[RunRow]:
        """Take back running runs whose lease expired (their node died): ``decide`` says retrying or failed."""
        with self._write(["runs"]) as conn:
            stmt = (
                select(runs)
                .where(runs.c.status == RunStatus.RUNNING.value, runs.c.lease_expires_at < now)
                .order_by(runs.c.lease_expires_at)
                .limit(limit)
            )
            if self.is_postgres:
                stmt = stmt.with_for_update(skip_locked=True)
            expired = [_run(r) for r in conn.execute(stmt).all()]
            out = []
            for run in expired:
                status, not_before = decide(run)
                message = f"lease held by {run.lease_owner} expired at {run.lease_expires_at}"
                row = conn.execute(
                    update(runs)
                    .where(
                        runs.c.id == run.id,
                        runs.c.fencing_token == run.fencing_token,
                        runs.c.status == RunStatus.RUNNING.value,
                    )
                    .values(
                        status=status.value,
                        not_before=not_before,
                        lease_owner=None,
                        lease_expires_at=None,
                        error_code="LEASE_EXPIRED",
                        error_message=message,
                        finished_at=now if status in FINAL else None,
                        updated_at=now,
                    )
                    .returning(*runs.c)
                ).one_or_none()
                if row is not None:
                    conn.execute(
                        update(job_executions)
                        .where(
                            job_executions.c.job_id == run.id,
                            job_executions.c.attempt == run.attempt,
                        )
                        .values(
                            status="lost",
                            completed_at=now,
                            error_code="LEASE_EXPIRED",
                            error_message=message,
                        )
                    )
                    out.append(_run(row))
        return out

    def run_mark_late_starts(self, started_before: datetime, limit: int) -> list[RunRow]:
        """Queued runs due before ``started_before`` and not yet reported; marks them reported.

        A run created late (a catch-up after downtime, reported by the misfire alert) counts
        from its creation, so it is reported only if it then waits as long again.
        """
        return self._mark_once(
            and_(
                runs.c.status == RunStatus.QUEUED.value,
                runs.c.attempt == 0,
                runs.c.scheduled_for < started_before,
                runs.c.created_at < started_before,
                runs.c.start_alerted.is_(False),
            ),
            "start_alerted",
            limit,
            started_before,
        )

    def run_mark_window_overruns(self, now: datetime, limit: int) -> list[RunRow]:
        """Active runs past their job's window and not yet reported; marks them reported."""
        return self._mark_once(
            and_(
                runs.c.status.in_(_ACTIVE),
                runs.c.window_ends_at < now,
                runs.c.window_alerted.is_(False),
            ),
            "window_alerted",
            limit,
            now,
        )

    def _mark_once(self, cond: Any, flag: str, limit: int, now: datetime) -> list[RunRow]:
        with self._write() as conn:
            ids = (
                conn.execute(select(runs.c.id).where(cond).order_by(runs.c.id).limit(limit))
                .scalars()
                .all()
            )
            if not ids:
                return []
            rows = conn.execute(
                update(runs)
                .where(runs.c.id.in_(ids), runs.c[flag].is_(False))
                .values({flag: True})
                .returning(*runs.c)
            ).all()
        return [_run(r) for r in rows]

    def run_counts(self) -> dict[str, int]:
        """How many runs are in each status."""
        with self._read() as conn:
            rows = conn.execute(select(runs.c.status, func.count()).group_by(runs.c.status)).all()
        return {str(status): int(count) for status, count in rows}

    # -- leases and nodes ---------------------------------------------------------

    def lease_extend(
        self, node: str, run_ids: Sequence[int], expires_at: datetime, now: datetime
    ) -> set[int]:
        """Extend ``node``'s leases on ``run_ids``; return those an operator asked to cancel.

        Runs whose lease is no longer ``node``'s are left alone (their outcome will not be written).
        """
        if not run_ids:
            return set()
        with self._write() as conn:
            rows = conn.execute(
                update(runs)
                .where(
                    runs.c.id.in_(list(run_ids)),
                    runs.c.lease_owner == node,
                    runs.c.status == RunStatus.RUNNING.value,
                )
                .values(lease_expires_at=expires_at)
                .returning(runs.c.id, runs.c.cancel_requested)
            ).all()
        return {r.id for r in rows if r.cancel_requested}

    def node_register(self, row: NodeRow) -> None:
        """Record a node as started (replacing an old row of the same name)."""
        values = {f.name: getattr(row, f.name) for f in fields(NodeRow)}
        with self._write() as conn:
            conn.execute(delete(nodes).where(nodes.c.name == row.name))
            conn.execute(insert(nodes).values(**values))

    def node_heartbeat(self, name: str, now: datetime) -> None:
        """Record that ``name`` is alive."""
        with self._write() as conn:
            conn.execute(update(nodes).where(nodes.c.name == name).values(heartbeat_at=now))

    def node_stop(self, name: str, now: datetime) -> None:
        """Record a clean stop."""
        with self._write() as conn:
            conn.execute(
                update(nodes)
                .where(nodes.c.name == name)
                .values(state="stopped", stopped_at=now, heartbeat_at=now)
            )

    def node_list(self) -> list[NodeRow]:
        """Every known node, most recent heartbeat first."""
        with self._read() as conn:
            rows = conn.execute(select(nodes).order_by(nodes.c.heartbeat_at.desc())).all()
        return [NodeRow(**{f.name: getattr(r, f.name) for f in fields(NodeRow)}) for r in rows]

    # -- alerts and retention -----------------------------------------------------

    def alert_raise(self, alert: NewAlert) -> tuple[AlertRow, bool]:
        """Open an alert, or count one more occurrence of the open alert with the same key."""
        with self._write() as conn:
            existing = conn.execute(
                select(alerts.c.id)
                .where(alerts.c.dedupe_key == alert.dedupe_key, alerts.c.status != "resolved")
                .order_by(alerts.c.id.desc())
                .limit(1)
            ).scalar()
            if existing is not None:
                row = conn.execute(
                    update(alerts)
                    .where(alerts.c.id == existing)
                    .values(
                        occurrences=alerts.c.occurrences + 1,
                        last_raised_at=alert.now,
                        details=alert.details,
                    )
                    .returning(*alerts.c)
                ).one()
                return _alert(row), False
            row = conn.execute(
                insert(alerts)
                .values(
                    dedupe_key=alert.dedupe_key,
                    rule=alert.rule,
                    severity=alert.severity,
                    status="open",
                    title=alert.title,
                    details=alert.details,
                    run_id=alert.run_id,
                    job_name=alert.job_name,
                    first_raised_at=alert.now,
                    last_raised_at=alert.now,
                )
                .returning(*alerts.c)
            ).one()
        return _alert(row), True

    def alert_list(self, status: str | None = None, limit: int = 100) -> list[AlertRow]:
        """Alerts, newest first, optionally of one status."""
        conds = [alerts.c.status == status] if status else []
        with self._read() as conn:
            rows = conn.execute(
                select(alerts).where(*conds).order_by(alerts.c.id.desc()).limit(limit)
            ).all()
        return [_alert(r) for r in rows]

    def alert_set_status(self, alert_id: int, status: str, actor: str, now: datetime) -> AlertRow:
        """Acknowledge or resolve an alert."""
        if status not in ("acked", "resolved"):
            raise ValueError(f"an alert can be set to acked or resolved, not {status!r}")
        values: dict[str, Any] = {"status": status}
        values.update(
            {"acked_at": now, "acked_by": actor}
            if status == "acked"
            else {"resolved_at": now, "resolved_by": actor}
        )
        with self._write() as conn:
            row = conn.execute(
                update(alerts)
                .where(alerts.c.id == alert_id, alerts.c.status != "resolved")
                .values(**values)
                .returning(*alerts.c)
            ).one_or_none()
            if row is None:
                exists = conn.execute(select(alerts.c.id).where(alerts.c.id == alert_id)).scalar()
                if exists is None:
                    raise NotFound(f"no alert {alert_id}")
                raise RunConflict(f"alert {alert_id} is already resolved")
        return _alert(row)

    def execution_prune(self, before: datetime, batch: int = 5000) -> int:
        """Delete attempts of finished runs that completed before ``before``, in batches."""
        total = 0
        while True:
            with self._write() as conn:
                ids = (
                    conn.execute(
                        select(job_executions.c.id)
                        .where(job_executions.c.completed_at < before)
                        .limit(batch)
                    )
                    .scalars()
                    .all()
                )
                if not ids:
                    return total
                conn.execute(delete(job_executions).where(job_executions.c.id.in_(ids)))
            total += len(ids)


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite aggregates lose the column type
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _run(row: Any) -> RunRow:
    m = row._mapping
    data = {name: m[name] for name in _RUN_FIELDS}
    data["status"] = RunStatus(data["status"])
    return RunRow(**data)


def _schedule(row: Any) -> ScheduleRow:
    m = row._mapping
    return ScheduleRow(**{name: m[name] for name in _SCHEDULE_FIELDS})


def _alert(row: Any) -> AlertRow:
    m = row._mapping
    return AlertRow(**{f.name: m[f.name] for f in fields(AlertRow)})


def _definition(row: ScheduleRow) -> tuple[Any, ...]:
    return (
        row.job_name,
        row.spec,
        row.timezone,
        row.calendar,
        row.adjust,
        row.dst_gap,
        row.dst_repeat,
        row.start_at,
        row.end_at,
    )
