"""The operations overview: what the engine is doing now, in figures people watch.

:func:`operations_overview` gathers, from the store's bounded reads
(:mod:`duly.engine.store.overview`): active runs by status, runs of the last 24 hours by
hour and status, fire lateness (p50 and p99 of ``started_at - scheduled_for``) of the
scheduled runs of the last hour, queue depth per job, the nodes, and the next fires.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from duly.engine.store.base import NodeRow, ScheduleRow
from duly.engine.store.overview import HourCount, QueueDepth
from duly.engine.store.sql import SqlStore

__all__ = [
    "HourStatus",
    "Lateness",
    "NodeState",
    "OperationsOverview",
    "operations_overview",
    "percentile",
]

#: How far back the runs-by-hour figures go.
HOURS = 24
#: The period the lateness percentiles are of.
LATENESS_PERIOD = timedelta(hours=1)
#: A node whose heartbeat is older than this is shown as not alive.
ALIVE_WITHIN = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class HourStatus:
    """Runs scheduled in the UTC hour starting at ``hour``, by their status now."""

    hour: datetime
    counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class Lateness:
    """How late scheduled runs started: p50 and p99 in seconds (``None`` with no sample)."""

    samples: int
    p50_seconds: float | None
    p99_seconds: float | None


@dataclass(frozen=True, slots=True)
class NodeState:
    """A node, and whether it heartbeat recently enough to count as alive."""

    node: NodeRow
    alive: bool
    running: int


@dataclass(frozen=True, slots=True)
class OperationsOverview:
    """Everything the operations page shows (alerts apart: they have their own reads)."""

    now: datetime
    active: dict[str, int]
    by_hour: list[HourStatus]
    lateness: Lateness
    queues: list[QueueDepth]
    nodes: list[NodeState]
    upcoming: list[ScheduleRow]


def percentile(values: list[float], p: float) -> float | None:
    """The ``p``-th percentile (0–100, nearest rank) of ``values``; ``None`` if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def _hour(instant: datetime) -> datetime:
    return instant.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _by_hour(counts: list[HourCount], first: datetime) -> list[HourStatus]:
    buckets: dict[datetime, dict[str, int]] = {first + timedelta(hours=i): {}
                                               for i in range(HOURS)}  # fmt: skip
    for c in counts:
        bucket = buckets.get(c.hour)
        if bucket is not None:
            bucket[c.status] = bucket.get(c.status, 0) + c.count
    return [HourStatus(h, c) for h, c in sorted(buckets.items())]


def _lateness(delays: list[float]) -> Lateness:
    return Lateness(len(delays), percentile(delays, 50), percentile(delays, 99))


def _nodes(store: SqlStore, now: datetime) -> list[NodeState]:
    rows = store.node_list()
    running = store.run_running_by_node()
    return [
        NodeState(row, row.state != "stopped" and now - row.heartbeat_at <= ALIVE_WITHIN,
                  running.get(row.name, 0))
        for row in rows
    ]  # fmt: skip


def operations_overview(store: SqlStore, now: datetime, upcoming: int = 20) -> OperationsOverview:
    """The overview at ``now`` (see the module docstring); ``upcoming`` next fires."""
    first = _hour(now) - timedelta(hours=HOURS - 1)
    end = now + timedelta(microseconds=1)  # the runs due this very instant count
    return OperationsOverview(
        now=now,
        active=store.run_active_counts(),
        by_hour=_by_hour(store.run_hour_counts(first, end), first),
        lateness=_lateness(store.run_start_delays(now - LATENESS_PERIOD, end)),
        queues=store.run_queue_depths(now),
        nodes=_nodes(store, now),
        upcoming=store.schedule_upcoming(upcoming),
    )
