"""Which runs a schedule's due fires become: misfire and overlap policies. Pure.

The scheduler collects a schedule's fires that are due (``≤ now``) and asks :func:`plan_fires`
what to record. A fire is *late* when it is more than the grace period behind ``now``: the
node was down, or too busy. Late fires follow the misfire policy; fires on time always run
(subject to the overlap policy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from duly.engine.states import RunStatus

__all__ = ["FirePlan", "Misfire", "Overlap", "PlannedRun", "plan_fires"]

#: At most this many ``missed`` rows are written per schedule per pass; the rest are counted.
MAX_MISSED_ROWS = 100


class Misfire(StrEnum):
    """What to do with fires that came late."""

    RUN_ONCE = "run_once"
    """One catch-up run for the latest late fire; earlier ones are recorded ``missed``."""
    RUN_ALL = "run_all"
    """Every late fire runs, in order (money movement uses this)."""
    SKIP = "skip"
    """Late fires are recorded ``missed`` and an alert is raised."""


class Overlap(StrEnum):
    """What to do when a fire comes while the schedule's previous run is still active."""

    SKIP = "skip"
    QUEUE = "queue"
    ALLOW = "allow"
    CANCEL_PREVIOUS = "cancel_previous"


@dataclass(frozen=True, slots=True)
class PlannedRun:
    """One row to insert: the fire instant and the state it is created in."""

    scheduled_for: datetime
    status: RunStatus


@dataclass(frozen=True, slots=True)
class FirePlan:
    """The scheduler's decision for one schedule in one pass."""

    runs: tuple[PlannedRun, ...]
    cancel_previous: bool
    late: int
    """How many fires were late (misfired), written or not."""
    missed_unrecorded: int
    """Late fires not written as rows (beyond :data:`MAX_MISSED_ROWS`)."""

    @property
    def missed(self) -> int:
        """Late fires the misfire policy did not run, written as rows or not."""
        return sum(r.status is RunStatus.MISSED for r in self.runs) + self.missed_unrecorded

    @property
    def to_run(self) -> list[PlannedRun]:
        """The runs created ``queued``."""
        return [r for r in self.runs if r.status is RunStatus.QUEUED]


def plan_fires(
    due: Sequence[datetime],
    now: datetime,
    *,
    misfire: Misfire,
    grace: timedelta,
    overlap: Overlap,
    previous_active: bool,
    more_due: bool = False,
) -> FirePlan:
    """Decide the runs for ``due`` fires (ascending, all ``≤ now``) of one schedule.

    :param previous_active: whether a run of this schedule is queued, running or retrying.
    :param more_due: whether later fires are due too, left for the next pass (a pass takes
        a bounded number): ``run_once`` then leaves its one catch-up run to the pass that
        reaches the latest late fire.
    """
    late = [f for f in due if now - f > grace]
    on_time = [f for f in due if now - f <= grace]
    wanted, missed = _apply_misfire(late, misfire, more_due)
    wanted = sorted({*wanted, *on_time})
    recorded_missed = missed[-MAX_MISSED_ROWS:]
    planned = [PlannedRun(f, RunStatus.MISSED) for f in recorded_missed]
    planned += _apply_overlap(wanted, overlap, previous_active)
    planned.sort(key=lambda r: r.scheduled_for)
    return FirePlan(
        runs=tuple(planned),
        cancel_previous=overlap is Overlap.CANCEL_PREVIOUS and bool(wanted),
        late=len(late),
        missed_unrecorded=len(missed) - len(recorded_missed),
    )


def _apply_misfire(
    late: list[datetime], misfire: Misfire, more_due: bool
) -> tuple[list[datetime], list[datetime]]:
    """Split late fires into (to run, missed)."""
    if not late:
        return [], []
    if misfire is Misfire.RUN_ALL:
        return late, []
    if misfire is Misfire.RUN_ONCE and not more_due:
        return late[-1:], late[:-1]
    return [], late


def _apply_overlap(
    wanted: list[datetime], overlap: Overlap, previous_active: bool
) -> list[PlannedRun]:
    """Turn the fires to run into rows, given whether a previous run is still active."""
    if overlap is Overlap.SKIP:
        # Only the first can start, and only if nothing is running; the rest would overlap it.
        if previous_active:
            return [PlannedRun(f, RunStatus.SKIPPED) for f in wanted]
        return [
            PlannedRun(f, RunStatus.QUEUED if i == 0 else RunStatus.SKIPPED)
            for i, f in enumerate(wanted)
        ]
    if overlap is Overlap.CANCEL_PREVIOUS and len(wanted) > 1:
        # Each fire cancels the one before: only the last is worth starting.
        return [PlannedRun(f, RunStatus.SKIPPED) for f in wanted[:-1]] + [
            PlannedRun(wanted[-1], RunStatus.QUEUED)
        ]
    return [PlannedRun(f, RunStatus.QUEUED) for f in wanted]
