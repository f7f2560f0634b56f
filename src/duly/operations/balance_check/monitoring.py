"""Monitoring figures over ``error_logs`` and ``balance_check_results`` (the dashboard's data).

Read-only except :func:`resolve`, the one change ``error_logs`` allows (its resolution
fields; database triggers refuse anything else). Periods are half-open ``[since, until)``
in UTC. No figure carries a balance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Engine, case, func, select, update

from duly.audit import AuditEntry, record
from duly.banking.catalog import describe
from duly.engine.store.dialect import utc_hour
from duly.operations.balance_check.models import balance_check_results, error_logs
from duly.operations.errors import NotFound, OperationError, StateConflict

__all__ = [
    "AlreadyResolved",
    "CodeCount",
    "CustomerCount",
    "ErrorLogRow",
    "HourCount",
    "ResolveError",
    "ResultRow",
    "UnknownError",
    "customer_history",
    "error_counts_by_code",
    "error_counts_by_hour",
    "get_error",
    "recent_errors",
    "resolve",
    "run_results",
    "top_customers",
]

MAX_NOTES = 2000


@dataclass(frozen=True, slots=True)
class CodeCount:
    """Errors of one code in a period, with the catalogue's description and severity."""

    code: str
    count: int
    unresolved: int
    description: str
    severity: str
    suggested_action: str


@dataclass(frozen=True, slots=True)
class HourCount:
    """Errors logged in the hour starting at ``hour`` (UTC)."""

    hour: datetime
    count: int


@dataclass(frozen=True, slots=True)
class CustomerCount:
    """A customer's errors in a period."""

    customer_id: int
    count: int
    last_logged_at: datetime
    last_code: str


@dataclass(frozen=True, slots=True)
class ErrorLogRow:
    """An ``error_logs`` row as shown to operators (the stack trace stays internal)."""

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


@dataclass(frozen=True, slots=True)
class ResultRow:
    """A ``balance_check_results`` row (outcome only, never the balance)."""

    run_id: int
    business_date: date
    customer_id: int
    result: str
    error_code: str | None
    attempts: int
    checked_at: datetime


def _period(since: datetime, until: datetime | None) -> list[Any]:
    conds: list[Any] = [error_logs.c.logged_at >= since]
    if until is not None:
        conds.append(error_logs.c.logged_at < until)
    return conds


def error_counts_by_code(
    engine: Engine, since: datetime, until: datetime | None = None
) -> list[CodeCount]:
    """Errors per code logged in ``[since, until)``, most frequent first."""
    e = error_logs.c
    unresolved = func.sum(case((e.resolved.is_(False), 1), else_=0))
    with engine.connect() as conn:
        rows = conn.execute(
            select(e.error_code, func.count(), unresolved)
            .where(*_period(since, until))
            .group_by(e.error_code)
            .order_by(func.count().desc(), e.error_code)
        ).all()
    out = []
    for code, count, open_count in rows:
        info = describe(code)
        out.append(
            CodeCount(
                code=code,
                count=int(count),
                unresolved=int(open_count or 0),
                description=info.description if info else "",
                severity=info.severity if info else "",
                suggested_action=info.suggested_action if info else "",
            )
        )
    return out


def error_counts_by_hour(
    engine: Engine, since: datetime, until: datetime, *, code: str | None = None
) -> list[HourCount]:
    """Errors per UTC hour in ``[since, until)``, every hour listed (zero included)."""
    e = error_logs.c
    conds = _period(since, until) + ([e.error_code == code] if code else [])
    with engine.connect() as conn:
        hour = utc_hour(e.logged_at, postgres=conn.dialect.name == "postgresql")
        grouped = conn.execute(select(hour, func.count()).where(*conds).group_by(hour)).all()
    start = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    counts: dict[datetime, int] = {}
    at = start
    while at < until:
        counts[at] = 0
        at += timedelta(hours=1)
    for text_hour, count in grouped:  # counted in SQL: a week of errors is 168 rows, not all
        key = datetime.strptime(text_hour, "%Y-%m-%d %H").replace(tzinfo=UTC)
        counts[key] = counts.get(key, 0) + int(count)
    return [HourCount(h, n) for h, n in sorted(counts.items())]


def top_customers(
    engine: Engine, since: datetime, until: datetime | None = None, *, limit: int = 10
) -> list[CustomerCount]:
    """The ``limit`` customers with most errors in ``[since, until)``."""
    e = error_logs.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(e.customer_id, func.count(), func.max(e.logged_at), func.max(e.id))
            .where(*_period(since, until), e.customer_id.is_not(None))
            .group_by(e.customer_id)
            .order_by(func.count().desc(), e.customer_id)
            .limit(limit)
        ).all()
        last_codes = dict(
            conn.execute(
                select(e.id, e.error_code).where(e.id.in_([int(r[3]) for r in rows]))
            ).all()
        )
    return [
        CustomerCount(
            customer_id=int(cid),
            count=int(n),
            last_logged_at=last,
            last_code=last_codes[int(last_id)],
        )
        for cid, n, last, last_id in rows
    ]


def recent_errors(
    engine: Engine,
    *,
    limit: int = 50,
    code: str | None = None,
    customer_id: int | None = None,
    unresolved_only: bool = False,
    since: datetime | None = None,
    before_id: int | None = None,
    until: datetime | None = None,
    resolved: bool | None = None,
) -> list[ErrorLogRow]:
    """The newest errors first, filtered; page with ``before_id`` (the last id shown).

    ``since``/``until`` bound ``logged_at`` (half-open); ``resolved`` keeps only resolved
    (``True``) or unresolved (``False``) errors — ``unresolved_only`` is ``resolved=False``.
    """
    e = error_logs.c
    conds: list[Any] = []
    if code:
        conds.append(e.error_code == code)
    if customer_id is not None:
        conds.append(e.customer_id == customer_id)
    if unresolved_only or resolved is False:
        conds.append(e.resolved.is_(False))
    elif resolved:
        conds.append(e.resolved.is_(True))
    if since is not None:
        conds.append(e.logged_at >= since)
    if until is not None:
        conds.append(e.logged_at < until)
    if before_id is not None:
        conds.append(e.id < before_id)
    with engine.connect() as conn:
        rows = conn.execute(
            select(*_shown()).where(*conds).order_by(e.id.desc()).limit(limit)
        ).all()
    return [_error(r) for r in rows]


def get_error(engine: Engine, error_id: int) -> ErrorLogRow | None:
    """One error, if it exists."""
    with engine.connect() as conn:
        row = conn.execute(select(*_shown()).where(error_logs.c.id == error_id)).one_or_none()
    return _error(row) if row is not None else None


def customer_history(
    engine: Engine, customer_id: int, *, limit: int = 30, before_date: date | None = None
) -> list[ResultRow]:
    """The customer's check results, newest night first (the drill-down of an error).

    Page with ``before_date`` (the last night shown): a customer has one result a night.
    """
    r = balance_check_results.c
    conds: list[Any] = [r.customer_id == customer_id]
    if before_date is not None:
        conds.append(r.business_date < before_date)
    with engine.connect() as conn:
        rows = conn.execute(
            select(balance_check_results)
            .where(*conds)
            .order_by(r.business_date.desc())
            .limit(limit)
        ).all()
    return [_result(x) for x in rows]


def run_results(
    engine: Engine,
    run_id: int,
    *,
    result: str | None = None,
    limit: int = 1000,
    after_customer_id: int | None = None,
) -> list[ResultRow]:
    """The results a run decided (optionally only ``PASS``, ``FAIL`` or ``ERROR``), by customer.

    Page with ``after_customer_id`` (the last customer shown): one result per customer a night.
    """
    r = balance_check_results.c
    conds: list[Any] = [r.run_id == run_id] + ([r.result == result] if result else [])
    if after_customer_id is not None:
        conds.append(r.customer_id > after_customer_id)
    with engine.connect() as conn:
        rows = conn.execute(
            select(balance_check_results).where(*conds).order_by(r.customer_id).limit(limit)
        ).all()
    return [_result(x) for x in rows]


class ResolveError(OperationError):
    """The error cannot be resolved (unknown, already resolved, or bad input)."""


# Subclasses so the API answers each refusal with its own status (404, 409; else 422)
# while the CLI keeps catching ResolveError.
class UnknownError(ResolveError, NotFound):
    """No error with that id."""


class AlreadyResolved(ResolveError, StateConflict):
    """The error was resolved before (an error is resolved once)."""


def resolve(engine: Engine, error_id: int, *, by: str, notes: str, now: datetime) -> ErrorLogRow:
    """Mark an error resolved by ``by`` with ``notes`` (once; the only change allowed).

    :raises ResolveError: empty or too long ``by``/``notes``; its subclasses
        :class:`UnknownError` for an unknown id and :class:`AlreadyResolved` if it was
        resolved before.
    """
    by, notes = by.strip(), notes.strip()
    if not by or len(by) > 200:
        raise ResolveError("who resolves it is required (1–200 characters)")
    if not notes or len(notes) > MAX_NOTES:
        raise ResolveError(f"resolution notes are required (1–{MAX_NOTES} characters)")
    if "\x00" in by or "\x00" in notes:  # PostgreSQL cannot store a NUL in text
        raise ResolveError("who and notes may not contain NUL characters")
    e = error_logs.c
    with engine.begin() as conn:
        changed = conn.execute(
            update(error_logs)
            .where(e.id == error_id, e.resolved.is_(False))
            .values(resolved=True, resolved_at=now, resolved_by=by, resolution_notes=notes)
        ).rowcount
        row = conn.execute(select(*_shown()).where(e.id == error_id)).one_or_none()
        if changed and row is not None:
            # the notes are the operator's own words on the fix: what an auditor wants to read
            details = {"error_code": row.error_code, "resolved_by": by, "notes": notes}
            record(conn, [AuditEntry("error.resolve", "error", error_id, details)], now)
    if row is None:
        raise UnknownError(f"no error {error_id}")
    if not changed:
        raise AlreadyResolved(f"error {error_id} was already resolved by {row.resolved_by}")
    # a fresh logger: one cached at import would keep the stream of the first configuration
    structlog.get_logger("duly.monitoring").info(
        "error.resolved", error_id=error_id, error_code=row.error_code, resolved_by=by
    )
    return _error(row)


def _shown() -> list[Any]:
    return [c for c in error_logs.c if c.name != "stack_trace"]


def _error(row: Any) -> ErrorLogRow:
    return ErrorLogRow(
        id=int(row.id),
        run_id=None if row.run_id is None else int(row.run_id),
        job_name=row.job_name,
        customer_id=None if row.customer_id is None else int(row.customer_id),
        business_date=row.business_date,
        error_code=row.error_code,
        message=row.message,
        retry_count=int(row.retry_count),
        logged_at=row.logged_at,
        resolved=bool(row.resolved),
        resolved_at=row.resolved_at,
        resolved_by=row.resolved_by,
        resolution_notes=row.resolution_notes,
    )


def _result(row: Any) -> ResultRow:
    return ResultRow(
        run_id=int(row.run_id),
        business_date=row.business_date,
        customer_id=int(row.customer_id),
        result=row.result,
        error_code=row.error_code,
        attempts=int(row.attempts),
        checked_at=row.checked_at,
    )
