"""The ``duly worker`` sender step in cycles (SQLite and PostgreSQL, manual clock).

One transaction records a batch's outcomes and claims the next, a transient failure in the
middle of a backlog is retried with backoff and the rest are sent once, and a sender that
keeps up with its queue claims again no sooner than ``min_cycle_seconds`` after its last
claim (each batch carries what came due meanwhile).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from conftest import Receiver
from duly.clock import ManualClock
from duly.config import NotifySettings
from duly.engine.store.sql import SqlStore
from duly.notify.deliveries import NewDelivery, enqueue_many, list_deliveries
from duly.notify.mask import address_ref
from duly.operations.notifications.wiring import Notifications, build_notifications


@pytest.fixture
async def parts(
    store: SqlStore, clock: ManualClock, receiver: Receiver
) -> AsyncIterator[Notifications]:
    settings = NotifySettings(
        webhooks=[{"name": "ops", "url": receiver.at("/ops")}],
        routing={"critical": [{"channel": "webhook", "to": ["ops"]}]},
        delivery={"batch": 2, "concurrency": 4, "backoff_seconds": [30], "max_attempts": 3},
    )
    built = build_notifications(settings, store, clock)
    yield built
    await built.aclose()


def queue(store: SqlStore, clock: ManualClock, offsets_ms: list[int]) -> None:
    now = clock.now()
    news = [
        NewDelivery(dedupe_key=f"cycle-{i}", source="test", channel="webhook",
                    recipient_ref=address_ref("webhook", "ops"), recipient_masked="webhook:ops",
                    template="test", context={"text": f"message {i}"},
                    not_before=now + timedelta(milliseconds=ms))
        for i, ms in enumerate(offsets_ms)
    ]  # fmt: skip
    with store.engine.begin() as conn:
        assert len(enqueue_many(conn, news, now)) == len(news)


async def test_a_backlog_is_sent_in_cycles_each_once_and_a_transient_failure_backs_off(
    store: SqlStore, clock: ManualClock, receiver: Receiver, parts: Notifications
) -> None:
    queue(store, clock, [0] * 5)
    receiver.fail_next.append(503)  # the first request of the first batch
    assert await parts.sender.send_due_async() == 5  # batches of 2, 2, 1 in one step
    rows = {d.dedupe_key: d for d in list_deliveries(store.engine)}
    assert sorted(d.status for d in rows.values()) == ["pending"] + ["sent"] * 4
    (retry,) = [d for d in rows.values() if d.status == "pending"]
    assert retry.next_attempt_at == clock.now() + timedelta(seconds=30)
    assert all(d.attempts == 1 and d.lease_until is None for d in rows.values())
    assert len(receiver.processed("/ops")) == 4
    assert parts.sender.next_due() == clock.now() + timedelta(seconds=30)

    clock.advance(timedelta(seconds=30))
    assert await parts.sender.send_due_async() == 1
    assert {d.status for d in list_deliveries(store.engine)} == {"sent"}
    assert len(receiver.on("/ops")) == 5  # each sent once
    assert len(receiver.processed("/ops")) == 5
    assert parts.sender.next_due() is None


async def test_a_sender_keeping_up_claims_no_sooner_than_its_minimum_cycle(
    store: SqlStore, clock: ManualClock, receiver: Receiver, parts: Notifications
) -> None:
    sender = parts.sender
    assert sender.min_cycle_seconds == 0.1
    queue(store, clock, [0, 10, 20, 150, 300])
    start = clock.now()
    assert await sender.send_due_async() == 1  # only the first is due: a short batch
    # The next is due in 10 ms; the loop comes back 100 ms after the claim.
    assert sender.next_due() == start + timedelta(seconds=0.1)
    clock.advance(timedelta(seconds=0.1))
    assert await sender.send_due_async() == 2  # the two that came due meanwhile, together
    # Due at 150 ms, but the last claim was at 100 ms: back at 200 ms.
    assert sender.next_due() == start + timedelta(milliseconds=200)
    clock.advance(timedelta(milliseconds=100))
    assert await sender.send_due_async() == 1
    # The last is due at 300 ms, after the minimum cycle: its own time counts.
    assert sender.next_due() == start + timedelta(milliseconds=300)
    clock.advance(timedelta(milliseconds=100))
    assert await sender.send_due_async() == 1
    assert {d.status for d in list_deliveries(store.engine)} == {"sent"}
    assert len(receiver.processed("/ops")) == 5
