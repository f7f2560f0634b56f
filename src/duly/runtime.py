"""Wiring: settings → store, job registry, engine options, system schedules, a running node.

This is the composition root: the CLI (and the API and dashboard beside it) build their
parts here, so every entry point starts the same system. Nothing below imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta

import structlog
from sqlalchemy import Engine

from duly.audit import AuditLog, system_actor
from duly.audit import record as record_audit
from duly.audit.actors import set_actor
from duly.audit.jobs import AUDIT_PRUNE_JOB, audit_registry
from duly.audit.sealer import AuditSealer
from duly.clock import Clock, SystemClock
from duly.config import Settings
from duly.db import current_revision, head_revision, upgrade
from duly.engine.builtin import builtin_registry
from duly.engine.client import EngineClient
from duly.engine.node import Node
from duly.engine.options import EngineOptions, default_node_name
from duly.engine.registry import JobRegistry, default_registry
from duly.engine.store.base import NewSchedule
from duly.engine.store.connect import ConnectOptions
from duly.engine.store.sql import SqlStore, create_db_engine
from duly.metrics import start_metrics_server, with_run_metrics
from duly.operations.balance_check.jobs import balance_check_registry
from duly.operations.balance_check.models import JOB_NAME as BALANCE_CHECK_JOB
from duly.operations.balance_check.planning import balance_check_schedule
from duly.operations.jobs import HISTORY_PRUNE_JOB, operations_registry
from duly.operations.notifications.wiring import start_notifications
from duly.operations.sweep import SWEEP_JOB, sweep_schedule

__all__ = [
    "DatabaseNotReady",
    "System",
    "build_system",
    "connect_options",
    "db_engine",
    "engine_options",
    "open_store",
    "pool_size",
    "run_node",
]

log = structlog.get_logger("duly.runtime")

PRUNE_SCHEDULE = "duly.prune"
AUDIT_PRUNE_SCHEDULE = AUDIT_PRUNE_JOB


class DatabaseNotReady(Exception):
    """The database's schema is not at this version's migration head."""


def open_store(settings: Settings, *, auto_upgrade: bool = False) -> SqlStore:
    """Open the configured database; an empty embedded (SQLite) one is created on the spot.

    :raises DatabaseNotReady: the schema is missing or behind, and may not be upgraded here.
    """
    engine = db_engine(settings)
    current, head = current_revision(engine), head_revision()
    if current != head:
        embedded_and_empty = engine.dialect.name == "sqlite" and current is None
        if auto_upgrade or embedded_and_empty:
            upgrade(engine)
            log.info("db.upgraded", revision=head, previous=current)
        else:
            engine.dispose()
            raise DatabaseNotReady(
                f"the database is at migration {current or 'none'}, this duly needs {head}: "
                "run `duly db upgrade`"
            )
    store = SqlStore(engine)
    if settings.audit.run_events:
        store.audit = record_audit
    return store


def connect_options(settings: Settings) -> ConnectOptions:
    """How connections are opened and bounded, from the ``database`` settings."""
    d = settings.database
    return ConnectOptions(
        connect_timeout=d.connect_timeout_seconds,
        statement_timeout=d.statement_timeout_seconds,
        lock_timeout=d.lock_timeout_seconds,
        idle_in_transaction_timeout=d.idle_in_transaction_timeout_seconds,
        response_timeout=d.response_timeout,
        keepalives_idle=d.keepalives_idle_seconds,
        keepalives_interval=d.keepalives_interval_seconds,
        keepalives_count=d.keepalives_count,
        tcp_user_timeout=d.tcp_user_timeout_seconds,
        pool_timeout=d.pool_timeout_seconds,
        pool_recycle=d.pool_recycle_seconds,
        sqlite_busy_timeout=d.sqlite_busy_timeout_seconds,
    )


def db_engine(settings: Settings) -> Engine:
    """The SQLAlchemy engine of the configured database, bounded by its ``database`` settings."""
    return create_db_engine(settings.database_url, pool_size=pool_size(settings),
                            options=connect_options(settings))  # fmt: skip


#: Connections the node's own loops and jobs keep busy at once, at most, in the common case.
NODE_CONNECTIONS = 10


def pool_size(settings: Settings) -> int:
    """``database.pool_size``, or enough for the node and the API's threads together.

    A pool smaller than the threads that use it makes every connection past it a new one
    (opened, used once, closed: a server process forked per request) or a wait.
    """
    configured = settings.database.pool_size
    return configured if configured is not None else NODE_CONNECTIONS + settings.api.threads


def engine_options(settings: Settings) -> EngineOptions:
    """The node's tunables from the ``engine`` settings."""
    e = settings.engine
    return EngineOptions(
        node_name=settings.node_name or default_node_name(),
        queues=tuple(e.queues),
        concurrency=e.worker_concurrency,
        claim_batch=e.claim_batch,
        max_batch_size=e.max_batch_size,
        lease_seconds=e.lease_seconds,
        heartbeat_seconds=e.heartbeat_seconds,
        max_idle_seconds=e.max_idle_seconds,
        sqlite_poll_seconds=e.sqlite_poll_seconds,
        reaper_interval_seconds=e.reaper_interval_seconds,
        shutdown_grace_seconds=e.shutdown_grace_seconds,
        misfire_grace_seconds=e.misfire_grace_seconds,
        watchdog_start_minutes=e.watchdog_start_minutes,
        watchdog_overdue_minutes=e.watchdog_overdue_minutes,
        retention_days=e.retention_days,
    )


def job_registry(settings: Settings | None = None) -> JobRegistry:
    """Every job this process can run: duly's built-ins and those registered with ``@job``.

    ``daily_balance_check`` is configured by ``settings`` (the defaults without them).
    """
    balance = balance_check_registry(settings.jobs.daily_balance_check if settings else None)
    return (
        builtin_registry.merged(default_registry)
        .merged(audit_registry)
        .merged(operations_registry)
        .merged(balance)
    )


@dataclass
class System:
    """The parts of a running duly, built from settings."""

    settings: Settings
    store: SqlStore
    registry: JobRegistry
    clock: Clock
    options: EngineOptions

    @property
    def audit(self) -> AuditLog:
        """The audit trail (read, verify, export, seal, checkpoint, prune)."""
        return AuditLog(self.store.engine, self.clock, self.settings.audit)

    @property
    def client(self) -> EngineClient:
        """The engine's operations (trigger, schedules, runs)."""
        return EngineClient(self.store, self.registry, self.clock)

    def sync_schedules(self) -> list[str]:
        """Create or update the schedules declared in config and duly's own (retention)."""
        client = self.client
        grace = int(self.settings.engine.misfire_grace_seconds)
        names = []
        wanted = [
            NewSchedule(
                name=PRUNE_SCHEDULE,
                job_name="duly.prune",
                spec="daily:03:00",
                timezone="UTC",
                args={"retention_days": self.settings.engine.retention_days},
                misfire="run_once",
                overlap="skip",
                source="system",
                misfire_grace_seconds=grace,
            ),
            NewSchedule(
                name=AUDIT_PRUNE_SCHEDULE,
                job_name=AUDIT_PRUNE_JOB,
                spec="daily:03:30",
                timezone="UTC",
                args={"retention_days": self.settings.audit.retention_days},
                misfire="run_once",
                overlap="skip",
                source="system",
                misfire_grace_seconds=grace,
            ),
        ]
        wanted += [
            NewSchedule(
                name=s.name,
                job_name=s.job,
                spec=s.spec,
                timezone=s.timezone,
                args=dict(s.args),
                calendar=s.calendar,
                adjust=s.adjust,
                misfire=s.misfire,
                overlap=s.overlap,
                paused=not s.enabled,
                source="config",
                misfire_grace_seconds=grace,
            )
            for s in self.settings.schedules
        ]
        if HISTORY_PRUNE_JOB in self.registry:
            # operation history's retention, half an hour after the attempts' (duly.prune)
            wanted.append(
                NewSchedule(
                    name=HISTORY_PRUNE_JOB,
                    job_name=HISTORY_PRUNE_JOB,
                    spec="daily:03:30",
                    timezone="UTC",
                    args={"retention_days": self.settings.history.retention_days},
                    misfire="run_once",
                    overlap="skip",
                    source="system",
                    misfire_grace_seconds=grace,
                )
            )
        if BALANCE_CHECK_JOB in self.registry:
            wanted.append(balance_check_schedule(self.settings.jobs.daily_balance_check, grace))
        # The sweep enqueues runs for work due within its horizon (recurring occurrences,
        # payment retries), each at its own time, so hourly passes with a two-hour horizon
        # keep every operation on time; `serve --demo` runs it every minute.
        if SWEEP_JOB in self.registry:
            sweep = sweep_schedule("every:1h", horizon=timedelta(hours=2))
            wanted.append(replace(sweep, misfire_grace_seconds=grace))
        for new in wanted:
            client.upsert_schedule(new)
            names.append(new.name)
        return names


def build_system(
    settings: Settings,
    *,
    clock: Clock | None = None,
    registry: JobRegistry | None = None,
    auto_upgrade: bool = False,
) -> System:
    """Open the store and gather jobs and options."""
    return System(
        settings=settings,
        store=open_store(settings, auto_upgrade=auto_upgrade),
        registry=registry or job_registry(settings),
        clock=clock or SystemClock(),
        options=engine_options(settings),
    )


async def run_node(
    system: System,
    roles: tuple[str, ...],
    stop: asyncio.Event | None = None,
    on_node: Callable[[Node], None] | None = None,
) -> None:
    """Run a node until SIGTERM/SIGINT (or ``stop``), then shut down gracefully.

    ``on_node`` is handed the node before it starts (the HTTP API's readiness reads its loops).
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    options = with_run_metrics(system.options)
    audit = system.audit
    audit.signing_key()  # a node that cannot sign checkpoints refuses to start
    node = Node(
        system.store,
        system.registry,
        system.clock,
        options,
        roles=roles,
        extra_services=[lambda env: AuditSealer(env, audit)],
    )
    set_actor(system_actor(options.node_name))
    if on_node is not None:
        on_node(node)

    notify = await start_notifications(
        system.settings.notify, system.store, system.clock, system.options, roles
    )
    metrics = None
    api = system.settings.api
    if api.metrics_port is not None:  # /metrics for Prometheus
        metrics = start_metrics_server(system.store, system.clock, api.metrics_port, api.host)
    try:
        await node.run_until(stop)
    finally:
        if metrics is not None:
            metrics.stop()
        if notify is not None:
            await notify.stop()
