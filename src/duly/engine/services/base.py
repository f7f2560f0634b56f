"""What every background loop of a node shares (River's "archetype")."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from duly.clock import Clock
from duly.engine.alerts import AlertSink
from duly.engine.options import EngineOptions
from duly.engine.registry import JobRegistry
from duly.engine.store.sql import SqlStore

__all__ = ["Env", "Service"]

T = TypeVar("T")


@dataclass
class Env:
    """The shared parts: store, clock, jobs, options, alerts, and the node's wake-up events."""

    store: SqlStore
    clock: Clock
    registry: JobRegistry
    options: EngineOptions
    alerts: AlertSink
    loop: asyncio.AbstractEventLoop | None = None
    wakes: dict[str, list[asyncio.Event]] = field(default_factory=dict)

    executor: ThreadPoolExecutor | None = None

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking store call off the event loop, on the node's own threads.

        The node's pool has a thread for each job slot plus a margin for its loops, so
        jobs holding a transaction (SQLite's single writer) cannot starve the heartbeats
        and completions that the default, smaller pool would queue behind them.
        """
        if self.executor is None:
            self.executor = ThreadPoolExecutor(
                max_workers=self.options.concurrency + 8, thread_name_prefix="duly-db"
            )
        call = functools.partial(contextvars.copy_context().run, fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    def close(self) -> None:
        """Release the node's threads (after its loops have stopped)."""
        if self.executor is not None:
            self.executor.shutdown(wait=True)
            self.executor = None

    def wake(self, channel: str) -> None:
        """Wake the services listening on ``channel``; safe from any thread."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        for event in self.wakes.get(channel, []):
            loop.call_soon_threadsafe(event.set)

    def listen(self, channel: str) -> asyncio.Event:
        """An event set whenever ``channel`` has news."""
        event = asyncio.Event()
        self.wakes.setdefault(channel, []).append(event)
        return event


class Service:
    """A background loop with start/stop. Subclasses implement :meth:`run`."""

    name = "service"
    #: Loops that only wait on I/O (no pass to finish) are cancelled by the node on stop.
    cancel_on_stop = False

    def __init__(self, env: Env) -> None:
        self.env = env
        self.log = structlog.get_logger(f"duly.{self.name}").bind(node=env.options.node_name)
        self.stopping = asyncio.Event()
        self.wakeup = asyncio.Event()
        #: Set after each pass; tests await it instead of sleeping (River's test signals).
        self.passes = 0
        self.passes_started = 0
        self.pass_done = asyncio.Event()

    async def run(self) -> None:
        """Loop until :meth:`stop` is called."""
        raise NotImplementedError

    def stop(self) -> None:
        """Ask the loop to finish its pass and return."""
        self.stopping.set()
        self.wakeup.set()

    def _begin_pass(self) -> None:
        self.passes_started += 1

    def _mark_pass(self) -> None:
        # ``passes`` is the number of the last pass completed, so a waiter can tell a
        # pass that began after its wake-up from one already under way.
        self.passes = self.passes_started
        self.pass_done.set()


def backoff_seconds(failures: int) -> float:
    """Seconds to wait after ``failures`` consecutive database errors: 0.5, 1, 2, 4, then 5.

    Short enough that a node is back within seconds of a fail-over, long enough that a
    database that is away is not hammered by every loop of every node.
    """
    return float(min(5.0, 0.5 * 2 ** max(0, failures - 1)))
