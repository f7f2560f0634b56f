"""How an attempt ends: calling the job, turning its return or exception into an outcome,
and deciding the run's next status (final, or retrying after the job's backoff).

Nothing here touches the store; the worker writes what these functions decide.
"""

from __future__ import annotations

import asyncio
import json
import traceback
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from duly.engine.context import Cancelled, JobContext
from duly.engine.errors import JobError
from duly.engine.registry import JobDefinition
from duly.engine.retry import RetryPolicy
from duly.engine.states import RunStatus
from duly.engine.store.base import CompleteParams, RunRow
from duly.engine.store.plumbing import SqlEffects

__all__ = [
    "MAX_ERROR_MESSAGE",
    "Outcome",
    "complete_params",
    "decide",
    "outcome_from",
    "outcome_of",
    "run_batch",
    "run_sync",
]

MAX_ERROR_MESSAGE = 500


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended, before it is written."""

    status: RunStatus
    result: Any = None
    code: str | None = None
    message: str | None = None
    retryable: bool | None = None
    trace: str | None = None
    abandoned: bool = False
    """A sync attempt left running in its thread (timeout); it rolls its own effects back."""


def decide(
    run: RunRow, job: JobDefinition | None, outcome: Outcome, now: datetime
) -> tuple[RunStatus, datetime | None]:
    """The run's next status after ``outcome``: final, or retrying at a time after the backoff."""
    if outcome.status in (RunStatus.SUCCEEDED, RunStatus.CANCELLED):
        return outcome.status, None
    policy = job.retry if job is not None else RetryPolicy.none()
    code = outcome.code or "INTERNAL"
    if run.attempt < run.max_attempts and policy.is_retryable(code, outcome.retryable):
        return RunStatus.RETRYING, now + policy.delay(run.attempt)
    return RunStatus.FAILED, None


def complete_params(
    run: RunRow,
    outcome: Outcome,
    status: RunStatus,
    not_before: datetime | None,
    now: datetime,
    started: datetime,
) -> CompleteParams:
    """What the store writes for ``run`` ending with ``outcome`` in ``status``."""
    return CompleteParams(
        run_id=run.id,
        fencing_token=run.fencing_token,
        attempt=run.attempt,
        status=status,
        now=now,
        started_at=started,
        result=outcome.result,
        error_code=outcome.code,
        error_message=outcome.message,
        not_before=not_before,
    )


def run_sync(job: JobDefinition, ctx: JobContext) -> Any:
    """Run a sync job in a worker thread; effects of an abandoned (timed-out) attempt are dropped."""
    try:
        return job.func(ctx)
    finally:
        if ctx.cancelled and isinstance(ctx._effects, SqlEffects):
            ctx._effects.rollback()


def run_batch(job: JobDefinition, ctxs: list[JobContext], effects: SqlEffects) -> Any:
    """Run a batch job in a worker thread; an abandoned (timed-out) batch drops its effects."""
    assert job.batch is not None
    try:
        return job.batch(ctxs)
    finally:
        if any(ctx.cancelled for ctx in ctxs):
            effects.rollback()


def outcome_of(work: asyncio.Future[Any], ctx: JobContext) -> Outcome:
    """The outcome of an attempt that ran as ``work``."""
    exc = work.exception() if not work.cancelled() else Cancelled("cancelled")
    return outcome_from(None if exc is not None else work.result(), exc, ctx)


def outcome_from(result: Any, exc: BaseException | None, ctx: JobContext) -> Outcome:
    """The outcome of an attempt that returned ``result`` or raised ``exc``."""
    if exc is None:
        try:
            json.dumps(result)
        except (TypeError, ValueError) as err:
            return Outcome(
                RunStatus.FAILED,
                code="INTERNAL",
                retryable=False,
                message=f"the job's summary is not JSON: {err}"[:MAX_ERROR_MESSAGE],
            )
        return Outcome(RunStatus.SUCCEEDED, result=result)
    if isinstance(exc, Cancelled | asyncio.CancelledError):
        return Outcome(RunStatus.CANCELLED, code="CANCELLED", message="cancelled by an operator")
    if isinstance(exc, JobError):
        return Outcome(
            RunStatus.FAILED,
            code=exc.code,
            message=exc.message[:MAX_ERROR_MESSAGE],
            retryable=exc.retryable,
        )
    trace = "".join(traceback.format_exception(exc))
    ctx.log.error("run.error", error_type=type(exc).__name__, trace=trace[-4000:])
    return Outcome(
        RunStatus.FAILED,
        code="INTERNAL",
        message=f"{type(exc).__name__}: {exc}"[:MAX_ERROR_MESSAGE],
        trace=trace,
    )
