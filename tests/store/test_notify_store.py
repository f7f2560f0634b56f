"""Notifications end to end on SQLite and PostgreSQL: outbox → relay → deliveries → real
SMTP and HTTP receivers; alerts; crash between send and mark; retries."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from conftest import Mailbox, Receiver
from duly.banking.customers import Customers, NewCustomer
from duly.banking.schema import customers
from duly.clock import ManualClock
from duly.config import NotifySettings
from duly.engine.alerts import StoreAlertSink
from duly.engine.store.base import NewAlert
from duly.engine.store.sql import SqlStore
from duly.notify.deliveries import DeliveryRow, list_deliveries
from duly.operations.notifications.wiring import Notifications, build_notifications
from duly.operations.outbox import emit, outbox


def settings(receiver: Receiver, smtp: Mailbox, **over: Any) -> NotifySettings:
    data: dict[str, Any] = {
        "email": {"host": smtp.host, "port": smtp.port, "starttls": False,
                  "sender": "Bank <noreply@bank.test>"},
        "sms": {"url": receiver.at("/sms"), "auth_token": "sms-secret"},
        "push": {"url": receiver.at("/push"), "auth_token": "push-secret"},
        "webhooks": [{"name": "ops-slack", "url": receiver.at("/slack"), "format": "slack"},
                     {"name": "ops-json", "url": receiver.at("/ops")}],
        "routing": {
            "critical": [{"channel": "webhook", "to": ["ops-slack"]},
                         {"channel": "email", "to": ["oncall@bank.test"]}],
            "high": [{"channel": "webhook", "to": ["ops-json"]}],
            "medium": [{"channel": "log"}],
            "low": [],
            "repeat_minutes": 30,
        },
        "delivery": {"backoff_seconds": [10, 60], "max_attempts": 3, "concurrency": 4,
                     "lease_seconds": 60},
    }  # fmt: skip
    data.update(over)
    return NotifySettings(**data)


@pytest.fixture
def ann(store: SqlStore, clock: ManualClock) -> int:
    people = Customers(store.engine, clock)
    row = people.add(
        NewCustomer(
            "ann",
            timezone="Europe/London",
            locale="en-GB",
            email="ann@example.com",
            phone="+447700900123",
            notification_prefs={"channels": ["email", "sms", "push"], "push_token": "dev-ann-1"},
        )
    )
    return row.id


@pytest.fixture
def notify(
    store: SqlStore, clock: ManualClock, receiver: Receiver, smtp_server: Mailbox
) -> Iterator[Notifications]:
    parts = build_notifications(settings(receiver, smtp_server), store, clock)
    yield parts
    parts.close()


def failed_payment(store: SqlStore, clock: ManualClock, customer_id: int, ref: int = 7) -> None:
    """The event the executor writes after a final failure (execution._notify_failure)."""
    with store.engine.begin() as conn:
        emit(
            conn,
            event_type="customer.notification",
            aggregate="transfer",
            aggregate_id=ref,
            dedupe_key=f"notify:transfer:{ref}:failed",
            payload={
                "template": "payment_failed",
                "customer_id": customer_id,
                "reference": f"st-{ref}",
                "amount": "125.50",
                "currency": "GBP",
                "memo": "rent",
                "scheduled_for": "2026-03-09T10:00:00+00:00",
                "attempts": 3,
                "reason_code": "INSUFFICIENT_FUNDS",
                "reason_class": "transient",
                "suggested_action": "Top up the account and retry.",
            },
            now=clock.now(),
        )


def unpublished(store: SqlStore) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
            ).scalar_one()
        )


def test_a_failed_payment_reaches_each_opted_in_channel_once(
    store: SqlStore,
    clock: ManualClock,
    notify: Notifications,
    receiver: Receiver,
    smtp_server: Mailbox,
    ann: int,
) -> None:
    failed_payment(store, clock, ann)
    failed_payment(store, clock, ann)  # the same event again: deduplicated by the outbox
    notify.drain()
    notify.drain()
    (mail,) = smtp_server.to("ann@example.com")
    assert mail["Subject"] == "Your £125.50 payment could not be made"
    body = mail.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "Reason: transient (INSUFFICIENT_FUNDS)" in text and "9 Mar 2026, 10:00:00 GMT" in text
    (sms,) = receiver.on("/sms")
    assert sms.body["to"] == "+447700900123"
    assert sms.body["text"] == "Your £125.50 payment failed (transient). No further retry."
    assert sms.headers["authorization"] == "Bearer sms-secret"
    (push,) = receiver.on("/push")
    assert push.body["token"] == "dev-ann-1"
    rows = list_deliveries(store.engine)
    assert sorted((d.channel, d.status, d.recipient_masked) for d in rows) == [
        ("email", "sent", "a***@example.com"),
        ("push", "sent", "dev-…"),
        ("sms", "sent", "+44********23"),
    ]
    assert all(d.attempts == 1 and d.sent_at == clock.now() for d in rows)
    assert unpublished(store) == 0


class Crash(BaseException):
    """The sender process dies (not an error it could handle)."""


def test_crash_between_send_and_mark_resends_with_the_same_key_once(
    store: SqlStore,
    clock: ManualClock,
    notify: Notifications,
    receiver: Receiver,
    ann: int,
) -> None:
    with store.engine.begin() as conn:  # push only
        conn.execute(
            customers.update().values(
                notification_prefs={"channels": ["push"], "push_token": "dev-ann-1"}
            )
        )
    for ref in range(1, 6):
        failed_payment(store, clock, ann, ref)

    def die(delivery: DeliveryRow) -> None:
        raise Crash

    notify.sender.after_send = die
    notify.sender.settings = notify.sender.settings.model_copy(update={"concurrency": 1})
    assert notify.relay.pump() == 5
    with pytest.raises(Crash):
        notify.sender.send_due()
    assert len(receiver.on("/push")) == 1  # sent, but never marked
    notify.sender.after_send = None
    notify.drain()
    assert len(receiver.on("/push")) == 1  # the dead sender's batch is leased, not lost
    clock.advance(timedelta(seconds=61))  # the dead sender's lease runs out
    notify.drain()
    pushes = receiver.on("/push")
    assert len(pushes) == 6  # the batch is sent: one duplicate POST …
    processed = receiver.processed("/push")
    assert len(processed) == 5  # … with the same Idempotency-Key: each event processed once
    assert sorted(processed) == [f"notify:transfer:{i}:failed:push" for i in range(1, 6)]
    rows = list_deliveries(store.engine)
    assert [d.status for d in rows] == ["sent"] * 5
    assert [d.attempts for d in rows] == [2] * 5  # the crashed claim counts
    assert unpublished(store) == 0


def test_transient_failures_back_off_then_permanent_failure_alerts(
    store: SqlStore,
    clock: ManualClock,
    notify: Notifications,
    receiver: Receiver,
    smtp_server: Mailbox,
    ann: int,
) -> None:
    receiver.fail_next += [503, 503]  # SMS fails twice (push is next in line: first 503 is SMS)
    failed_payment(store, clock, ann)
    notify.sender.settings = notify.sender.settings.model_copy(update={"concurrency": 1})
    notify.drain()
    status = {d.channel: (d.status, d.attempts) for d in list_deliveries(store.engine)}
    assert status["email"] == ("sent", 1)
    clock.advance(timedelta(seconds=10))
    notify.drain()
    clock.advance(timedelta(seconds=60))
    notify.drain()
    status = {d.channel: (d.status, d.attempts) for d in list_deliveries(store.engine)}
    assert status["sms"] == ("sent", 2) or status["push"] == ("sent", 2)
    assert len(receiver.processed("/sms")) == 1 and len(receiver.processed("/push")) == 1

    receiver.fail_next += [400]
    failed_payment(store, clock, ann, ref=8)
    notify.drain()
    failed = [d for d in list_deliveries(store.engine) if d.status == "failed"]
    assert len(failed) == 1 and failed[0].provider_code == "400"
    (alert,) = store.alert_list()
    assert alert.rule == "delivery.failed" and alert.severity == "high"
    assert alert.details["recipient"] in ("+44********23", "dev-…")
    # The alert itself is routed (high → the ops JSON webhook), once.
    notify.drain()
    (ops,) = receiver.on("/ops")
    assert ops.body["data"]["rule"] == "delivery.failed"


def test_alerts_route_by_severity_with_a_dedupe_window(
    store: SqlStore,
    clock: ManualClock,
    notify: Notifications,
    receiver: Receiver,
    smtp_server: Mailbox,
) -> None:
    sink = StoreAlertSink(store)

    def raise_it() -> None:
        sink.raise_alert(NewAlert(dedupe_key="node.lost:n1", rule="node.lost", severity="critical",
                                  title="node n1 stopped heartbeating", now=clock.now(),
                                  details={"node": "n1"}))  # fmt: skip

    raise_it()
    sink.raise_alert(NewAlert(dedupe_key="m", rule="misc", severity="medium", title="meh",
                              now=clock.now()))  # fmt: skip
    notify.drain()
    (slack,) = receiver.on("/slack")
    assert slack.body["text"].startswith("*[CRITICAL] node n1 stopped heartbeating*")
    (mail,) = smtp_server.to("oncall@bank.test")
    assert mail["Subject"] == "[CRITICAL] node n1 stopped heartbeating"
    assert {d.channel for d in list_deliveries(store.engine, source="alert")} == {
        "webhook", "email", "log"
    }  # fmt: skip

    raise_it()  # again within the window: counted, not re-sent
    clock.advance(timedelta(minutes=10))
    notify.drain()
    assert len(receiver.on("/slack")) == 1
    clock.advance(timedelta(minutes=21))  # the window has passed and it was raised again
    notify.drain()
    assert len(receiver.on("/slack")) == 2
    clock.advance(timedelta(minutes=31))  # not raised again since: quiet
    notify.drain()
    assert len(receiver.on("/slack")) == 2
    (critical,) = [a for a in store.alert_list() if a.severity == "critical"]
    store.alert_set_status(critical.id, "acked", "ops", clock.now())
    raise_it()
    clock.advance(timedelta(hours=2))
    notify.drain()
    assert len(receiver.on("/slack")) == 2  # acknowledged: no more pages


def test_erased_customer_gets_nothing_more(
    store: SqlStore, clock: ManualClock, notify: Notifications, receiver: Receiver, ann: int
) -> None:
    failed_payment(store, clock, ann)
    notify.relay.pump()
    Customers(store.engine, clock).erase_pii(ann)
    notify.drain()
    rows = list_deliveries(store.engine)
    by_channel = {d.channel: (d.status, d.provider_code) for d in rows}
    assert by_channel["email"] == ("failed", "NO_RECIPIENT")
    assert by_channel["sms"] == ("failed", "NO_RECIPIENT")
    assert receiver.on("/sms") == []
    assert store.alert_list() == []  # not an operations problem


def test_now_is_utc(clock: ManualClock) -> None:
    assert clock.now().tzinfo is UTC or clock.now().utcoffset() == timedelta(0)
    assert clock.now() == datetime(2026, 3, 2, tzinfo=UTC)
