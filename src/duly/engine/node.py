"""A node: the engine's background loops in one process, started and stopped together."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta

import structlog
from sqlalchemy.exc import DBAPIError

from duly.clock import Clock
from duly.engine.alerts import AlertSink, StoreAlertSink
from duly.engine.notifier import PgNotifier, SqliteWatcher, libpq_dsn
from duly.engine.options import EngineOptions
from duly.engine.registry import JobRegistry
from duly.engine.services.base import Env, Service, backoff_seconds
from duly.engine.services.reaper import ReaperService
from duly.engine.services.scheduler import SchedulerService
from duly.engine.services.watchdog import WatchdogService
from duly.engine.services.worker import WorkerService
from duly.engine.store.base import NodeRow
from duly.engine.store.sql import SqlStore
from duly.version import __version__

__all__ = ["Node"]

log = structlog.get_logger("duly.node")


class Node:
    """Scheduler, worker, reaper and watchdog over one store.

    :param roles: ``scheduler`` (fire schedules; also runs the watchdog) and/or ``worker``
        (claim and run jobs; also runs the reaper).
    """

    def __init__(
        self,
        store: SqlStore,
        registry: JobRegistry,
        clock: Clock,
        options: EngineOptions | None = None,
        *,
        alerts: AlertSink | None = None,
        roles: Iterable[str] = ("scheduler", "worker"),
        listen: bool = True,
        extra_services: Sequence[Callable[[Env], Service]] = (),
    ) -> None:
        self.options = options or EngineOptions()
        self.env = Env(
            store=store,
            clock=clock,
            registry=registry,
            options=self.options,
            alerts=alerts or StoreAlertSink(store),
        )
        self.roles = tuple(roles)
        self._listen = listen
        self._extra_services = tuple(extra_services)
        self.scheduler: SchedulerService | None = None
        self.worker: WorkerService | None = None
        self.services: list[Service] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False

    async def start(self) -> None:
        """Register the node and start its loops on the running event loop."""
        env = self.env
        env.loop = asyncio.get_running_loop()
        store, now = env.store, env.clock.now()
        await env.db(
            store.node_register,
            NodeRow(
                name=self.options.node_name,
                hostname=socket.gethostname(),
                pid=os.getpid(),
                version=__version__,
                roles=",".join(self.roles),
                state="running",
                started_at=now,
                heartbeat_at=now,
                stopped_at=None,
            ),
        )
        store.subscribe(env.wake)
        if "scheduler" in self.roles:
            self.scheduler = SchedulerService(env)
            self.services += [self.scheduler, WatchdogService(env)]
        if "worker" in self.roles:
            self.worker = WorkerService(env)
            self.services += [self.worker, ReaperService(env)]
        self.services += [make(env) for make in self._extra_services]
        if self._listen and store.is_postgres:
            self.services.append(
                PgNotifier(
                    env, libpq_dsn(str(store.engine.url.render_as_string(hide_password=False)))
                )
            )
        sqlite_file = store.engine.url.database if not store.is_postgres else None
        poll = self.options.sqlite_poll_seconds
        if self._listen and poll > 0 and "worker" in self.roles and sqlite_file not in (
            None, "", ":memory:"
        ):
            self.services.append(SqliteWatcher(env, str(sqlite_file), poll))
        self._tasks = [
            asyncio.create_task(self._guard(s), name=f"duly-{s.name}") for s in self.services
        ]
        self._started = True
        log.info(
            "node.started",
            node=self.options.node_name,
            roles=list(self.roles),
            store=store.dialect,
            concurrency=self.options.concurrency,
            queues=list(self.options.queues),
        )

    async def _guard(self, service: Service) -> None:
        """Keep a loop alive through unexpected errors (a database restart, say)."""
        failures = 0
        while not service.stopping.is_set():
            passes = service.passes
            try:
                await service.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Consecutive failures without a completed pass back off; one pass resets.
                failures = 1 if service.passes != passes else failures + 1
                delay = backoff_seconds(failures)
                if isinstance(exc, DBAPIError | TimeoutError):
                    # The database is away: one line per try, not a traceback a second.
                    log.warning("service.database_unavailable", service=service.name,
                                error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                                if str(exc) else type(exc).__name__,
                                failures=failures, retry_in_s=delay)  # fmt: skip
                else:
                    log.exception("service.crashed", service=service.name, retry_in_s=delay)
                retry_at = self.env.clock.now() + timedelta(seconds=delay)
                await self.env.clock.sleep_until(retry_at, wake=service.stopping)

    def loops_alive(self) -> dict[str, bool]:
        """Each background loop of this node, and whether it is still running."""
        if not self._started:
            return {s.name: False for s in self.services}
        return {s.name: not t.done() for s, t in zip(self.services, self._tasks, strict=True)}

    async def stop(self) -> None:
        """Stop claiming, let in-flight runs finish (or hand them back), record the stop."""
        if not self._started:
            return
        self._started = False
        for service, task in zip(self.services, self._tasks, strict=True):
            service.stop()
            if service.cancel_on_stop:
                task.cancel()
        # The worker drains or hands back its runs within its grace period.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.env.store.unsubscribe(self.env.wake)
        await self.env.db(self.env.store.node_stop, self.options.node_name, self.env.clock.now())
        await asyncio.to_thread(self.env.close)
        log.info("node.stopped", node=self.options.node_name)

    async def run_until(self, stop: asyncio.Event) -> None:
        """Start, wait for ``stop``, stop."""
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()
