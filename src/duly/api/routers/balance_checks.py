"""``/balance-checks``: the nightly premium balance check — runs, results, history, missed nights.

The same reads as ``duly balance-check …`` and ``duly errors list --customer``. A result says
``PASS``, ``FAIL`` or ``ERROR`` (with its code); no answer here carries a balance, a minimum
or an account number.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import Field, ValidationError

from duly.api.context import Ctx
from duly.api.errors import ApiError
from duly.api.pagination import Cursor, Limit, Page, decode_cursor, page_of
from duly.api.paths import API_PREFIX
from duly.api.routers._monitoring import Id, bounds, id_cursor
from duly.api.schemas import Instant, Response
from duly.api.security import READ_ALL, roles
from duly.banking.customers import Customers
from duly.engine.states import RunStatus
from duly.engine.store.base import RunFilter, RunRow
from duly.operations.balance_check.models import JOB_NAME, Result
from duly.operations.balance_check.monitoring import ResultRow, customer_history, run_results
from duly.operations.balance_check.service import missed_nights

router = APIRouter(prefix=f"{API_PREFIX}/balance-checks", tags=["balance-checks"])


class CheckSummary(Response):
    """What a finished check reported: counts only (the job's summary, no balance in it).

    Only these fields are copied from the run's result, so a field the job adds later is
    not published until it is listed here.
    """

    business_date: date | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_seconds: float | None = None
    customers: int | None = None
    """Premium customers to check that night."""
    processed: int | None = None
    """Customers this run decided (the rest were decided by an earlier attempt)."""
    resumed_after: int | None = None
    passed: int | None = None
    failed: int | None = None
    errors: int | None = None
    errors_by_code: dict[str, int] = Field(default_factory=dict)
    read_retries: int | None = None
    missed_nights: list[date] = Field(default_factory=list)


class CheckRun(Response):
    """A run of ``daily_balance_check``: where it is, and its summary once it succeeded."""

    id: int
    status: RunStatus
    origin: str
    scheduled_for: datetime
    business_date: date | None
    """The night checked: from the summary, or the run's ``business_date`` argument."""
    attempt: int
    max_attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    error_code: str | None
    error_message: str | None
    summary: CheckSummary | None


class CheckResult(Response):
    """A customer's outcome for a night (never the balance)."""

    run_id: int
    business_date: date
    customer_id: int
    result: Result
    error_code: str | None
    """Set exactly when the result is ``ERROR``."""
    attempts: int
    checked_at: datetime


class MissedNight(Response):
    """A business date whose check never completed; backfill it with a manual run."""

    business_date: date
    backfill_path: str
    """``POST`` ``backfill_body`` here to run the check for that night (admins, operators)."""
    backfill_body: dict[str, Any]


class MissedNights(Response):
    """Nights in the lookback that should have been checked by now but were not."""

    lookback_days: int
    nights: list[MissedNight]


def _summary(result: Any) -> CheckSummary | None:
    if not isinstance(result, dict):
        return None
    try:
        return CheckSummary.model_validate(result)
    except ValidationError:  # a summary of another shape: show the run without it
        return None


def _day(value: Any) -> date | None:
    try:
        return date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def check_run_out(row: RunRow) -> CheckRun:
    """The API's view of a balance check run."""
    summary = _summary(row.result)
    day = summary.business_date if summary and summary.business_date else None
    return CheckRun(
        id=row.id, status=row.status, origin=row.origin, scheduled_for=row.scheduled_for,
        business_date=day or _day(row.args.get("business_date")), attempt=row.attempt,
        max_attempts=row.max_attempts, started_at=row.started_at, finished_at=row.finished_at,
        error_code=row.error_code, error_message=row.error_message, summary=summary,
    )  # fmt: skip


def result_out(row: ResultRow) -> CheckResult:
    """The API's view of a customer's result."""
    return CheckResult.model_validate(row)


def _check_run(ctx: Ctx, run_id: int) -> RunRow:
    run = ctx.client.run(run_id)  # NotFound → 404
    if run.job_name != JOB_NAME:
        raise ApiError(404, f"no {JOB_NAME} run {run_id}")
    return run


@router.get("", summary="Runs of the nightly balance check, newest first", **roles(*READ_ALL))
def list_checks(
    ctx: Ctx,
    status: Annotated[RunStatus | None, Query(description="Only this status.")] = None,
    since: Annotated[Instant | None, Query(description="Scheduled at or after.")] = None,
    until: Annotated[Instant | None, Query(description="Scheduled before.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[CheckRun]:
    start, end = bounds(since, until)
    flt = RunFilter(job_name=JOB_NAME, status=status, since=start, until=end,
                    limit=limit + 1, before_id=id_cursor(cursor))  # fmt: skip
    return page_of(ctx.client.runs(flt), limit, check_run_out, lambda r: r.id)


@router.get("/missed", summary="Nights whose check never completed, to backfill",
            **roles(*READ_ALL))  # fmt: skip
def list_missed(ctx: Ctx) -> MissedNights:
    cfg = ctx.settings.jobs.daily_balance_check
    nights = missed_nights(ctx.store, cfg, ctx.clock.now())
    return MissedNights(
        lookback_days=cfg.missed_night_lookback_days,
        nights=[MissedNight(business_date=n, backfill_path=f"{API_PREFIX}/jobs/{JOB_NAME}/runs",
                            backfill_body={"args": {"business_date": n.isoformat()}})
                for n in nights],
    )  # fmt: skip


@router.get("/customers/{customer_id}", summary="A customer's check results, newest night first",
            **roles(*READ_ALL))  # fmt: skip
def customer_checks(
    ctx: Ctx, customer_id: Id, limit: Limit = 50, cursor: Cursor = None
) -> Page[CheckResult]:
    before = _day(decode_cursor(cursor, str))
    if cursor and before is None:
        raise ApiError(422, "cursor: not a cursor this list gave out", code="INVALID_CURSOR")
    if Customers(ctx.store.engine, ctx.clock).get(customer_id) is None:
        raise ApiError(404, f"no customer {customer_id}")
    rows = customer_history(ctx.store.engine, customer_id, limit=limit + 1, before_date=before)
    return page_of(rows, limit, result_out, lambda r: r.business_date.isoformat())


@router.get("/{run_id}", summary="One run of the check with its summary", **roles(*READ_ALL))
def get_check(ctx: Ctx, run_id: Id) -> CheckRun:
    return check_run_out(_check_run(ctx, run_id))


@router.get("/{run_id}/results", summary="The per-customer results a run decided, by customer",
            **roles(*READ_ALL))  # fmt: skip
def check_results(
    ctx: Ctx,
    run_id: Id,
    result: Annotated[Result | None, Query(description="Only PASS, FAIL or ERROR.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[CheckResult]:
    _check_run(ctx, run_id)
    rows = run_results(ctx.store.engine, run_id, result=result, limit=limit + 1,
                       after_customer_id=id_cursor(cursor))  # fmt: skip
    return page_of(rows, limit, result_out, lambda r: r.customer_id)
