"""The last nights of the balance check at a glance: one line per business date.

For each night, the newest run that checked it and the figures of its summary (customers,
passed, failed, errors by code, duration), with the duration set against the check's
window. The figures are those the job wrote on its run (night totals, counts only: no
balance); a night whose run has not succeeded shows the run's status and error instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from duly.engine.states import RunStatus
from duly.engine.store.base import RunFilter, RunRow
from duly.engine.store.sql import SqlStore
from duly.operations.balance_check.models import JOB_NAME

__all__ = ["Night", "last_nights"]


@dataclass(frozen=True, slots=True)
class Night:
    """A business date's check: the run, its outcome and its figures (``None`` until known)."""

    business_date: date
    run_id: int
    status: RunStatus
    error_code: str | None
    customers: int | None = None
    passed: int | None = None
    failed: int | None = None
    errors: int | None = None
    errors_by_code: dict[str, int] = field(default_factory=dict)
    duration_seconds: float | None = None
    window_seconds: float = 0.0

    @property
    def within_window(self) -> bool | None:
        """Whether the check finished inside its window (``None`` without a duration)."""
        if self.duration_seconds is None:
            return None
        return self.duration_seconds <= self.window_seconds


def _date(value: Any) -> date | None:
    try:
        return date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _int(summary: dict[str, Any], name: str) -> int | None:
    value = summary.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _night(run: RunRow, window: timedelta) -> Night | None:
    summary = run.result if isinstance(run.result, dict) else {}
    day = _date(summary.get("business_date")) or _date(run.args.get("business_date"))
    if day is None:
        day = run.scheduled_for.date()  # a scheduled fire checks the night it fires in
    codes = summary.get("errors_by_code")
    duration = summary.get("duration_seconds")
    return Night(
        business_date=day, run_id=run.id, status=run.status, error_code=run.error_code,
        customers=_int(summary, "customers"), passed=_int(summary, "passed"),
        failed=_int(summary, "failed"), errors=_int(summary, "errors"),
        errors_by_code={str(k): int(v) for k, v in codes.items() if isinstance(v, int)}
        if isinstance(codes, dict) else {},
        duration_seconds=float(duration) if isinstance(duration, int | float) else None,
        window_seconds=window.total_seconds(),
    )  # fmt: skip


def last_nights(store: SqlStore, window: timedelta, nights: int = 30) -> list[Night]:
    """The ``nights`` most recent business dates checked, newest first, each by its newest run.

    Reads the check's newest runs through ``ix_runs_job_id``: a few per night at most
    (backfills and reruns), so a bounded page whatever the size of the history.
    """
    seen: dict[date, Night] = {}
    before: int | None = None
    while len(seen) < nights:
        page = store.run_list(RunFilter(job_name=JOB_NAME, limit=nights * 2, before_id=before))
        for run in page:
            night = _night(run, window)
            if night is not None and night.business_date not in seen:
                seen[night.business_date] = night
        if len(page) < nights * 2:
            break
        before = page[-1].id
    return sorted(seen.values(), key=lambda n: n.business_date, reverse=True)[:nights]
