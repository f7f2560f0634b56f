"""The run state machine, in one place.

Every transition is one UPDATE guarded by the expected state (and, for a running run,
by the lease's fencing token), so a stale node can never overwrite a newer outcome.
The store implements the UPDATEs; this module says which are allowed and who makes them.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ACTIVE", "CLAIMABLE", "FINAL", "TRANSITIONS", "RunStatus", "can_move"]


class RunStatus(StrEnum):
    """Where a run is in its life."""

    QUEUED = "queued"
    """Waiting for a worker. Made by the scheduler (a fire) or a manual trigger; a worker claims it."""
    RUNNING = "running"
    """Claimed by a worker under a lease. The worker completes it; the reaper takes it back if the lease expires."""
    RETRYING = "retrying"
    """An attempt failed and another is allowed after ``not_before``. A worker claims it again."""
    SUCCEEDED = "succeeded"
    """Final: the job returned. Made by the worker, in the transaction of the job's effects."""
    FAILED = "failed"
    """Final: attempts exhausted or a terminal error. Made by the worker or the reaper; an alert is raised."""
    CANCELLED = "cancelled"
    """Final: cancelled by an operator or by ``cancel_previous`` overlap before (or while) it ran."""
    SKIPPED = "skipped"
    """Final: the schedule fired while a previous run was active and its overlap policy is ``skip``."""
    MISSED = "missed"
    """Final: the fire came too late (node down) and the misfire policy chose not to run it."""


CLAIMABLE: frozenset[RunStatus] = frozenset({RunStatus.QUEUED, RunStatus.RETRYING})
ACTIVE: frozenset[RunStatus] = frozenset({RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.RETRYING})
FINAL: frozenset[RunStatus] = frozenset(
    {
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
        RunStatus.SKIPPED,
        RunStatus.MISSED,
    }
)

#: Allowed moves. ``None`` as a source means "created in that state".
TRANSITIONS: frozenset[tuple[RunStatus | None, RunStatus]] = frozenset(
    {
        (None, RunStatus.QUEUED),
        (None, RunStatus.SKIPPED),
        (None, RunStatus.MISSED),
        (RunStatus.QUEUED, RunStatus.RUNNING),
        (RunStatus.RETRYING, RunStatus.RUNNING),
        (RunStatus.RUNNING, RunStatus.SUCCEEDED),
        (RunStatus.RUNNING, RunStatus.RETRYING),
        (RunStatus.RUNNING, RunStatus.FAILED),
        (RunStatus.RUNNING, RunStatus.CANCELLED),
        (RunStatus.QUEUED, RunStatus.CANCELLED),
        (RunStatus.RETRYING, RunStatus.CANCELLED),
        # An operator's retry of a finished run puts it back in the queue.
        (RunStatus.FAILED, RunStatus.QUEUED),
        (RunStatus.CANCELLED, RunStatus.QUEUED),
        (RunStatus.MISSED, RunStatus.QUEUED),
    }
)


def can_move(source: RunStatus | None, target: RunStatus) -> bool:
    """Whether a run may go from ``source`` to ``target``."""
    return (source, target) in TRANSITIONS
