"""The notification loops on the real clock: a due delivery leaves within a second, an
alert reaches its channel within seconds (the issue's timeliness targets)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from conftest import Receiver
from duly.clock import SystemClock
from duly.config import NotifySettings
from duly.engine.alerts import StoreAlertSink
from duly.engine.store.base import NewAlert
from duly.engine.store.sql import SqlStore
from duly.notify.deliveries import NewDelivery, enqueue
from duly.notify.mask import address_ref
from duly.operations.notifications.wiring import build_notifications


async def wait_for(check: object, limit: float = 5.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if check():  # type: ignore[operator]
            return time.monotonic() - start
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


async def test_due_delivery_and_alert_leave_on_time(store: SqlStore, receiver: Receiver) -> None:
    clock = SystemClock()
    settings = NotifySettings(
        webhooks=[{"name": "ops", "url": receiver.at("/ops")}],
        routing={"critical": [{"channel": "webhook", "to": ["ops"]}]},
        delivery={"poll_seconds": 1.0},
    )
    parts = build_notifications(settings, store, clock)
    runner = parts.runner()
    await runner.start()
    try:
        await asyncio.sleep(0.1)  # idle: every loop asleep
        due = clock.now() + timedelta(seconds=0.3)
        with store.engine.begin() as conn:
            enqueue(conn, NewDelivery(dedupe_key="t-1", source="test", channel="webhook",
                                      recipient_ref=address_ref("webhook", "ops"),
                                      recipient_masked="webhook:ops", template="test",
                                      context={"text": "hello"}, not_before=due), clock.now())  # fmt: skip
        # Nothing wakes the sender: it finds the new row on its next poll (≤ 1 s), then
        # sleeps until it is due.
        await wait_for(lambda: receiver.on("/ops"))
        lateness = (clock.now() - due).total_seconds()
        assert lateness < 1.5, lateness
        StoreAlertSink(store).raise_alert(
            NewAlert(
                dedupe_key="k",
                rule="node.lost",
                severity="critical",
                title="node lost",
                now=clock.now(),
            )
        )
        took = await wait_for(lambda: len(receiver.on("/ops")) == 2)
        assert took < 3.0  # target: within 10 s of the condition
        assert receiver.on("/ops")[1].body["subject"] == "[CRITICAL] node lost"
    finally:
        await runner.stop()
        await parts.aclose()
