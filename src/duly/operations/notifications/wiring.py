"""Wiring of notifications: channels, templates, relay, reminders, alert routing, sender.

:func:`build_notifications` builds the parts from ``notify`` settings;
:meth:`Notifications.runner` gives the loops to run beside a node (``duly worker`` and
``duly serve`` start them).
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass, field
from datetime import timedelta

import httpx

from duly.clock import Clock
from duly.config import NotifySettings
from duly.engine.alerts import AlertSink, StoreAlertSink
from duly.engine.options import EngineOptions
from duly.engine.registry import JobRegistry
from duly.engine.services.base import Env
from duly.engine.store.sql import SqlStore
from duly.notify.ahttp import AsyncHttp
from duly.notify.alerting import AlertDispatcher
from duly.notify.sender import ChannelSet, DeliverySender, ops_directory
from duly.notify.service import LoopService, NotifyRunner
from duly.notify.templates import Templates
from duly.operations.notifications.relay import OutboxRelay
from duly.operations.reminders.guards import reminder_guard, reminder_guards
from duly.operations.reminders.service import ReminderPlanner

__all__ = ["Notifications", "RunningNotifications", "build_notifications", "start_notifications"]

#: Seconds between sweeps that plan recurring occurrences coming within the look-ahead.
SWEEP_SECONDS = 60.0
#: Sender loops per node. More than one lets one loop's requests be in flight while another
#: waits on the database (claims are fenced: they never take the same row); on this 2-core
#: machine two showed no clear gain over one (runs of bench/reminders.py within noise, and
#: more SQLite writers across processes), so one. Run more worker processes instead.
SENDER_LANES = 1


@dataclass
class Notifications:
    """The parts, ready to use directly (tests) or as loops (:meth:`runner`)."""

    settings: NotifySettings
    store: SqlStore
    clock: Clock
    channels: ChannelSet
    relay: OutboxRelay
    planner: ReminderPlanner
    dispatcher: AlertDispatcher
    sender: DeliverySender
    alerts: AlertSink
    http: httpx.Client | None = None
    ahttp: AsyncHttp | None = None
    loops: list[LoopService] = field(default_factory=list)

    def drain(self, rounds: int = 20) -> int:
        """Relay, route and send until nothing is due now (blocking; tests and the CLI)."""
        total = 0
        for _ in range(rounds):
            moved = self.relay.pump() + self.dispatcher.dispatch() + self.sender.send_due()
            total += moved
            if not moved:
                break
        return total

    def runner(self, options: EngineOptions | None = None) -> NotifyRunner:
        """The loops: relay, reminder sweep, alert routing, and :data:`SENDER_LANES` senders."""
        env = Env(
            store=self.store,
            clock=self.clock,
            registry=JobRegistry(),
            options=options or EngineOptions(),
            alerts=self.alerts,
        )
        d = self.settings.delivery
        senders = [
            LoopService(env, f"notify-sender-{lane + 1}", self.sender.send_due_async,
                        interval=d.poll_seconds, batch=d.batch,
                        next_due=self.sender.next_due)
            for lane in range(SENDER_LANES)
        ]  # fmt: skip
        relay = LoopService(env, "outbox-relay", self.relay.pump, interval=d.poll_seconds,
                            batch=self.relay.batch, wakes=senders)  # fmt: skip
        alerts = LoopService(env, "alert-router", self.dispatcher.dispatch,
                             interval=d.poll_seconds, batch=self.dispatcher.batch, wakes=senders)  # fmt: skip
        sweep = LoopService(env, "reminder-sweep", self.planner.sweep, interval=SWEEP_SECONDS,
                            batch=10**9, wakes=senders)  # fmt: skip
        self.loops = [relay, alerts, sweep, *senders]
        return NotifyRunner(env, self.loops)

    def close(self) -> None:
        """Release threads and HTTP connections."""
        self.sender.close()
        if self.http is not None:
            self.http.close()

    async def aclose(self) -> None:
        """:meth:`close`, and the event loop's HTTP connections (call it on the loop the
        loops ran on)."""
        self.close()
        if self.ahttp is not None:
            await self.ahttp.aclose()


def build_notifications(
    settings: NotifySettings,
    store: SqlStore,
    clock: Clock,
    *,
    alerts: AlertSink | None = None,
    channels: ChannelSet | None = None,
    templates: Templates | None = None,
) -> Notifications:
    """Build the notification parts from settings (``channels`` replaces the configured ones)."""
    http = ahttp = None
    if channels is None:
        http = httpx.Client(limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))
        # duly's asyncio client does not go through proxies: where the environment names
        # one (HTTPS_PROXY, …), HTTP channels send with httpx on threads, as before.
        if not urllib.request.getproxies():
            ahttp = AsyncHttp(max_connections=max(64, settings.delivery.concurrency))
        channels = ChannelSet.from_settings(settings, http, ahttp)
    sink = alerts or StoreAlertSink(store)
    ops = ops_directory(settings)
    planner = ReminderPlanner(store.engine, clock, settings.reminders, channels.available)
    relay = OutboxRelay(store.engine, clock, available=channels.available, planner=planner,
                        alerts=sink)  # fmt: skip
    dispatcher = AlertDispatcher(
        store.engine, clock, ops, timedelta(minutes=settings.routing.repeat_minutes)
    )
    sender = DeliverySender(
        store.engine,
        clock,
        channels,
        templates or Templates(default_locale=settings.default_locale),
        ops,
        settings.delivery,
        alerts=sink,
        guards={"reminder": reminder_guard},
        batch_guards={"reminder": reminder_guards},
        default_locale=settings.default_locale,
    )
    return Notifications(settings, store, clock, channels, relay, planner, dispatcher, sender,
                         sink, http, ahttp)  # fmt: skip


class RunningNotifications:
    """Notification loops started beside a node; :meth:`stop` ends them."""

    def __init__(self, parts: Notifications, runner: NotifyRunner) -> None:
        self.parts, self.runner = parts, runner

    async def stop(self) -> None:
        """Stop the loops and release their resources."""
        await self.runner.stop()
        await self.parts.aclose()


async def start_notifications(
    settings: NotifySettings,
    store: SqlStore,
    clock: Clock,
    options: EngineOptions,
    roles: tuple[str, ...],
) -> RunningNotifications | None:
    """Start the notification loops on a node with the ``worker`` role (if enabled)."""
    if not settings.enabled or "worker" not in roles:
        return None
    parts = build_notifications(settings, store, clock)
    runner = parts.runner(options)
    await runner.start()
    return RunningNotifications(parts, runner)
