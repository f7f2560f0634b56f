"""``/runs``: filter runs, one run with its attempts and progress, retry, cancel."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Query

from duly.api.context import Ctx
from duly.api.pagination import Cursor, Limit, Page, decode_cursor, page_of
from duly.api.paths import API_PREFIX
from duly.api.schemas import Instant, Response, RowId
from duly.api.security import OPS, READ_ALL, roles
from duly.engine.states import FINAL, RunStatus
from duly.engine.store.base import AttemptRow, RunFilter, RunRow

router = APIRouter(prefix=f"{API_PREFIX}/runs", tags=["runs"])


class Run(Response):
    """A run of a job: where it is in its life, and its outcome once final."""

    id: int
    job_name: str
    schedule_id: int | None
    scheduled_for: datetime
    status: RunStatus
    origin: str
    idempotency_key: str
    args: dict[str, Any]
    queue: str
    attempt: int
    max_attempts: int
    not_before: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested: bool
    error_code: str | None
    error_message: str | None
    progress_done: int | None
    progress_total: int | None
    result: Any = None
    """The job's JSON summary (counts, duration, …) once it succeeded."""
    created_at: datetime
    updated_at: datetime


class Attempt(Response):
    """One try of a run on a node."""

    attempt: int
    node: str
    status: str
    started_at: datetime
    completed_at: datetime | None
    error_code: str | None
    error_message: str | None
    execution_time_ms: int | None


class RunDetail(Run):
    """A run with its attempts."""

    attempts: list[Attempt]


def run_out(row: RunRow) -> Run:
    """The API's view of a run."""
    return Run.model_validate(row)


def attempt_out(row: AttemptRow) -> Attempt:
    """The API's view of an attempt."""
    return Attempt.model_validate(row)


@router.get("", summary="List runs, newest first", **roles(*READ_ALL))
def list_runs(
    ctx: Ctx,
    job: Annotated[str | None, Query(max_length=200, description="Only this job.")] = None,
    status: Annotated[RunStatus | None, Query(description="Only this status.")] = None,
    since: Annotated[Instant | None, Query(description="Scheduled at or after.")] = None,
    until: Annotated[Instant | None, Query(description="Scheduled before.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[Run]:
    flt = RunFilter(job_name=job, status=status, since=since, until=until,
                    limit=limit + 1, before_id=decode_cursor(cursor))  # fmt: skip
    rows = ctx.client.runs(flt)
    return page_of(rows, limit, run_out, lambda r: r.id)


@router.get("/{run_id}", summary="One run with its attempts", **roles(*READ_ALL))
def get_run(ctx: Ctx, run_id: RowId) -> RunDetail:
    run = ctx.client.run(run_id)
    attempts = [attempt_out(a) for a in ctx.client.attempts(run_id)]
    return RunDetail(**run_out(run).model_dump(), attempts=attempts)


@router.post("/{run_id}/retry", summary="Queue a failed, cancelled or missed run again",
             **roles(*OPS))  # fmt: skip
def retry_run(ctx: Ctx, run_id: RowId) -> Run:
    return run_out(ctx.client.retry(run_id))


@router.post("/{run_id}/cancel", summary="Cancel a queued run; ask a running one to stop",
             **roles(*OPS))  # fmt: skip
def cancel_run(ctx: Ctx, run_id: RowId) -> Run:
    return run_out(ctx.client.cancel(run_id))


async def final_or_none(ctx: Ctx, run_id: int, wait_seconds: float) -> RunRow:
    """The run once final, or as it is when ``wait_seconds`` have passed."""
    deadline = ctx.clock.now().timestamp() + wait_seconds
    pause = 0.005
    while True:
        run = await anyio.to_thread.run_sync(ctx.client.run, run_id)
        left = deadline - ctx.clock.now().timestamp()
        if run.status in FINAL or left <= 0:
            return run
        await ctx.clock.sleep(min(pause, left))
        pause = min(pause * 2, 0.2)
