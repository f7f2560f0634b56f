"""Runs and their attempts: enqueue, read, list, retry, cancel, progress."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, case, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from duly.engine.auditing import AuditEntry, StatementAuditRecorder
from duly.engine.errors import NotFound, RunConflict
from duly.engine.states import RunStatus
from duly.engine.store.base import (
    AttemptRow,
    EffectsTransaction,
    NewRun,
    RunFilter,
    RunRow,
    iter_chunks,
)
from duly.engine.store.dialect import pg_fetch_one
from duly.engine.store.events import run_cancelled, run_fired, run_retried
from duly.engine.store.plumbing import SqlBase
from duly.engine.store.rows import (
    CLAIMABLE_VALUES,
    IS_CLAIMABLE,
    RUN_FIELDS,
    aware,
    pg_run_row,
    run_row,
)
from duly.engine.store.schema import job_executions, runs


def new_run_values(new: NewRun, now: datetime) -> dict[str, Any]:
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
        "window_ends_at": new.scheduled_for + timedelta(seconds=window)
        if window is not None
        else None,
        "created_at": now,
        "updated_at": now,
    }


_ANY_TIME = datetime(2000, 1, 1, tzinfo=UTC)
_ENQUEUE_COLUMNS = tuple(new_run_values(NewRun("", _ANY_TIME, ""), _ANY_TIME))
_PG_ENQUEUE_INSERT = (
    f"ins AS (INSERT INTO runs ({', '.join(_ENQUEUE_COLUMNS)}) VALUES ("
    + ", ".join("CAST(:args AS json)" if c == "args" else f":{c}" for c in _ENQUEUE_COLUMNS)
    + f") ON CONFLICT DO NOTHING RETURNING {', '.join(RUN_FIELDS)}),"
    " note AS (SELECT pg_notify('duly_runs', :wake) AS sent FROM ins)"
)
# ``note`` runs only if referenced: the scalar subquery makes sure it is.
_PG_ENQUEUE_RETURN = (
    f" SELECT {', '.join(RUN_FIELDS)} FROM ins WHERE (SELECT count(*) FROM note) >= 0"
)


_BY_KEY = select(runs).where(runs.c.idempotency_key == bindparam("key"))
# Built once, per dialect: constructing the statement cost more than running it on SQLite.
_ENQUEUE = {
    "sqlite": sqlite_insert(runs).on_conflict_do_nothing().returning(*runs.c),
    "postgresql": pg_insert(runs).on_conflict_do_nothing().returning(*runs.c),
}


def _fired(run: RunRow) -> AuditEntry:
    return run_fired(run.id, run.job_name, run.scheduled_for, run.origin)


class RunQueries(SqlBase):
    """Runs and attempts, apart from claiming and completing."""

    def run_enqueue(self, new: NewRun, now: datetime) -> tuple[RunRow, bool]:
        """Insert a run unless one with the same idempotency key exists; return it and whether it is new."""
        values = new_run_values(new, now)
        if self.is_postgres and (
            self.audit is None or isinstance(self.audit, StatementAuditRecorder)
        ):
            return self._pg_enqueue(new, values)
        with self._write(["runs"]) as conn:
            inserted = conn.execute(_ENQUEUE[self.dialect], values).one_or_none()
            if inserted is None:
                existing = conn.execute(_BY_KEY, {"key": new.idempotency_key}).one()
                return run_row(existing), False
            row = run_row(inserted)
            self._audit(conn, [_fired(row)], now)
        return row, True

    def _pg_enqueue(self, new: NewRun, values: dict[str, Any]) -> tuple[RunRow, bool]:
        """PostgreSQL: the run, its audit event and the wake-up in one autocommit statement.

        One round trip, durable at its return. A key already used inserts nothing; that
        run is then read (the only second round trip, on a replay). The notification's
        payload is the run's due time (POSIX seconds), so a worker sleeps until then
        without asking the database.
        """
        params = {**values, "args": json.dumps(values["args"]),
                  "wake": f"{new.scheduled_for.timestamp():.6f}"}  # fmt: skip
        ctes = [_PG_ENQUEUE_INSERT]
        if isinstance(self.audit, StatementAuditRecorder):
            entry = run_fired(0, new.job_name, new.scheduled_for, new.origin)
            audit_sql, audit_params = self.audit.insert_for_each("ins", entry, values["created_at"])
            ctes.append(f"audit AS ({audit_sql})")
            params |= audit_params
        sql = "WITH " + ", ".join(ctes) + _PG_ENQUEUE_RETURN
        with self._autocommit.connect() as conn:
            row = pg_fetch_one(conn, sql, params)
            if row is not None:
                created = pg_run_row(row)
            else:
                existing = conn.execute(
                    select(runs).where(runs.c.idempotency_key == new.idempotency_key)
                ).one()
        if row is None:
            return run_row(existing), False
        self._publish("runs")
        return created, True

    def run_enqueue_many(self, news: Sequence[NewRun], now: datetime) -> dict[str, int]:
        """:meth:`run_enqueue` for many runs in one transaction; returns ``{idempotency_key: run id}``.

        A key that exists already keeps its run (and its id is returned).
        """
        values = [new_run_values(new, now) for new in news]
        by_key = {new.idempotency_key: new for new in news}
        ids: dict[str, int] = {}
        entries: list[AuditEntry] = []
        with self._write(["runs"]) as conn:
            for chunk in iter_chunks(values, 5000 if self.is_postgres else 500):
                created = self._insert_many(conn, chunk)
                for key, run_id in created.items():
                    new = by_key[key]
                    entries.append(run_fired(run_id, new.job_name, new.scheduled_for, new.origin))
                ids |= created
                ids |= self._run_ids_of(conn, [v["idempotency_key"] for v in chunk
                                               if v["idempotency_key"] not in created])  # fmt: skip
            self._audit(conn, entries, now)
        return ids

    def _run_ids_of(self, conn: Connection, keys: Sequence[str]) -> dict[str, int]:
        if not keys:
            return {}
        rows = conn.execute(
            select(runs.c.idempotency_key, runs.c.id).where(runs.c.idempotency_key.in_(keys))
        ).all()
        return {str(key): int(run_id) for key, run_id in rows}

    def run_next_claimable_at(self, queues: Sequence[str]) -> datetime | None:
        """The earliest ``not_before`` of a claimable run in ``queues``."""
        with self._read() as conn:
            value = conn.execute(
                select(func.min(runs.c.not_before)).where(
                    IS_CLAIMABLE, runs.c.queue.in_(list(queues))
                )
            ).scalar()
        return aware(value)

    def run_next_claimable_for(
        self, queues: Sequence[str], jobs: Collection[str]
    ) -> tuple[datetime | None, datetime | None]:
        """The earliest ``not_before`` of a claimable run in ``queues``: of any job, of ``jobs``.

        One query for both: a worker that knows when runs of its batch jobs fall due can
        leave them out of a claim made for another run.
        """
        of_jobs = func.min(case((runs.c.job_name.in_(sorted(jobs)), runs.c.not_before)))
        with self._read() as conn:
            row = conn.execute(
                select(func.min(runs.c.not_before), of_jobs).where(
                    IS_CLAIMABLE, runs.c.queue.in_(list(queues))
                )
            ).one()
        return aware(row[0]), aware(row[1])

    def run_oldest_due(self, now: datetime) -> datetime | None:
        """When the longest-waiting run that is due and not yet claimed became due, if any."""
        due = runs.c.status.in_(CLAIMABLE_VALUES) & (runs.c.not_before <= now)
        with self._read() as conn:
            value = conn.execute(select(func.min(runs.c.not_before)).where(due)).scalar()
        return aware(value)

    def run_get(self, run_id: int) -> RunRow | None:
        """The run ``run_id``, if any."""
        with self._read() as conn:
            row = conn.execute(select(runs).where(runs.c.id == run_id)).one_or_none()
        return run_row(row) if row is not None else None

    def run_list(self, flt: RunFilter) -> list[RunRow]:
        """Runs matching ``flt``, newest first."""
        conds = []
        if flt.job_name:
            conds.append(runs.c.job_name == flt.job_name)
        if flt.status:
            conds.append(runs.c.status == flt.status.value)
        if flt.since:
            conds.append(runs.c.scheduled_for >= flt.since)
        if flt.until:
            conds.append(runs.c.scheduled_for < flt.until)
        if flt.schedule_id is not None:
            conds.append(runs.c.schedule_id == flt.schedule_id)
        if flt.before_id is not None:
            conds.append(runs.c.id < flt.before_id)
        with self._read() as conn:
            rows = conn.execute(
                select(runs).where(*conds).order_by(runs.c.id.desc()).limit(flt.limit)
            ).all()
        return [run_row(r) for r in rows]

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
            current = select(runs.c.status).where(runs.c.id == run_id)
            if self.is_postgres:
                current = current.with_for_update()
            previous = conn.execute(current).scalar()
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
            retried = run_row(row)
            self._audit(conn, [run_retried(retried, previous)], now)
        return retried

    def run_cancel(self, run_id: int, now: datetime) -> RunRow:
        """Cancel a queued or retrying run now; ask the worker to stop a running one."""
        with self._write() as conn:
            requested = False
            row = conn.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.status.in_(CLAIMABLE_VALUES))
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
                requested = True
                row = conn.execute(
                    update(runs)
                    .where(runs.c.id == run_id, runs.c.status == RunStatus.RUNNING.value)
                    .values(cancel_requested=True, updated_at=now)
                    .returning(*runs.c)
                ).one_or_none()
            if row is None:
                self._raise_missing_or_conflict(conn, run_id, "cancelled")
            cancelled = run_row(row)
            entry = run_cancelled(
                run_id, error_code=None if requested else cancelled.error_code, requested=requested
            )
            self._audit(conn, [entry], now)
        return cancelled

    def _raise_missing_or_conflict(self, conn: Connection, run_id: int, verb: str) -> None:
        status = conn.execute(select(runs.c.status).where(runs.c.id == run_id)).scalar()
        if status is None:
            raise NotFound(f"no run {run_id}")
        raise RunConflict(f"run {run_id} is {status} and cannot be {verb}")

    def run_progress(
        self,
        run_id: int,
        fencing_token: int,
        done: int,
        total: int | None,
        now: datetime,
        effects: EffectsTransaction | None = None,
    ) -> bool:
        """Record progress of a running run; False if the lease is no longer held.

        On SQLite, while the job's ``effects`` transaction is open it holds the database's
        only write lock until the run completes: the progress is written in that
        transaction (another connection would wait for it for ever). On PostgreSQL it is
        written apart, so the run's row is never locked until the completion.
        """
        stmt = (
            update(runs)
            .where(
                runs.c.id == run_id,
                runs.c.fencing_token == fencing_token,
                runs.c.status == RunStatus.RUNNING.value,
            )
            .values(progress_done=done, progress_total=total, updated_at=now)
        )
        if effects is not None and effects.opened and not self.is_postgres:
            conn: Connection = effects.connection
            return conn.execute(stmt).rowcount == 1
        with self._write() as conn:
            res = conn.execute(stmt)
        return res.rowcount == 1

    def run_counts(self) -> dict[str, int]:
        """How many runs are in each status."""
        with self._read() as conn:
            rows = conn.execute(select(runs.c.status, func.count()).group_by(runs.c.status)).all()
        return {str(status): int(count) for status, count in rows}
