"""Sends due deliveries: guard, address, template, channel, outcome.

For each claimed delivery:

1. **guard**: a check registered for its source (a reminder re-reads its payment) may
   cancel it — so a reminder already queued is not sent for a cancelled payment;
2. **address**: the customer's current address, or the configured operations address;
3. **render** the template in the recipient's locale and timezone;
4. **send** with the delivery's dedupe key as idempotency key;
5. **record**: ``sent``; a transient failure is retried after the configured backoff; a
   permanent one, or the last attempt, makes it ``failed`` and raises an operations alert.

A crash between 4 and 5 leaves the row ``sending``; when its lease expires it is sent
again with the same key (at-least-once; see docs/notifications.md).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy import Connection, Engine

from duly.clock import Clock
from duly.config import DeliverySettings, NotifySettings
from duly.engine.alerts import AlertSink
from duly.engine.store.base import NewAlert
from duly.notify import metrics
from duly.notify.ahttp import AsyncHttp
from duly.notify.channels import (
    Channel,
    ChannelError,
    EmailChannel,
    GatewayChannel,
    LogChannel,
    Message,
    SendResult,
    WebhookChannel,
)
from duly.notify.deliveries import (
    DeliveryRow,
    Outcome,
    claim_on,
    finish_many,
    finish_many_on,
    next_due,
    next_due_on,
)
from duly.notify.recipients import CustomerContact, OpsDirectory, customer_contacts
from duly.notify.templates import ALL_PARTS, CHANNEL_PARTS, TemplateError, Templates

__all__ = ["BatchGuard", "ChannelSet", "DeliverySender", "Guard", "ops_directory"]

log = structlog.get_logger("duly.notify")

#: ``(conn, delivery, now) -> reason to cancel, or None to send``.
Guard = Callable[[Connection, DeliveryRow, datetime], str | None]
#: ``(conn, deliveries, now) -> {delivery id: reason to cancel}`` for a whole batch (one
#: query instead of one per delivery); those not in the answer are sent.
BatchGuard = Callable[[Connection, Sequence[DeliveryRow], datetime], dict[int, str]]


class ChannelSet:
    """The configured channels; webhooks by name."""

    def __init__(
        self,
        channels: dict[str, Channel],
        webhooks: dict[str, tuple[Channel, str]] | None = None,
    ) -> None:
        self.channels = dict(channels)
        self.webhooks = dict(webhooks or {})
        self.channels.setdefault("log", LogChannel())

    @property
    def available(self) -> set[str]:
        """Channel names that can send."""
        return set(self.channels) | ({"webhook"} if self.webhooks else set())

    def send(self, channel: str, address: str, message: Message) -> SendResult:
        """Send ``message`` on ``channel`` to ``address`` (a webhook's name for webhooks)."""
        if channel == "webhook":
            hook = self.webhooks.get(address)
            if hook is None:
                raise ChannelError(f"no webhook {address!r}", transient=False, code="config")
            sender, url = hook
            return sender.send(replace(message, to=url))
        found = self.channels.get(channel)
        if found is None:
            raise ChannelError(
                f"channel {channel} is not configured", transient=False, code="config"
            )
        return found.send(message)

    async def asend(self, channel: str, address: str, message: Message) -> SendResult:
        """:meth:`send` from the event loop: HTTP channels with an async client send on the
        loop (many in flight); the others (SMTP) on a thread; the log channel inline."""
        if channel == "webhook":
            hook = self.webhooks.get(address)
            if hook is None:
                raise ChannelError(f"no webhook {address!r}", transient=False, code="config")
            found, url = hook
            message = replace(message, to=url)
        else:
            found = self.channels.get(channel)  # type: ignore[assignment]
            if found is None:
                raise ChannelError(
                    f"channel {channel} is not configured", transient=False, code="config"
                )
        if isinstance(found, LogChannel):
            return found.send(message)
        asend = getattr(found, "asend", None)
        if asend is not None:
            result: SendResult = await asend(message)
            return result
        return await asyncio.to_thread(found.send, message)

    @classmethod
    def from_settings(
        cls, settings: NotifySettings, client: httpx.Client, aclient: AsyncHttp | None = None
    ) -> ChannelSet:
        """Channels for what ``settings`` configures (``aclient``: HTTP channels can also
        send from the event loop)."""
        channels: dict[str, Channel] = {}
        e = settings.email
        if e.host is not None:
            channels["email"] = EmailChannel(
                e.host,
                e.port,
                sender=e.sender,
                starttls=e.starttls,
                use_ssl=e.ssl,
                username=e.username,
                password=e.password.get_secret_value() if e.password else None,
                timeout=e.timeout_seconds,
                ssl_context=ssl.create_default_context(cafile=str(e.ca_file))
                if e.ca_file is not None
                else None,
            )
        for name in ("sms", "push"):
            g = getattr(settings, name)
            if g.url is not None:
                channels[name] = GatewayChannel(
                    name,
                    client,
                    g.url,
                    token=g.auth_token.get_secret_value() if g.auth_token else None,
                    sender=g.sender,
                    timeout=g.timeout_seconds,
                    aclient=aclient,
                )
        webhooks: dict[str, tuple[Channel, str]] = {
            w.name: (
                WebhookChannel(client, fmt=w.format, timeout=w.timeout_seconds, aclient=aclient),
                w.url,
            )
            for w in settings.webhooks
        }
        return cls(channels, webhooks)


def ops_directory(settings: NotifySettings) -> OpsDirectory:
    """The routing config as an :class:`OpsDirectory`."""
    r = settings.routing
    return OpsDirectory(
        {
            severity: [(route.channel, list(route.to)) for route in getattr(r, severity)]
            for severity in ("critical", "high", "medium", "low")
        }
    )


@dataclass(frozen=True, slots=True)
class _Address:
    address: str | None
    locale: str
    timezone: str


#: A sender keeping up with its queue claims at most once per this many seconds (see
#: :meth:`DeliverySender.next_due`): each batch then carries what came due meanwhile.
MIN_CYCLE_SECONDS = 0.1

#: At most this many claim-send-record cycles in one :meth:`DeliverySender.send_due_async`
#: step (so a loop being stopped finishes its pass soon).
CYCLES_PER_STEP = 20


@dataclass(slots=True)
class _Cycle:
    """What one transaction of the sender did: recorded the previous batch's outcomes
    (``recorded``: still that claim's, per outcome), claimed ``batch``, settled some of it
    (``outcomes``: cancelled by a guard, no address) and left ``work`` to send; ``next_due``
    is read when nothing was claimed (the loop sleeps until then)."""

    recorded: list[bool]
    batch: list[DeliveryRow]
    outcomes: dict[int, Outcome]
    work: list[tuple[DeliveryRow, _Address]]
    now: datetime
    next_due: datetime | None = None


class DeliverySender:
    """Claims due deliveries and sends them, ``settings.concurrency`` at a time.

    Two ways to run a batch, with the same steps and the same records:
    :meth:`send_due` (blocking; sends on ``concurrency`` threads — tests and the CLI) and
    :meth:`send_due_async` (the ``duly worker`` loop: the SQL runs on a thread, HTTP
    channels send from the event loop with ``concurrency`` requests in flight).
    """

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        channels: ChannelSet,
        templates: Templates,
        ops: OpsDirectory,
        settings: DeliverySettings | None = None,
        *,
        alerts: AlertSink | None = None,
        guards: dict[str, Guard] | None = None,
        batch_guards: dict[str, BatchGuard] | None = None,
        default_locale: str = "en",
        after_send: Callable[[DeliveryRow], None] | None = None,
        min_cycle_seconds: float = MIN_CYCLE_SECONDS,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.channels = channels
        self.templates = templates
        self.ops = ops
        self.settings = settings or DeliverySettings()
        self.alerts = alerts
        self.guards = dict(guards or {})
        self.batch_guards = dict(batch_guards or {})
        self.default_locale = default_locale
        #: Test hook: called after a send and before its outcome is recorded.
        self.after_send = after_send
        self._pool: ThreadPoolExecutor | None = None
        #: ``(next due,)`` from the last step's final transaction, for :meth:`next_due`.
        self._next_due: tuple[datetime | None] | None = None
        #: The last claim of :meth:`send_due_async` that took something, and the least time
        #: from one to the next claim of the loop (see :meth:`next_due`).
        self._claimed_at: datetime | None = None
        self.min_cycle_seconds = min_cycle_seconds

    def close(self) -> None:
        """Release the sending threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _cycle(self, done: Sequence[Outcome], limit: int, *, due: bool = False) -> _Cycle:
        """One transaction: record ``done`` (the previous batch's outcomes), claim up to
        ``limit`` due deliveries, run their send-time checks and read their addresses
        (``due``: if none was claimed, also read when the next one is due)."""
        s = self.settings
        with self.engine.begin() as conn:
            now = self.clock.now()
            recorded = finish_many_on(conn, done, now) if done else []
            batch = claim_on(conn, now, limit, timedelta(seconds=s.lease_seconds)) if limit else []
            if not batch:
                return _Cycle(recorded, [], {}, [], now, next_due_on(conn) if due else None)
            outcomes, work = self._prepare_on(conn, batch, now)
        return _Cycle(recorded, batch, outcomes, work, now)

    def send_due(self, limit: int | None = None) -> int:
        """Claim and send one batch of due deliveries; returns how many were claimed.

        One transaction claims the batch, runs the send-time checks and reads the
        addresses, the sends run on ``concurrency`` threads, and one transaction records
        every outcome.
        """
        cycle = self._cycle((), limit or self.settings.batch)
        if cycle.batch:
            self._send_batch(cycle)
        return len(cycle.batch)

    async def send_due_async(self, limit: int | None = None) -> int:
        """:meth:`send_due` for the event loop, in cycles: the SQL on a thread, the sends
        from the loop with ``concurrency`` in flight; returns how many were claimed.

        Each cycle is one transaction that records the previous batch's outcomes and claims
        (and checks) the next batch: a sender working through a backlog pays one
        transaction per full batch. The step ends, its last outcomes recorded, once a claim
        comes back short of a full batch (the queue is caught up) or empty, or after
        :data:`CYCLES_PER_STEP` cycles; the final transaction also reads when the next
        delivery is due, which :meth:`next_due` gives the loop (no later than
        ``min_cycle_seconds`` after this step's last claim).
        """
        limit = limit or self.settings.batch
        self._next_due = None
        done: list[Outcome] = []
        claimed = 0
        cycles = 0
        full = True
        while True:
            more = limit if full and cycles < CYCLES_PER_STEP else 0
            try:
                cycle = await asyncio.to_thread(self._cycle, done, more, due=more > 0 or not full)
            except Exception:
                if done:  # the claim failed: the outcomes are still recorded on their own
                    await asyncio.to_thread(self._record, done)
                raise
            self._recorded(done, cycle.recorded, cycle.now)
            if not cycle.batch:
                if more or not full:
                    self._next_due = (cycle.next_due,)
                return claimed
            self._claimed_at = cycle.now
            cycles += 1
            claimed += len(cycle.batch)
            full = len(cycle.batch) >= limit
            done = await self._send_async(cycle)

    def next_due(self) -> datetime | None:
        """When the loop should claim again: when the next delivery is due (read by the last
        step's final transaction, else from the store), but not sooner than
        ``min_cycle_seconds`` after the last claim.

        A sender that keeps up with its queue would otherwise claim again as soon as a
        batch is sent, a few deliveries at a time, and spend most of its CPU on the
        per-batch work (transactions, threads, tasks): pacing its claims makes each batch
        carry what came due meanwhile, for at most ``min_cycle_seconds`` of added delay.
        """
        found, self._next_due = self._next_due, None
        due = found[0] if found is not None else next_due(self.engine)
        if due is not None and self._claimed_at is not None and self.min_cycle_seconds > 0:
            earliest = self._claimed_at + timedelta(seconds=self.min_cycle_seconds)
            if due < earliest:
                return earliest
        return due

    async def _send_async(self, cycle: _Cycle) -> list[Outcome]:
        """Send ``cycle.work`` with ``concurrency`` in flight: that many tasks each take the
        next delivery when done with one (not a task and a semaphore wait per delivery)."""
        outcomes = cycle.outcomes
        work = iter(cycle.work)

        async def lane() -> None:
            for delivery, target in work:
                outcome = await self._asend(delivery, target)
                outcomes[outcome.delivery.id] = outcome

        lanes = min(self.settings.concurrency, len(cycle.work))
        if lanes == 1:
            await lane()
        elif lanes:
            await asyncio.gather(*(lane() for _ in range(lanes)))
        return [outcomes[d.id] for d in cycle.batch]

    def deliver(self, delivery: DeliveryRow) -> str:
        """Send one claimed delivery and record the outcome; returns the new status."""
        with self.engine.begin() as conn:
            now = self.clock.now()
            outcomes, work = self._prepare_on(conn, [delivery], now)
        cycle = _Cycle([], [delivery], outcomes, work, now)
        return self._send_batch(cycle)[0].status

    def _prepare_on(
        self, conn: Connection, batch: list[DeliveryRow], now: datetime
    ) -> tuple[dict[int, Outcome], list[tuple[DeliveryRow, _Address]]]:
        """Guards and addresses on ``conn``: what is settled now, and what to send."""
        outcomes: dict[int, Outcome] = {}
        work: list[tuple[DeliveryRow, _Address]] = []
        contacts = customer_contacts(
            conn,
            {int(d.recipient_ref.split(":", 1)[1]) for d in batch
             if d.recipient_ref.startswith("customer:")},
        )  # fmt: skip
        stopped: dict[int, str] = {}
        by_source: dict[str, list[DeliveryRow]] = {}
        for d in batch:
            by_source.setdefault(d.source, []).append(d)
        for source, rows in by_source.items():
            batch_guard = self.batch_guards.get(source)
            if batch_guard is not None:
                stopped.update(batch_guard(conn, rows, now))
                continue
            guard = self.guards.get(source)
            if guard is None:
                continue
            for d in rows:
                reason = guard(conn, d, now)
                if reason is not None:
                    stopped[d.id] = reason
        for d in batch:
            reason = stopped.get(d.id)
            if reason is not None:
                outcomes[d.id] = Outcome(d, "cancelled", error=reason)
                continue
            target = self._address(d, contacts)
            if target.address is None:
                outcomes[d.id] = Outcome(d, "failed", code="NO_RECIPIENT",
                                         error="no address on this channel (or no longer configured)")  # fmt: skip
                continue
            work.append((d, target))
        return outcomes, work

    def _send_batch(self, cycle: _Cycle) -> list[Outcome]:
        outcomes, work, batch = cycle.outcomes, cycle.work, cycle.batch
        if self.settings.concurrency == 1 or len(work) <= 1:
            results = [self._send(d, t) for d, t in work]
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.settings.concurrency, thread_name_prefix="duly-send"
                )
            results = list(self._pool.map(lambda w: self._send(*w), work))
        for outcome in results:
            outcomes[outcome.delivery.id] = outcome
        ordered = [outcomes[d.id] for d in batch]
        self._record(ordered)
        return ordered

    def _message(self, delivery: DeliveryRow, target: _Address) -> Message | Outcome:
        """The rendered message, or the outcome of a template that cannot render."""
        assert target.address is not None
        try:
            rendered = self.templates.render(
                delivery.template,
                delivery.context,
                locale=target.locale,
                timezone=target.timezone,
                parts=CHANNEL_PARTS.get(delivery.channel, ALL_PARTS),
                cache=not delivery.recipient_ref.startswith("customer:"),
            )
        except TemplateError as exc:
            return Outcome(delivery, "failed", code="TEMPLATE", error=str(exc), alert=True)
        return Message(
            to=target.address,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            short=rendered.short,
            idempotency_key=delivery.dedupe_key,
            template=delivery.template,
            data=delivery.context if delivery.recipient_ref.startswith("ops:") else {},
        )

    def _send(self, delivery: DeliveryRow, target: _Address) -> Outcome:
        message = self._message(delivery, target)
        if isinstance(message, Outcome):
            return message
        assert target.address is not None
        try:
            result = self.channels.send(delivery.channel, target.address, message)
        except ChannelError as exc:
            return self._failed(delivery, exc)
        except Exception as exc:  # a bug in a channel: treat as transient, keep the loop alive
            log.exception(
                "delivery.channel_crashed", delivery_id=delivery.id, channel=delivery.channel
            )
            return self._failed(
                delivery, ChannelError(type(exc).__name__, transient=True, code="internal")
            )
        if self.after_send is not None:
            self.after_send(delivery)
        return Outcome(delivery, "sent", code=result.code, ref=result.ref)

    async def _asend(self, delivery: DeliveryRow, target: _Address) -> Outcome:
        message = self._message(delivery, target)
        if isinstance(message, Outcome):
            return message
        assert target.address is not None
        try:
            result = await self.channels.asend(delivery.channel, target.address, message)
        except ChannelError as exc:
            return self._failed(delivery, exc)
        except Exception as exc:  # a bug in a channel: treat as transient, keep the loop alive
            log.exception(
                "delivery.channel_crashed", delivery_id=delivery.id, channel=delivery.channel
            )
            return self._failed(
                delivery, ChannelError(type(exc).__name__, transient=True, code="internal")
            )
        if self.after_send is not None:
            self.after_send(delivery)
        return Outcome(delivery, "sent", code=result.code, ref=result.ref)

    # -- helpers --------------------------------------------------------------------

    def _address(self, delivery: DeliveryRow, contacts: dict[int, CustomerContact]) -> _Address:
        ref = delivery.recipient_ref
        if ref.startswith("customer:"):
            contact = contacts.get(int(ref.split(":", 1)[1]))
            if contact is None:
                return _Address(None, self.default_locale, "UTC")
            return _Address(
                contact.address(delivery.channel),
                delivery.locale or contact.locale,
                contact.timezone,
            )
        return _Address(self.ops.resolve(ref), delivery.locale or self.default_locale, "UTC")

    def _failed(self, delivery: DeliveryRow, exc: ChannelError) -> Outcome:
        s = self.settings
        if exc.transient and delivery.attempts < s.max_attempts:
            wait = s.backoff_seconds[min(delivery.attempts - 1, len(s.backoff_seconds) - 1)]
            retry_at = self.clock.now() + timedelta(seconds=wait)
            log.warning("delivery.retry", delivery_id=delivery.id, channel=delivery.channel,
                        attempt=delivery.attempts, code=exc.code, retry_at=retry_at.isoformat())  # fmt: skip
            return Outcome(delivery, "pending", code=exc.code, error=str(exc), retry_at=retry_at)
        return Outcome(delivery, "failed", code=exc.code, error=str(exc), alert=True)

    def _record(self, outcomes: list[Outcome]) -> None:
        now = self.clock.now()
        self._recorded(outcomes, finish_many(self.engine, outcomes, now), now)

    def _recorded(self, outcomes: Sequence[Outcome], recorded: list[bool], now: datetime) -> None:
        """Metrics, alerts and log lines for outcomes just recorded at ``now``."""
        counts: dict[tuple[str, str], int] = {}
        lateness: dict[str, Any] = {}
        for outcome, done in zip(outcomes, recorded, strict=True):
            d = outcome.delivery
            if done:
                key = (d.channel, outcome.status)
                counts[key] = counts.get(key, 0) + 1
                if outcome.status == "sent" and d.next_attempt_at is not None:
                    late = (now - d.next_attempt_at).total_seconds()
                    histogram = lateness.get(d.source)
                    if histogram is None:
                        histogram = lateness[d.source] = metrics.DELIVERY_LATENESS.labels(
                            source=d.source
                        )
                    histogram.observe(max(late, 0.0))
            if outcome.alert:
                self._alert(d, outcome.code or "", outcome.error or "")
            if outcome.status != "sent" or not done:
                log.info("delivery." + outcome.status, delivery_id=d.id, channel=d.channel,
                         template=d.template, recipient=d.recipient_masked, attempt=d.attempts,
                         code=outcome.code, recorded=done)  # fmt: skip
            else:
                log.debug("delivery.sent", delivery_id=d.id, channel=d.channel,
                          template=d.template, recipient=d.recipient_masked, attempt=d.attempts)  # fmt: skip
        for (channel, status), n in counts.items():
            metrics.DELIVERIES.labels(channel=channel, status=status).inc(n)

    def _alert(self, delivery: DeliveryRow, code: str, error: str) -> None:
        if self.alerts is None:
            return
        self.alerts.raise_alert(
            NewAlert(
                dedupe_key=f"delivery.failed:{delivery.channel}",
                rule="delivery.failed",
                severity="high",
                title=f"{delivery.channel} deliveries are failing ({code})",
                now=self.clock.now(),
                details={
                    "delivery_id": delivery.id,
                    "channel": delivery.channel,
                    "template": delivery.template,
                    "recipient": delivery.recipient_masked,
                    "attempts": delivery.attempts,
                    "code": code,
                    "error": error[:200],
                },
            )
        )
