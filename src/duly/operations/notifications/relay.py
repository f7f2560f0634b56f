"""The outbox relay: turns outbox events into deliveries and reminder plans.

The relay reads unpublished outbox rows in id order and, for each, on **one** transaction:
queues its deliveries (dedupe key ``<event dedupe key>:<channel>``), re-plans reminders,
and marks the row published. So an event is fanned out exactly once, and a crash before the
commit only means the batch is read again. Sending is the delivery sender's job
(:mod:`duly.notify.sender`): at-least-once, with the delivery's key as idempotency key.

Events handled:

* ``customer.notification`` — the payload names a ``template`` and a ``customer_id``;
  the other fields are the template's context. Sent on every channel the customer opted
  in to. The executor writes one per final payment failure (``payment_failed``); the
  balance check writes ``balance_below_minimum`` (``threshold_minor``, ``currency``,
  ``business_date``).
* ``recurring_payment.paused`` — the customer is told (``payment_paused``); reminders of
  the payment are cancelled. ``recurring_payment.*`` re-plans the payment's reminders.
* ``transfer.scheduled`` / ``transfer.rescheduled`` — plans the new version's reminders
  (cancelling the old plan); a reschedule that moves the execution instant sends one
  ``date_changed`` notice. ``transfer.cancelled`` cancels its reminders.
* ``occurrence.cancelled`` / ``occurrence.skipped`` cancel that occurrence's reminders.

An event whose handling fails is still marked published after an ``outbox.event_failed``
alert (so one bad row cannot stop the rest); the alert names it for a manual retry.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, select

from duly.clock import Clock
from duly.engine.alerts import AlertSink
from duly.engine.store.base import NewAlert
from duly.notify.deliveries import NewDelivery, enqueue
from duly.notify.recipients import customer_contact, customer_targets
from duly.operations.outbox import OutboxEvent, mark_published, unpublished
from duly.operations.recurring.models import recurring_occurrences, recurring_payments
from duly.operations.reminders.service import ReminderPlanner
from duly.operations.transfers.models import scheduled_transfers

__all__ = ["OutboxRelay"]

log = structlog.get_logger("duly.relay")


class OutboxRelay:
    """Fans outbox events out to deliveries and reminder plans."""

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        *,
        available: Iterable[str],
        planner: ReminderPlanner | None = None,
        alerts: AlertSink | None = None,
        batch: int = 200,
    ) -> None:
        self.engine, self.clock = engine, clock
        self.available = set(available)
        self.planner = planner
        self.alerts = alerts
        self.batch = batch

    def pump(self) -> int:
        """Handle one batch of unpublished events; returns how many were read.

        Consecutive ``transfer.scheduled`` events are planned together
        (:meth:`ReminderPlanner.plan_transfers`: a few multi-row statements); if that
        fails, each is handled on its own as the others are.
        """
        now = self.clock.now()
        failed: list[tuple[OutboxEvent, str]] = []
        with self.engine.begin() as conn:
            events = unpublished(conn, self.batch)
            i = 0
            while i < len(events):
                run = [events[i]]
                if self.planner is not None and events[i].event_type == "transfer.scheduled":
                    while (i + len(run) < len(events)
                           and events[i + len(run)].event_type == "transfer.scheduled"):  # fmt: skip
                        run.append(events[i + len(run)])
                if len(run) > 1 and self._plan_together(conn, run):
                    i += len(run)
                    continue
                for event in run:
                    try:
                        with conn.begin_nested():
                            self._handle(conn, event, now)
                    except Exception as exc:
                        log.exception(
                            "outbox.event_failed", event_id=event.id, type=event.event_type
                        )
                        failed.append((event, type(exc).__name__))
                i += len(run)
            mark_published(conn, [e.id for e in events], now)
        for event, error in failed:
            self._alert(event, error, now)
        return len(events)

    def _plan_together(self, conn: Connection, run: list[OutboxEvent]) -> bool:
        """Plan a run of ``transfer.scheduled`` events at once; ``False`` if that failed."""
        assert self.planner is not None
        try:
            with conn.begin_nested():
                self.planner.plan_transfers(
                    conn, [(int(e.aggregate_id), e.created_at) for e in run]
                )
        except Exception:
            log.warning("outbox.bulk_plan_failed", events=len(run), exc_info=True)
            return False
        return True

    def _alert(self, event: OutboxEvent, error: str, now: datetime) -> None:
        if self.alerts is None:
            return
        self.alerts.raise_alert(
            NewAlert(
                dedupe_key=f"outbox.event_failed:{event.event_type}",
                rule="outbox.event_failed",
                severity="high",
                title=f"outbox event {event.id} ({event.event_type}) could not be handled",
                now=now,
                details={"event_id": event.id, "type": event.event_type, "error": error},
            )
        )

    # -- handlers -------------------------------------------------------------------

    def _handle(self, conn: Connection, event: OutboxEvent, now: datetime) -> None:
        kind = event.event_type
        payload = event.payload
        if kind == "customer.notification":
            template = str(payload.get("template") or "")
            customer_id = payload.get("customer_id")
            context = {k: v for k, v in payload.items() if k not in ("template", "customer_id")}
            self.notify(conn, event, customer_id, template, context, now)
        elif kind.startswith("recurring_payment."):
            payment_id = int(event.aggregate_id)
            if kind == "recurring_payment.paused":
                self._payment_paused(conn, event, payment_id, now)
            if self.planner is not None:
                self.planner.plan_payment(conn, payment_id, event.created_at)
        elif kind in ("transfer.scheduled", "transfer.rescheduled", "transfer.cancelled"):
            transfer_id = int(event.aggregate_id)
            if self.planner is not None:
                self.planner.plan_transfer(conn, transfer_id, event.created_at)
            if kind == "transfer.rescheduled":
                self._date_changed(conn, event, transfer_id, now)
        elif kind in ("occurrence.cancelled", "occurrence.skipped") and self.planner is not None:
            key = conn.execute(
                select(recurring_occurrences.c.transfer_key).where(
                    recurring_occurrences.c.id == int(event.aggregate_id)
                )
            ).scalar()
            if key is not None:
                self.planner.cancel(conn, key, now, f"occurrence {kind.split('.')[1]}")

    def notify(
        self,
        conn: Connection,
        event: OutboxEvent,
        customer_id: Any,
        template: str,
        context: dict[str, Any],
        now: datetime,
        *,
        suffix: str = "",
    ) -> int:
        """Queue ``template`` for the customer on each opted-in channel; returns how many."""
        if customer_id is None or not template:
            return 0
        contact = customer_contact(conn, int(customer_id))
        if contact is None:
            return 0
        queued = 0
        for target in customer_targets(contact, self.available):
            created = enqueue(
                conn,
                NewDelivery(
                    dedupe_key=f"{event.dedupe_key}{suffix}:{target.channel}",
                    source="outbox",
                    source_ref=str(event.id),
                    channel=target.channel,
                    recipient_ref=target.recipient_ref,
                    recipient_masked=target.recipient_masked,
                    template=template,
                    context=context,
                ),
                now,
            )
            queued += created is not None
        return queued

    def _payment_paused(
        self, conn: Connection, event: OutboxEvent, payment_id: int, now: datetime
    ) -> None:
        p = recurring_payments
        row = conn.execute(select(p).where(p.c.id == payment_id)).one_or_none()
        if row is None:
            return
        context = {
            "payment_id": payment_id,
            "amount_minor": int(row.amount_minor),
            "currency": row.currency,
            "to_account": row.to_account,
            "reason": event.payload.get("reason"),
        }
        self.notify(conn, event, row.customer_id, "payment_paused", context, now)

    def _date_changed(
        self, conn: Connection, event: OutboxEvent, transfer_id: int, now: datetime
    ) -> None:
        before = event.payload.get("previous_execute_at")
        after = event.payload.get("execute_at")
        if not before or not after or before == after:
            return
        t = scheduled_transfers
        row = conn.execute(select(t).where(t.c.id == transfer_id)).one_or_none()
        if row is None or row.status != "scheduled":
            return
        context = {
            "amount_minor": int(row.amount_minor),
            "currency": row.currency,
            "to_account": row.to_account,
            "previous_execute_at": before,
            "execute_at": after,
        }
        self.notify(
            conn, event, row.customer_id, "date_changed", context, now, suffix=":date_changed"
        )
