"""The engine run behind each attempt: created when due, cancelled with its operation, reconciled when lost."""

from __future__ import annotations

import contextlib
from datetime import datetime

from sqlalchemy import Engine, select, update

from duly.audit import record
from duly.banking.errors import BankingError
from duly.engine.client import EngineClient
from duly.engine.context import JobContext
from duly.engine.errors import NotFound as RunNotFound
from duly.engine.errors import RunConflict
from duly.engine.store.schema import runs
from duly.engine.store.sql import SqlStore
from duly.operations.auditing import target_entry
from duly.operations.execution.models import ACTIVE, Kind, Target
from duly.operations.execution.outcomes import record_outcome, set_state

__all__ = ["cancel_run", "ensure_run", "reconcile_run"]


# -- runs -----------------------------------------------------------------------------


def ensure_run(
    client: EngineClient, kind: Kind, ref_id: int, *, target: Target | None = None
) -> int | None:
    """Enqueue the engine run of the operation's next attempt if it has none; return its id.

    Idempotent: the run's key is deterministic and the row remembers the attempt it was
    enqueued for. ``target``: the operation as its creator just wrote it, instead of
    reading it again (the write that records the run checks the attempt all the same).
    """
    if target is None:
        with client.store.engine.connect() as conn:
            target = kind.load(conn, ref_id, False)
    if target is None or target.status not in ACTIVE or target.next_attempt_at is None:
        return None
    attempt = target.attempts + 1
    if target.run_attempt >= attempt:
        return target.run_id
    run, _ = client.trigger(
        kind.job_name,
        {"ref_id": ref_id, "attempt": attempt, "version": target.version},
        idempotency_key=kind.run_key(target, attempt),
        scheduled_for=target.next_attempt_at,
        origin=kind.name,
    )
    with client.store.engine.begin() as conn:
        conn.execute(
            update(kind.table)
            .where(
                kind.table.c.id == ref_id,
                kind.table.c.run_attempt < attempt,
                kind.table.c.attempts == target.attempts,
            )
            .values(run_attempt=attempt, run_id=run.id)
        )
    return run.id


def cancel_run(store: SqlStore, run_id: int | None, now: datetime) -> None:
    """Cancel a queued run (ask a running one to stop); a finished or missing run is left alone."""
    if run_id is None:
        return
    with contextlib.suppress(RunNotFound, RunConflict):
        store.run_cancel(run_id, now)


def reconcile_run(engine: Engine, kind: Kind, ref_id: int, now: datetime) -> str | None:
    """Record the attempt of a run that ended ``failed``/``cancelled`` without recording it.

    A failed run counts as a failed attempt with the run's error code (the policy decides
    on a retry); a cancelled one cancels the operation. Returns what was done, if anything.
    """
    with engine.begin() as conn:
        target = kind.load(conn, ref_id, True)
        if target is None or target.status not in ACTIVE or target.run_id is None:
            return None
        if target.run_attempt != target.attempts + 1:
            return None
        run = conn.execute(
            select(runs.c.status, runs.c.error_code, runs.c.error_message, runs.c.started_at).where(
                runs.c.id == target.run_id
            )
        ).one_or_none()
        if run is None or run.status not in ("failed", "cancelled"):
            return None
        attempt = target.attempts + 1
        if run.status == "cancelled":
            set_state(conn, kind, target, "cancelled", now, event="cancelled", dedupe="cancelled",
                      payload={"reason": "run cancelled by an operator"}, next_attempt_at=None,
                      error_code="CANCELLED", error_message="run cancelled by an operator")  # fmt: skip
            entry = target_entry(kind, target, "cancel", reason="run cancelled by an operator",
                                 run_id=target.run_id)  # fmt: skip
            record(conn, [entry], now)
            return "cancelled"
        code = run.error_code or "INTERNAL"
        error = BankingError(code, run.error_message or code)
        record_outcome(
            conn, kind, target, attempt, error, target.run_id, run.started_at or now, now
        )
        return "failed_attempt"


def store_of(ctx: JobContext) -> SqlStore:
    store = ctx._store
    if store is None:
        raise RuntimeError("this job needs a running engine (ctx has no store)")
    return store
