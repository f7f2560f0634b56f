"""The store contract: rows, parameters and the :class:`Store` protocol.

Everything the engine asks of a database goes through these entity-prefixed verbs
(``schedule_*``, ``run_*``, ``lease_*``, ``node_*``, ``alert_*``, ``execution_*``). The SQL
lives in one implementation (:mod:`duly.engine.store.sql`) that runs on SQLite and
PostgreSQL; the same conformance tests run against both.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from duly.engine.planning import PlannedRun
from duly.engine.states import RunStatus

__all__ = [
    "AlertRow",
    "AttemptRow",
    "ClaimParams",
    "ClaimedRun",
    "CompleteParams",
    "FireDecision",
    "FiredSchedule",
    "MisfireTally",
    "NewAlert",
    "NewRun",
    "NewSchedule",
    "NodeRow",
    "RunFilter",
    "RunRow",
    "ScheduleRow",
    "Store",
]


@dataclass(frozen=True, slots=True)
class NewSchedule:
    """A schedule definition to create or update (by ``name``)."""

    name: str
    job_name: str
    spec: str
    timezone: str = "UTC"
    args: dict[str, Any] = field(default_factory=dict)
    calendar: str | None = None
    adjust: str = "none"
    dst_gap: str = "shift"
    dst_repeat: str = "first"
    start_at: datetime | None = None
    end_at: datetime | None = None
    misfire: str = "run_once"
    misfire_grace_seconds: int = 60
    overlap: str = "queue"
    queue: str = "default"
    priority: int = 0
    paused: bool = False
    source: str = "api"

    def definition(self) -> tuple[Any, ...]:
        """The fields whose change moves the schedule's next fire."""
        return (
            self.job_name,
            self.spec,
            self.timezone,
            self.calendar,
            self.adjust,
            self.dst_gap,
            self.dst_repeat,
            self.start_at,
            self.end_at,
        )


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """A persisted schedule."""

    id: int
    name: str
    job_name: str
    spec: str
    timezone: str
    calendar: str | None
    adjust: str
    dst_gap: str
    dst_repeat: str
    start_at: datetime | None
    end_at: datetime | None
    args: dict[str, Any]
    misfire: str
    misfire_grace_seconds: int
    overlap: str
    queue: str
    priority: int
    paused: bool
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    source: str
    version: int
    created_at: datetime
    updated_at: datetime
    broken_reason: str | None = None
    """Why firing set this schedule aside (it is not fired until fixed), or ``None``."""
    broken_at: datetime | None = None
    paused_set_by: str | None = None
    """``"api"`` once an operator paused or resumed it: upserts then keep ``paused``."""
    catchup_late: int = 0
    """Late fires counted by the passes of a catch-up still under way (see :class:`MisfireTally`)."""
    catchup_missed: int = 0
    catchup_first_late: datetime | None = None
    catchup_last_late: datetime | None = None

    @property
    def catchup(self) -> MisfireTally | None:
        """The late fires of earlier passes of a catch-up still under way, if any."""
        if not self.catchup_late or self.catchup_first_late is None:
            return None
        return MisfireTally(
            self.catchup_late,
            self.catchup_missed,
            self.catchup_first_late,
            self.catchup_last_late or self.catchup_first_late,
        )


@dataclass(frozen=True, slots=True)
class MisfireTally:
    """The late fires of one catch-up, counted across the scheduler passes it takes."""

    late: int
    missed: int
    """Of them, the ones the misfire policy did not run."""
    first_late: datetime
    last_late: datetime

    def __add__(self, other: MisfireTally) -> MisfireTally:
        return MisfireTally(
            self.late + other.late,
            self.missed + other.missed,
            min(self.first_late, other.first_late),
            max(self.last_late, other.last_late),
        )


@dataclass(frozen=True, slots=True)
class FireDecision:
    """What the scheduler decided for one due schedule (see :func:`~duly.engine.planning.plan_fires`)."""

    runs: Sequence[PlannedRun]
    next_fire_at: datetime | None
    cancel_previous: bool = False
    max_attempts: int = 1
    window_seconds: float | None = None
    priority: int | None = None
    queue: str | None = None
    misfires: MisfireTally | None = None
    """The catch-up's late fires so far, this pass included (``None``: none came late)."""
    catching_up: bool = False
    """More fires are due than this pass took: the tally carries over to the next pass."""


#: Called by ``schedule_fire_due`` inside its transaction: (schedule, previous run active) → decision.
#: It raises :class:`~duly.engine.errors.ScheduleBroken` for a definition it cannot evaluate.
FirePlanner = Callable[[ScheduleRow, bool], FireDecision]


@dataclass(frozen=True, slots=True)
class FiredSchedule:
    """The outcome of firing one schedule."""

    schedule: ScheduleRow
    decision: FireDecision
    created_run_ids: tuple[int, ...]
    broken_reason: str | None = None
    """Set when the planner found the definition unusable: nothing fired, the schedule is now broken."""


@dataclass(frozen=True, slots=True)
class NewRun:
    """A run to enqueue by hand (manual trigger, backfill)."""

    job_name: str
    scheduled_for: datetime
    idempotency_key: str
    args: dict[str, Any] = field(default_factory=dict)
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 1
    window_seconds: float | None = None
    origin: str = "manual"


@dataclass(frozen=True, slots=True)
class RunRow:
    """A persisted run."""

    id: int
    job_name: str
    schedule_id: int | None
    scheduled_for: datetime
    idempotency_key: str
    origin: str
    args: dict[str, Any]
    status: RunStatus
    queue: str
    priority: int
    serial_key: str | None
    attempt: int
    max_attempts: int
    not_before: datetime
    lease_owner: str | None
    lease_expires_at: datetime | None
    fencing_token: int
    cancel_requested: bool
    started_at: datetime | None
    finished_at: datetime | None
    window_ends_at: datetime | None
    result: Any
    error_code: str | None
    error_message: str | None
    progress_done: int | None
    progress_total: int | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ClaimParams:
    """What a worker asks for when it claims runs."""

    node: str
    queues: Sequence[str]
    limit: int
    now: datetime
    lease_seconds: float
    #: job name → most runs of it running at once across nodes (only for limited jobs).
    job_limits: dict[str, int] = field(default_factory=dict)
    #: jobs this worker can run; ``None`` means any.
    job_names: frozenset[str] | None = None
    #: Jobs that take no slot of their own (inline jobs, executed one after the other on
    #: the worker's loop): of the ``limit`` runs, those of other jobs are at most
    #: :attr:`slot_limit`.
    inline_jobs: frozenset[str] = frozenset()
    #: Most runs of jobs not in :attr:`inline_jobs` to take; ``None``: ``limit``.
    slot_limit: int | None = None

    @property
    def slots(self) -> int:
        """Most runs of slot-taking jobs to take."""
        return self.limit if self.slot_limit is None else min(self.slot_limit, self.limit)


@dataclass(frozen=True, slots=True)
class ClaimedRun:
    """A run a worker now holds under lease ``fencing_token``."""

    run: RunRow


@dataclass(frozen=True, slots=True)
class CompleteParams:
    """The outcome of one attempt, written only if the lease is still ours."""

    run_id: int
    fencing_token: int
    attempt: int
    status: RunStatus  # SUCCEEDED, RETRYING, FAILED or CANCELLED
    now: datetime
    started_at: datetime
    result: Any = None
    error_code: str | None = None
    error_message: str | None = None
    not_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Filters for listing runs (newest first)."""

    job_name: str | None = None
    status: RunStatus | None = None
    since: datetime | None = None
    schedule_id: int | None = None
    limit: int = 50
    before_id: int | None = None
    until: datetime | None = None
    """Scheduled before this instant (``since`` is inclusive, ``until`` exclusive)."""


@dataclass(frozen=True, slots=True)
class AttemptRow:
    """One try of a run (table ``job_executions``)."""

    id: int
    job_id: int
    job_name: str
    attempt: int
    node: str
    started_at: datetime
    completed_at: datetime | None
    status: str
    error_code: str | None
    error_message: str | None
    execution_time_ms: int | None


@dataclass(frozen=True, slots=True)
class LeaseRenewal:
    """What a heartbeat learned about the leases it extended."""

    cancel: frozenset[int] = frozenset()
    """Runs still this node's whose cancellation an operator asked for."""
    lost: frozenset[int] = frozenset()
    """Runs no longer this node's (reaped, taken over, ended): their job must stop."""


@dataclass(frozen=True, slots=True)
class NodeRow:
    """A process running engine services."""

    name: str
    hostname: str
    pid: int
    version: str
    roles: str
    state: str
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewAlert:
    """An alert to raise; an open alert with the same ``dedupe_key`` is counted again instead."""

    dedupe_key: str
    rule: str
    severity: str
    title: str
    now: datetime
    details: dict[str, Any] = field(default_factory=dict)
    run_id: int | None = None
    job_name: str | None = None


@dataclass(frozen=True, slots=True)
class AlertRow:
    """A persisted alert (open → acked → resolved)."""

    id: int
    dedupe_key: str
    rule: str
    severity: str
    status: str
    title: str
    details: dict[str, Any]
    run_id: int | None
    job_name: str | None
    occurrences: int
    first_raised_at: datetime
    last_raised_at: datetime
    acked_at: datetime | None
    acked_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None


class EffectsTransaction(Protocol):
    """The database transaction a job writes its effects in; the run completes in it too."""

    @property
    def connection(self) -> Any:
        """The SQLAlchemy ``Connection`` (in a transaction) for the job's own statements."""
        ...

    @property
    def opened(self) -> bool:
        """Whether the job has used :attr:`connection` (the transaction is open)."""
        ...


class Store(Protocol):
    """What the engine needs from a database. See :class:`duly.engine.store.sql.SqlStore`."""

    dialect: str

    # schedules
    def schedule_upsert(
        self,
        new: NewSchedule,
        now: datetime,
        next_fire_at: Callable[[NewSchedule], datetime | None],
    ) -> ScheduleRow: ...
    def schedule_get(self, name: str) -> ScheduleRow | None: ...
    def schedule_list(self) -> list[ScheduleRow]: ...
    def schedule_set_paused(
        self, name: str, paused: bool, now: datetime, next_fire_at: datetime | None
    ) -> ScheduleRow: ...
    def schedule_delete(self, name: str, now: datetime) -> bool: ...
    def schedule_fire_due(
        self, now: datetime, limit: int, planner: FirePlanner
    ) -> list[FiredSchedule]: ...
    def schedule_next_due(self) -> datetime | None: ...
    def schedule_overdue(self, due_before: datetime, limit: int) -> list[ScheduleRow]: ...

    # runs
    def run_enqueue(self, new: NewRun, now: datetime) -> tuple[RunRow, bool]: ...
    def run_claim(self, params: ClaimParams) -> list[ClaimedRun]: ...
    def run_complete(
        self, params: CompleteParams, effects: EffectsTransaction | None = None
    ) -> RunRow: ...
    def run_complete_many(self, batch: Sequence[CompleteParams]) -> list[bool]: ...
    def run_complete_batch(
        self, batch: Sequence[CompleteParams], effects: EffectsTransaction
    ) -> list[bool]: ...
    def run_next_claimable_at(self, queues: Sequence[str]) -> datetime | None: ...
    def run_next_claimable_for(
        self, queues: Sequence[str], jobs: Collection[str]
    ) -> tuple[datetime | None, datetime | None]: ...
    def run_oldest_due(self, now: datetime) -> datetime | None: ...
    def run_get(self, run_id: int) -> RunRow | None: ...
    def run_list(self, flt: RunFilter) -> list[RunRow]: ...
    def run_attempts(self, run_id: int) -> list[AttemptRow]: ...
    def run_retry(self, run_id: int, now: datetime) -> RunRow: ...
    def run_cancel(self, run_id: int, now: datetime) -> RunRow: ...
    def run_progress(
        self,
        run_id: int,
        fencing_token: int,
        done: int,
        total: int | None,
        now: datetime,
        effects: EffectsTransaction | None = None,
    ) -> bool: ...
    def run_reap_expired(
        self, now: datetime, limit: int, decide: Callable[[RunRow], tuple[RunStatus, datetime]]
    ) -> list[RunRow]: ...
    def run_mark_late_starts(self, started_before: datetime, limit: int) -> list[RunRow]: ...
    def run_mark_window_overruns(self, now: datetime, limit: int) -> list[RunRow]: ...
    def run_counts(self) -> dict[str, int]: ...

    # leases and nodes
    def lease_extend(
        self, node: str, leases: Mapping[int, int], expires_at: datetime, now: datetime
    ) -> LeaseRenewal: ...
    def lease_held(self, node: str, run_id: int, fencing_token: int, now: datetime) -> bool: ...
    def node_register(self, row: NodeRow) -> None: ...
    def node_heartbeat(self, name: str, now: datetime) -> None: ...
    def node_stop(self, name: str, now: datetime) -> None: ...
    def node_list(self) -> list[NodeRow]: ...

    # alerts and retention
    def alert_raise(self, alert: NewAlert) -> tuple[AlertRow, bool]: ...
    def alert_get(self, alert_id: int) -> AlertRow | None: ...
    def alert_list(
        self, status: str | None = None, limit: int = 100, before_id: int | None = None
    ) -> list[AlertRow]: ...
    def alert_set_status(
        self, alert_id: int, status: str, actor: str, now: datetime
    ) -> AlertRow: ...
    def execution_prune(self, before: datetime, batch: int = 5000, *, now: datetime) -> int: ...

    def effects_begin(self) -> AbstractContextManager[EffectsTransaction]: ...
    def subscribe(self, callback: Callable[[str], None]) -> None: ...
    def dispose(self) -> None: ...


def iter_chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """``items`` in slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
