"""Helpers for tests that run a node on the real clock: fast engine options and waiting.

A node on the system clock with short leases and loops (seconds, not minutes), for tests
that cut databases, freeze processes or hold locks, where the manual clock cannot stand in.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from duly.clock import SystemClock
from duly.engine.options import EngineOptions
from duly.engine.states import FINAL
from duly.engine.store.base import RunRow
from duly.engine.store.sql import SqlStore

__all__ = ["CLOCK", "fast_options", "final", "is_final", "until"]

CLOCK = SystemClock()


def fast_options(**overrides: Any) -> EngineOptions:
    """Engine options for a node named ``n1`` with a 3 s lease and sub-second loops."""
    base: dict[str, Any] = {
        "node_name": "n1",
        "concurrency": 4,
        "lease_seconds": 3,
        "heartbeat_seconds": 1,
        "max_idle_seconds": 0.2,
        "reaper_interval_seconds": 0.5,
        "shutdown_grace_seconds": 3,
    }
    return EngineOptions(**(base | overrides))


async def until(check: Callable[[], bool], seconds: float, what: str) -> None:
    """Wait (real time) until ``check()`` holds; fail the test after ``seconds``."""
    deadline = CLOCK.now() + timedelta(seconds=seconds)
    while not check():
        if CLOCK.now() > deadline:
            pytest.fail(f"timed out after {seconds} s waiting for {what}")
        await CLOCK.sleep(0.05)


def final(store: SqlStore, run: RunRow) -> RunRow:
    """The run's row as it is now."""
    row = store.run_get(run.id)
    assert row is not None
    return row


def is_final(store: SqlStore, *runs: RunRow) -> Callable[[], bool]:
    """A check for :func:`until`: every one of ``runs`` has reached a final state."""
    return lambda: all(final(store, r).status in FINAL for r in runs)
