"""Helpers for testing code built on duly: a node on a manual clock, driven step by step.

Usage::

    clock = ManualClock(datetime(2026, 3, 2, tzinfo=UTC))
    async with EngineHarness(store, registry, clock) as h:
        h.client.upsert_schedule(NewSchedule(name="n", job_name="nightly", spec="daily:22:00"))
        await h.advance(timedelta(days=7))          # a week, in well under a second
        assert len(h.store.run_list(RunFilter(status=RunStatus.SUCCEEDED))) == 7

:meth:`EngineHarness.advance` moves the clock from one due instant to the next (schedule
fires, retry times, job timers), letting the node finish its work at each before going on.
The waiting here is for the node's threads, in real time, never for engine time.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING

from duly.clock import ManualClock, WaitTrackingClock
from duly.engine.alerts import AlertSink
from duly.engine.client import EngineClient
from duly.engine.node import Node
from duly.engine.options import EngineOptions
from duly.engine.registry import JobRegistry
from duly.engine.services.base import Service
from duly.engine.states import RunStatus
from duly.engine.store.base import RunFilter
from duly.engine.store.sql import SqlStore

if TYPE_CHECKING:
    from duly.engine.services.worker import _InFlight

__all__ = ["EngineHarness", "ManualClock", "test_options"]

#: Real seconds a settle may take before the harness gives up (a stuck job).
SETTLE_TIMEOUT = 30.0


def test_options(**overrides: object) -> EngineOptions:
    """Options for a node under a manual clock: long idle sleeps so time moves only by events."""
    base = EngineOptions(
        node_name="test-node",
        concurrency=8,
        heartbeat_seconds=10,
        lease_seconds=30,
        max_idle_seconds=3600,
        misfire_grace_seconds=60,
        reaper_interval_seconds=15,
        watchdog_interval_seconds=30,
        shutdown_grace_seconds=5,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


test_options.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


class EngineHarness:
    """A :class:`Node` on a :class:`ManualClock`, with stepping and settling."""

    def __init__(
        self,
        store: SqlStore,
        registry: JobRegistry,
        clock: ManualClock,
        options: EngineOptions | None = None,
        *,
        alerts: AlertSink | None = None,
        roles: tuple[str, ...] = ("scheduler", "worker"),
        nodes: int = 1,
    ) -> None:
        self.store = store
        self.clock = clock
        self.registry = registry
        opts = options or test_options()
        self.nodes = [
            Node(
                store,
                registry,
                clock,
                replace(opts, node_name=f"{opts.node_name}-{i}") if nodes > 1 else opts,
                alerts=alerts,
                roles=roles,
            )
            for i in range(nodes)
        ]
        self.node = self.nodes[0]
        self.client = EngineClient(store, registry, clock)

    async def __aenter__(self) -> EngineHarness:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start every node and let them settle."""
        for node in self.nodes:
            await node.start()
        await self.settle()

    async def stop(self) -> None:
        """Stop every node (gracefully).

        A job still waiting on the manual clock would hold the worker's drain forever, so
        while one waits the clock is moved past the nodes' grace. Otherwise the clock moves
        only after a long real wait: moving it for a run that is merely slow to finish (a
        loaded machine) would expire that run's lease.
        """
        stopping = asyncio.ensure_future(asyncio.gather(*(node.stop() for node in self.nodes)))
        grace = timedelta(seconds=self.node.options.shutdown_grace_seconds + 1)
        rounds = 0
        while not stopping.done():
            await asyncio.wait({stopping}, timeout=0.5)
            rounds += 1
            if not stopping.done() and (self._waiting_on_clock() or rounds % 20 == 0):
                self.clock.advance(grace)
        stopping.result()

    def _waiting_on_clock(self) -> bool:
        """Whether an in-flight job sleeps on the manual clock (only moving it ends that)."""
        return any(
            isinstance(flight.ctx.clock, WaitTrackingClock) and flight.ctx.clock.waiting
            for node in self.nodes
            if node.worker is not None
            for flight in [*node.worker.in_flight.values(), *node.worker.handing_back.values()]
        )

    async def settle(self) -> None:
        """Wait until the node has nothing left to do at the current instant.

        Rounds of "wake every loop, wait for each to finish a pass" repeat until a round in
        which the scheduler fired nothing, the worker claimed nothing and no run is in flight.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_TIMEOUT
        while True:
            before = self._started()
            completed = self._completed()
            for node in self.nodes:
                for service in node.services:
                    service.wakeup.set()
            while any(now <= then for now, then in zip(self._passes(), before, strict=True)):
                if loop.time() > deadline:
                    raise TimeoutError("an engine loop did not complete a pass")
                await asyncio.sleep(0.001)
            workers = [n.worker for n in self.nodes if n.worker is not None]
            schedulers = [n.scheduler for n in self.nodes if n.scheduler is not None]
            # A job waiting on the manual clock needs the clock moved, not more waiting.
            in_flight = [
                f.task for w in workers for f in w.in_flight.values() if not _waits_on_clock(f)
            ]
            if in_flight:
                await asyncio.wait(in_flight, timeout=0.05)
            elif not all(w.heartbeat_idle for w in workers):
                await asyncio.sleep(0.001)  # a heartbeat is being written
            elif (
                all(w.last_claimed == 0 for w in workers)
                and all(s.last_fired == 0 for s in schedulers)
                # a run that finished during the round may have released the next one
                and self._completed() == completed
            ):
                return
            if loop.time() > deadline:
                raise TimeoutError("the engine did not settle (a job waiting on something?)")

    def _completed(self) -> int:
        return sum(n.worker.completed for n in self.nodes if n.worker is not None)

    def _loops(self) -> list[Service]:
        """The loops that work in passes (not the notifier, which only relays)."""
        return [s for n in self.nodes for s in n.services if not s.cancel_on_stop]

    def _started(self) -> tuple[int, ...]:
        return tuple(s.passes_started for s in self._loops())

    def _passes(self) -> tuple[int, ...]:
        return tuple(s.passes for s in self._loops())

    def next_instant(self) -> datetime | None:
        """The next instant something is due: a fire, a retry, or a job's timer."""
        candidates = [
            self.store.schedule_next_due() if self.node.scheduler else None,
            self.store.run_next_claimable_at(self.node.options.queues)
            if self.node.worker
            else None,
        ]
        # While runs are active, every timer matters (heartbeats, timeouts, the reaper);
        # otherwise stepping through idle loops' timers would only slow long simulations.
        if any(n.worker is not None and n.worker.in_flight for n in self.nodes) or (
            self.store.run_list(RunFilter(status=RunStatus.RUNNING, limit=1))
        ):
            candidates.append(self.clock.next_deadline())
        now = self.clock.now()
        future = [c for c in candidates if c is not None and c > now]
        return min(future, default=None)

    async def advance(self, delta: timedelta) -> None:
        """Move the clock ``delta`` forward, stopping at each due instant on the way."""
        await self.advance_to(self.clock.now() + delta)

    async def advance_to(self, until: datetime) -> None:
        """Move the clock to ``until``, stopping at each due instant on the way."""
        await self.settle()  # what is due now (a trigger just made) runs at its own time
        while True:
            step = await asyncio.to_thread(self.next_instant)
            if step is None or step > until:
                break
            self.clock.set(step)
            await self.settle()
        if self.clock.now() < until:
            self.clock.set(until)
        await self.settle()


def _waits_on_clock(flight: _InFlight) -> bool:
    """Whether an attempt waits for the manual clock, itself or through the earlier attempt
    of its run that it waits for."""
    pending = [e for e in flight.earlier if not e.task.done()]
    if pending:
        return all(_waits_on_clock(e) for e in pending)
    return isinstance(flight.ctx.clock, WaitTrackingClock) and flight.ctx.clock.waiting
