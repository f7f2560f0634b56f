"""The audit entries of the store's changes: what each run and schedule change tells the trail.

Details stay small and free of customer data: a run's or schedule's arguments may hold
account numbers or names, so at most their keys are recorded. Fields whose value is
``None`` are left out. The entries are handed to :meth:`SqlBase._audit` on the connection
of the change, before it commits.

**Batches.** A transaction that changes several runs with the same action (a claim of 64
runs, a batch of completions, the runs a fire created) records one event for them, not one
per run: :func:`batched` folds the entries into ``object_id=None`` and details
``{"count": n, "runs": [{"id": 17, ...}, ...], <shared>...}``, where each run's item keeps
its own fields and the fields equal for every run (the node, an attempt of 1) are given
once at the top level. A transaction changing one run keeps that run's own entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any

from duly.engine.auditing import AuditEntry
from duly.engine.states import RunStatus
from duly.engine.store.base import CompleteParams, NewSchedule, RunRow, ScheduleRow

__all__ = [
    "COMPLETION_ACTIONS",
    "DECLARED_SOURCES",
    "batched",
    "before_after",
    "run_cancelled",
    "run_claimed",
    "run_completed",
    "run_entry",
    "run_fired",
    "run_handed_back",
    "run_lease_expired",
    "run_retried",
    "schedule_changes",
    "schedule_entry",
    "schedule_fields",
]

#: The action of each outcome a worker writes for an attempt.
COMPLETION_ACTIONS: Mapping[RunStatus, str] = {
    RunStatus.SUCCEEDED: "run.succeed",
    RunStatus.FAILED: "run.fail",
    RunStatus.RETRYING: "run.retry",
    RunStatus.CANCELLED: "run.cancel",
}

#: Schedule sources that declare schedules at start (configuration, duly's own): their
#: upserts are recorded as ``schedule.sync``; every other source is an operator's edit.
DECLARED_SOURCES = frozenset({"config", "system"})

#: Schedule fields recorded on a change; ``updated_at``/``version`` follow from any change.
_SCHEDULE_FIELDS = (
    *(f.name for f in fields(NewSchedule) if f.name != "args"),
    "next_fire_at",
    "broken_reason",
)


def _present(**details: Any) -> dict[str, Any]:
    return {k: v for k, v in details.items() if v is not None}


def run_entry(action: str, run_id: int, **details: Any) -> AuditEntry:
    """An entry on run ``run_id``; ``None`` details are left out."""
    return AuditEntry(action, "run", run_id, _present(**details))


def run_fired(
    run_id: int,
    job: str,
    scheduled_for: datetime,
    origin: str,
    *,
    schedule: str | None = None,
    status: RunStatus = RunStatus.QUEUED,
) -> AuditEntry:
    """``run.fire``: the run was created (queued, or already skipped or missed)."""
    return run_entry(
        "run.fire",
        run_id,
        job=job,
        scheduled_for=scheduled_for,
        origin=origin,
        schedule=schedule,
        status=status.value,
    )


def run_claimed(run: RunRow) -> AuditEntry:
    """``run.claim``: a node took the run under a new lease (``fence`` is its fencing token)."""
    return run_entry(
        "run.claim", run.id, node=run.lease_owner, attempt=run.attempt, fence=run.fencing_token
    )


def run_completed(p: CompleteParams) -> AuditEntry:
    """The outcome of attempt ``p.attempt``: succeed, fail, retry (with its ``not_before``) or cancel."""
    retrying = p.status is RunStatus.RETRYING
    return run_entry(
        COMPLETION_ACTIONS[p.status],
        p.run_id,
        attempt=p.attempt,
        error_code=p.error_code,
        not_before=p.not_before if retrying else None,
    )


def run_lease_expired(run: RunRow, attempt: int, node: str | None) -> AuditEntry:
    """``run.lease_expire``: the reaper took the run back from ``node``; ``status`` is what it decided."""
    return run_entry(
        "run.lease_expire",
        run.id,
        attempt=attempt,
        node=node,
        status=run.status.value,
        not_before=run.not_before if run.status is RunStatus.RETRYING else None,
    )


def run_handed_back(run_id: int, attempt: int) -> AuditEntry:
    """``run.hand_back``: a node shutting down returned the run to the queue, attempt uncounted."""
    return run_entry("run.hand_back", run_id, attempt=attempt, status=RunStatus.RETRYING.value)


def run_retried(run: RunRow, previous: str | None) -> AuditEntry:
    """``run.retry`` by an operator: a finished run queued again with fresh attempts."""
    return run_entry(
        "run.retry", run.id, manual=True, previous=previous, max_attempts=run.max_attempts
    )


def run_cancelled(
    run_id: int, *, error_code: str | None = None, requested: bool = False
) -> AuditEntry:
    """``run.cancel``: cancelled now, or (``requested``) a stop asked of the node running it."""
    return run_entry("run.cancel", run_id, error_code=error_code, requested=requested or None)


def batched(entries: Sequence[AuditEntry]) -> list[AuditEntry]:
    """``entries`` with the run entries of each action folded into one, if there are several.

    A folded entry takes the place of its action's first run entry; other entries (a
    schedule's, an action with one run) stay as they are, in their order.
    """
    by_action: dict[str, list[AuditEntry]] = {}
    for entry in entries:
        if entry.object_type == "run" and entry.object_id is not None:
            by_action.setdefault(entry.action, []).append(entry)
    if all(len(group) < 2 for group in by_action.values()):
        return list(entries)
    out: list[AuditEntry] = []
    folded: set[str] = set()
    for entry in entries:
        group = by_action.get(entry.action) if entry.object_type == "run" else None
        if group is None or len(group) < 2 or entry.object_id is None:
            out.append(entry)
        elif entry.action not in folded:
            folded.add(entry.action)
            out.append(_run_batch(entry.action, group))
    return out


def _run_batch(action: str, group: Sequence[AuditEntry]) -> AuditEntry:
    """One entry for ``group``: its shared fields at the top, each run's own in ``runs``."""
    first = group[0].details
    shared = {
        key: value
        for key, value in first.items()
        if key not in _BATCH_KEYS and all(_same(e.details, key, value) for e in group[1:])
    }
    items = [
        {"id": e.object_id, **{k: v for k, v in e.details.items() if k not in shared}}
        for e in group
    ]
    return AuditEntry(action, "run", None, {**shared, "count": len(group), "runs": items})


#: Keys of a batch's own: never taken for a shared field of its runs.
_BATCH_KEYS = frozenset({"id", "count", "runs"})


def _same(details: Mapping[str, Any], key: str, value: Any) -> bool:
    # Exact types: True and 1 are equal but print apart.
    if key not in details:
        return False
    other = details[key]
    return type(other) is type(value) and other == value


def schedule_fields(row: ScheduleRow) -> dict[str, Any]:
    """The recorded fields of ``row``: its definition and state, its arguments' keys only."""
    out = {name: getattr(row, name) for name in _SCHEDULE_FIELDS}
    out["args"] = sorted(row.args)
    return out


def before_after(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """``{"before": {...}, "after": {...}}`` of the keys whose value differs (none: empty)."""
    keys = [k for k in after if before.get(k) != after.get(k)]
    keys += [k for k in before if k not in after]
    if not keys:
        return {}
    return {"before": {k: before.get(k) for k in keys}, "after": {k: after.get(k) for k in keys}}


def schedule_entry(
    action: str, row: ScheduleRow, details: Mapping[str, Any] | None = None
) -> AuditEntry:
    """An entry on schedule ``row`` (by name: the name is how operators address it)."""
    return AuditEntry(action, "schedule", row.name, {"id": row.id, **(details or {})})


def schedule_changes(before: ScheduleRow | None, after: ScheduleRow) -> dict[str, Any]:
    """The before/after of the recorded fields an upsert changed (empty: nothing changed).

    Arguments are compared whole but recorded by their keys: a change of values only shows
    as ``args_changed``.
    """
    diff = before_after(schedule_fields(before) if before else {}, schedule_fields(after))
    if before is not None and before.args != after.args and "args" not in diff.get("after", {}):
        diff["args_changed"] = True
    return diff
