"""Completing runs: the outcome, the attempt row and the fencing check, one by one or in batches."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select, text, update

from duly.engine.errors import LeaseLost
from duly.engine.states import FINAL, RunStatus
from duly.engine.store.base import CompleteParams, RunRow
from duly.engine.store.dialect import any_of, pg_execute
from duly.engine.store.events import run_completed, run_handed_back
from duly.engine.store.plumbing import SqlBase, SqlEffects
from duly.engine.store.rows import run_row
from duly.engine.store.schema import job_executions, runs

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


class CompletionQueries(SqlBase):
    """Run completions, fenced by the lease's token."""

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
            # One fenced statement: atomic on its own, so no transaction around it unless
            # its events must commit with it.
            with self._one_statement() as conn:
                held = set(
                    pg_execute(conn, _PG_COMPLETE_FENCED, _pg_fenced_params(batch)).scalars()
                )
                self._audit_completions(conn, [p for p in batch if p.run_id in held])
            return [p.run_id in held for p in batch]
        with self._write(channels) as conn:
            return self._complete_many_on(conn, batch, all_or_nothing=False)

    def run_complete_batch(
        self, batch: Sequence[CompleteParams], effects: SqlEffects
    ) -> list[bool]:
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
        self._audit_completions(conn, mine)
        return ok

    def _audit_completions(self, conn: Connection, done: Sequence[CompleteParams]) -> None:
        """The outcomes written, as one batch of entries (one insert)."""
        if done and self.audit is not None:
            self._audit(conn, [run_completed(p) for p in done], max(p.now for p in done))

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
        self._audit(conn, [run_completed(params)], params.now)
        return run_row(row)

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
                self._audit(conn, [run_handed_back(run_id, attempt)], now)
        return res.rowcount == 1
