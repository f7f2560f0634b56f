"""How a node runs: the engine's tunables (filled from ``duly.config`` by the runtime)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from duly.engine.store.base import RunRow

__all__ = ["EngineOptions", "default_node_name"]


def default_node_name() -> str:
    """``hostname:pid``: unique per process on a host."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """Tunables of one node. Durations are in seconds of the engine's clock."""

    node_name: str = field(default_factory=default_node_name)
    queues: tuple[str, ...] = ("default",)
    concurrency: int = 16
    claim_batch: int = 32
    max_batch_size: int | None = None
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 10.0
    max_idle_seconds: float = 5.0
    sqlite_poll_seconds: float = 0.0
    """SQLite: poll the file's change counter this often to notice other processes' runs
    (``0``: not at all; the runtime sets the ``engine.sqlite_poll_seconds`` setting)."""
    reaper_interval_seconds: float = 15.0
    shutdown_grace_seconds: float = 30.0
    misfire_grace_seconds: float = 60.0
    watchdog_start_minutes: float = 5.0
    watchdog_overdue_minutes: float = 5.0
    """Alert on a schedule whose next fire is this far behind (the scheduler is not firing it)."""
    watchdog_interval_seconds: float = 30.0
    node_lost_seconds: float = 120.0
    retention_days: int = 90
    fire_batch: int = 200
    max_fires_per_pass: int = 10_000
    on_run_started: Callable[[RunRow, datetime], None] | None = None
    """Called by the worker as an attempt starts (run, started): e.g. fire-lateness metrics."""
    on_run_finished: Callable[[RunRow, str, datetime], None] | None = None
    """Called by the worker once an outcome is written (run, status, finished)."""
