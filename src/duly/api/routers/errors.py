"""``/errors``: the error log — list, one error, summary by code, trends, top customers, resolve.

The figures are those of ``duly errors …`` (``operations/balance_check/monitoring.py``).
Periods are half-open ``[since, until)``; an aggregate's default is the last 24 hours. No
answer carries a balance or a stack trace (the trace stays in the database for engineers).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import Field

from duly.api.context import Ctx
from duly.api.errors import ApiError
from duly.api.pagination import Cursor, Limit, Page, page_of
from duly.api.paths import API_PREFIX
from duly.api.routers._monitoring import (
    CODE_PATTERN,
    MAX_ID,
    Id,
    actor_of,
    bounds,
    id_cursor,
    period,
)
from duly.api.schemas import Instant, Response
from duly.api.schemas import Request as Body
from duly.api.security import OPS, READ_ALL, roles
from duly.operations.balance_check import monitoring
from duly.operations.balance_check.monitoring import ErrorLogRow

router = APIRouter(prefix=f"{API_PREFIX}/errors", tags=["errors"])

#: An aggregate's period when none is given (as the CLI's ``--hours 24``).
DEFAULT_PERIOD = timedelta(hours=24)
#: The longest period of the summary and the top customers (as the CLI's ``--hours`` allows).
LONGEST_PERIOD = timedelta(days=366)
#: The longest period of the trends: one point an hour, 744 at most.
LONGEST_TRENDS = timedelta(days=31)

Code = Annotated[
    str | None, Query(pattern=CODE_PATTERN, description="Only this code, e.g. `TIMEOUT`.")
]
Since = Annotated[
    Instant | None, Query(description="Logged at or after (default: 24 h before until).")
]
Customer = Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only this customer.")]
Resolved = Annotated[bool | None, Query(description="Only resolved (true) or not (false).")]
Until = Annotated[Instant | None, Query(description="Logged before (default: now).")]


class ErrorLog(Response):
    """An entry of the error log: what failed, for whom, and whether people resolved it."""

    id: int
    run_id: int | None
    job_name: str
    customer_id: int | None
    business_date: date | None
    error_code: str
    message: str
    retry_count: int
    logged_at: datetime
    resolved: bool
    resolved_at: datetime | None
    resolved_by: str | None
    resolution_notes: str | None


class CodeCount(Response):
    """Errors of one code in the period, with the catalogue's description and severity."""

    code: str
    count: int
    unresolved: int
    description: str
    severity: str
    suggested_action: str


class ErrorSummary(Response):
    """Errors by code in ``[since, until)``, most frequent first."""

    since: datetime
    until: datetime
    total: int
    unresolved: int
    codes: list[CodeCount]


class HourCount(Response):
    """Errors logged in the hour starting at ``hour`` (UTC)."""

    hour: datetime
    count: int


class ErrorTrends(Response):
    """Errors per UTC hour in ``[since, until)``, every hour listed (zero included)."""

    since: datetime
    until: datetime
    code: str | None
    hours: list[HourCount]


class CustomerCount(Response):
    """A customer's errors in the period and the last of them."""

    customer_id: int
    count: int
    last_logged_at: datetime
    last_code: str


class TopCustomers(Response):
    """The customers with most errors in ``[since, until)``."""

    since: datetime
    until: datetime
    customers: list[CustomerCount]


class ResolveBody(Body):
    """What was found and done; recorded with who (the token) and when."""

    notes: str = Field(min_length=1, max_length=monitoring.MAX_NOTES, pattern=r"\S",
                       description="Resolution notes (not blank).")  # fmt: skip


def error_out(row: ErrorLogRow) -> ErrorLog:
    """The API's view of an error log entry."""
    return ErrorLog.model_validate(row)


@router.get("", summary="The error log, newest first", **roles(*READ_ALL))
def list_errors(
    ctx: Ctx,
    code: Code = None,
    customer: Customer = None,
    since: Annotated[Instant | None, Query(description="Logged at or after.")] = None,
    until: Annotated[Instant | None, Query(description="Logged before.")] = None,
    resolved: Resolved = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[ErrorLog]:
    start, end = bounds(since, until)
    rows = monitoring.recent_errors(
        ctx.store.engine, limit=limit + 1, code=code, customer_id=customer, since=start,
        until=end, resolved=resolved, before_id=id_cursor(cursor),
    )  # fmt: skip
    return page_of(rows, limit, error_out, lambda r: r.id)


@router.get("/summary", summary="Errors by code in a period (default: the last 24 h)",
            **roles(*READ_ALL))  # fmt: skip
def error_summary(ctx: Ctx, since: Since = None, until: Until = None) -> ErrorSummary:
    start, end = period(ctx.clock.now(), since, until, default=DEFAULT_PERIOD,
                        longest=LONGEST_PERIOD)  # fmt: skip
    rows = monitoring.error_counts_by_code(ctx.store.engine, start, end)
    return ErrorSummary(
        since=start, until=end, total=sum(r.count for r in rows),
        unresolved=sum(r.unresolved for r in rows),
        codes=[CodeCount.model_validate(r) for r in rows],
    )  # fmt: skip


@router.get("/trends", summary="Errors per hour (UTC) in a period of at most 31 days",
            **roles(*READ_ALL))  # fmt: skip
def error_trends(
    ctx: Ctx, since: Since = None, until: Until = None, code: Code = None
) -> ErrorTrends:
    start, end = period(ctx.clock.now(), since, until, default=DEFAULT_PERIOD,
                        longest=LONGEST_TRENDS)  # fmt: skip
    rows = monitoring.error_counts_by_hour(ctx.store.engine, start, end, code=code)
    return ErrorTrends(since=start, until=end, code=code,
                       hours=[HourCount.model_validate(r) for r in rows])  # fmt: skip


@router.get("/top-customers", summary="The customers with most errors in a period",
            **roles(*READ_ALL))  # fmt: skip
def error_top_customers(
    ctx: Ctx,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, Query(ge=1, le=100, description="How many customers (1–100).")] = 10,
) -> TopCustomers:
    start, end = period(ctx.clock.now(), since, until, default=DEFAULT_PERIOD,
                        longest=LONGEST_PERIOD)  # fmt: skip
    rows = monitoring.top_customers(ctx.store.engine, start, end, limit=limit)
    return TopCustomers(since=start, until=end,
                        customers=[CustomerCount.model_validate(r) for r in rows])  # fmt: skip


@router.get("/{error_id}", summary="One error", **roles(*READ_ALL))
def get_error(ctx: Ctx, error_id: Id) -> ErrorLog:
    row = monitoring.get_error(ctx.store.engine, error_id)
    if row is None:
        raise ApiError(404, f"no error {error_id}")
    return error_out(row)


@router.post("/{error_id}/resolve", summary="Mark an error resolved, with notes (once)",
             **roles(*OPS))  # fmt: skip
def resolve_error(request: Request, ctx: Ctx, error_id: Id, body: ResolveBody) -> ErrorLog:
    # monitoring.UnknownError → 404, AlreadyResolved → 409, other ResolveError → 422
    # (they are operations errors, mapped in api/errors.py)
    row = monitoring.resolve(ctx.store.engine, error_id, by=actor_of(request), notes=body.notes,
                             now=ctx.clock.now())  # fmt: skip
    return error_out(row)
