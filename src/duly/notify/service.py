"""The notification loops, in the engine's :class:`~duly.engine.services.base.Service` style.

Each loop runs a step (relay a batch, send a batch, …) until it has nothing more to do: a
blocking step on the node's threads, an ``async`` one (the sender's) on the event loop, then sleeps until its interval passes, its next item is
due, or something wakes it (a loop that queued deliveries wakes the sender).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

import structlog

from duly.engine.services.base import Env, Service

__all__ = ["LoopService", "NotifyRunner"]

log = structlog.get_logger("duly.notify")


class LoopService(Service):
    """Runs ``step`` until it returns less than ``batch``, then sleeps.

    :param step: a blocking function (run on the node's threads) or a coroutine function.
    :param next_due: when the next item is due (the sleep ends then, if sooner).
    :param wakes: loops to wake when a step did something.
    """

    def __init__(
        self,
        env: Env,
        name: str,
        step: Callable[[], int] | Callable[[], Awaitable[int]],
        *,
        interval: float,
        batch: int = 1,
        next_due: Callable[[], datetime | None] | None = None,
        wakes: Sequence[Service] = (),
    ) -> None:
        self.name = name
        super().__init__(env)
        self.step = step
        self.interval = interval
        self.batch = batch
        self.next_due = next_due
        self.wakes = list(wakes)
        self.done = 0

    async def run(self) -> None:
        """Loop until stopped."""
        clock = self.env.clock
        while not self.stopping.is_set():
            self.wakeup.clear()
            self._begin_pass()
            while not self.stopping.is_set():
                if inspect.iscoroutinefunction(self.step):
                    n = await self.step()
                else:
                    n = await self.env.db(self.step)
                self.done += n
                if n:
                    for other in self.wakes:
                        other.wakeup.set()
                if n < self.batch:
                    break
            self._mark_pass()
            deadline = clock.now() + timedelta(seconds=self.interval)
            if self.next_due is not None:
                due = await self.env.db(self.next_due)
                if due is not None and due < deadline:
                    deadline = due
            if deadline > clock.now():
                await clock.sleep_until(deadline, self.wakeup)


class NotifyRunner:
    """Starts and stops the notification loops (outside the engine's node)."""

    def __init__(self, env: Env, services: Sequence[Service]) -> None:
        self.env = env
        self.services = list(services)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start every loop on the running event loop."""
        self.env.loop = asyncio.get_running_loop()
        self._tasks = [
            asyncio.create_task(self._guard(s), name=f"duly-{s.name}") for s in self.services
        ]
        log.info("notify.started", loops=[s.name for s in self.services])

    async def _guard(self, service: Service) -> None:
        while not service.stopping.is_set():
            try:
                await service.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("service.crashed", service=service.name)
                retry_at = self.env.clock.now() + timedelta(seconds=1)
                await self.env.clock.sleep_until(retry_at, wake=service.stopping)

    async def stop(self) -> None:
        """Ask every loop to finish its pass, and wait."""
        for service in self.services:
            service.stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await asyncio.to_thread(self.env.close)
        log.info("notify.stopped")
