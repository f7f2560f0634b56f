"""Reads for the operations overview: active runs, runs by hour, lateness, queue depth, next fires.

Each read touches a bounded slice of the tables through an index (active runs through the
partial claim and lease indexes, a period of runs through ``ix_runs_scheduled_for``, the
next fires through ``ix_schedules_due``), so the overview stays fast however long the
history grows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import and_, case, func, select

from duly.engine.states import ACTIVE
from duly.engine.store.base import RunRow, ScheduleRow
from duly.engine.store.dialect import utc_hour
from duly.engine.store.plumbing import SqlBase
from duly.engine.store.rows import run_row, schedule_row
from duly.engine.store.schema import runs, schedules

__all__ = ["HourCount", "OverviewQueries", "QueueDepth"]


@dataclass(frozen=True, slots=True)
class HourCount:
    """Runs scheduled in the UTC hour starting at ``hour`` that are in ``status`` now."""

    hour: datetime
    status: str
    count: int


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """Runs of one job waiting in a queue: all of them, and those already due at ``now``."""

    queue: str
    job_name: str
    waiting: int
    due: int


class OverviewQueries(SqlBase):
    """The overview's reads (see the module docstring)."""

    def run_active_counts(self) -> dict[str, int]:
        """How many runs are queued, running and retrying now (every active status listed)."""
        with self._read() as conn:
            rows = conn.execute(
                select(runs.c.status, func.count())
                .where(runs.c.status.in_([s.value for s in ACTIVE]))
                .group_by(runs.c.status)
            ).all()
        counts = {s.value: 0 for s in sorted(ACTIVE)}
        counts.update({str(status): int(n) for status, n in rows})
        return counts

    def run_hour_counts(self, since: datetime, until: datetime) -> list[HourCount]:
        """Runs scheduled in ``[since, until)`` per UTC hour and status, counted in SQL."""
        r = runs.c
        hour = utc_hour(r.scheduled_for, postgres=self.is_postgres)
        with self._read() as conn:
            rows = conn.execute(
                select(hour, r.status, func.count())
                .where(r.scheduled_for >= since, r.scheduled_for < until)
                .group_by(hour, r.status)
            ).all()
        return [HourCount(datetime.strptime(h, "%Y-%m-%d %H").replace(tzinfo=UTC), str(s), int(n))
                for h, s, n in rows]  # fmt: skip

    def run_start_delays(self, since: datetime, until: datetime) -> list[float]:
        """Seconds from due to start of the scheduled runs due in ``[since, until)`` that started."""
        r = runs.c
        with self._read() as conn:
            rows = conn.execute(
                select(r.scheduled_for, r.started_at).where(
                    r.scheduled_for >= since, r.scheduled_for < until, r.origin == "schedule",
                    r.started_at.is_not(None),
                )
            ).all()  # fmt: skip
        return [max(0.0, (b - a).total_seconds()) for a, b in rows]

    def run_queue_depths(self, now: datetime) -> list[QueueDepth]:
        """Runs waiting to be claimed, per queue and job; ``due`` counts those claimable now."""
        r = runs.c
        due = func.sum(case((r.not_before <= now, 1), else_=0))
        with self._read() as conn:
            rows = conn.execute(
                select(r.queue, r.job_name, func.count(), due)
                .where(r.status.in_(["queued", "retrying"]))
                .group_by(r.queue, r.job_name)
                .order_by(func.count().desc(), r.queue, r.job_name)
            ).all()
        return [QueueDepth(str(q), str(j), int(n), int(d or 0)) for q, j, n, d in rows]

    def run_running_by_node(self) -> dict[str, int]:
        """How many runs each node holds a lease on now (through the partial lease index)."""
        r = runs.c
        with self._read() as conn:
            rows = conn.execute(
                select(r.lease_owner, func.count())
                .where(r.status == "running", r.lease_expires_at.is_not(None))
                .group_by(r.lease_owner)
            ).all()
        return {str(owner): int(n) for owner, n in rows if owner is not None}

    def schedule_last_runs(self, schedule_ids: Sequence[int]) -> dict[int, RunRow]:
        """Each schedule's latest run by ``scheduled_for`` (through its unique index)."""
        r = runs.c
        out: dict[int, RunRow] = {}
        with self._read() as conn:
            for sid in schedule_ids:
                row = conn.execute(
                    select(runs).where(r.schedule_id == sid).order_by(r.scheduled_for.desc())
                    .limit(1)
                ).first()  # fmt: skip
                if row is not None:
                    out[sid] = run_row(row)
        return out

    def schedule_upcoming(self, limit: int) -> list[ScheduleRow]:
        """The ``limit`` unpaused schedules that fire next, soonest first."""
        s = schedules.c
        with self._read() as conn:
            rows = conn.execute(
                select(schedules)
                .where(and_(~s.paused, s.next_fire_at.is_not(None)))  # ix_schedules_due's predicate
                .order_by(s.next_fire_at, s.id)
                .limit(limit)
            ).all()
        return [schedule_row(row) for row in rows]
