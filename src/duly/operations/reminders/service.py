"""Payment reminders: planned per (occurrence, version, offset, channel), sent at most once.

Rules (finance-rules.md §5, checklist 23–26):

* Offsets count back from the *adjusted* execution instant: ``m``/``h`` are elapsed time
  (UTC arithmetic), ``d``/``w`` calendar days at the same wall time in the customer's
  timezone (a wall time that does not exist that day is shifted by the DST gap).
* On a quiet channel (SMS, push) a time inside quiet hours (default 21:00–08:00, the
  customer's timezone) moves to the last minute before they begin (20:59) — earlier, never
  later. If that lands at or before the same channel's previous reminder, or before the
  operation was (re)planned, that channel's reminder is dropped (``skipped``); e-mail has no
  quiet hours.
* Offsets: an operation's own (:meth:`ReminderPlanner.set_offsets`, on a scheduled
  transfer or a recurring payment), else the customer's (``reminder_offsets`` in their
  preferences), else ``notify.reminders.offsets``. Setting or clearing an operation's
  offsets re-plans its pending reminders at once: reminders of offsets no longer wanted
  are cancelled, new offsets are planned (those already past are skipped), and reminders
  of offsets kept stay as they were (none is sent twice).
* Offsets already past when the operation is created or rescheduled are skipped; nothing is
  sent at or after the execution instant.
* Each planned reminder is a delivery due at its send time, keyed
  ``<occurrence_key>:v<version>:<offset>:<channel>`` — at most one per key.
* Cancelling, pausing or rescheduling cancels the pending deliveries of the old plan (the
  relay does it when it reads the state change from the outbox), and the sender re-reads
  the operation just before sending (:func:`~duly.operations.reminders.guards.reminder_guard`): a reminder for an operation
  that was cancelled, moved or has started is not sent even if it was already queued.
* A reschedule sends one ``date_changed`` notice per channel (see :mod:`duly.operations.notifications.relay`).

Scheduled transfers are planned from their outbox events; recurring payments from their
events and by :meth:`ReminderPlanner.sweep`, which plans each occurrence once it is within
the longest offset plus ``horizon_hours`` (occurrence rows are only materialised an hour
ahead, so the plan is computed from the payment's recurrence).

The pure timing rules are in :mod:`.planning` and the pre-send check in :mod:`.guards`;
:class:`ReminderPlanner` stays whole (about 500 lines) because planning, re-planning on
an offset change and cancelling share one invariant — a reminder key is planned at most
once — that reads best in one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, and_, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from duly.audit import AuditEntry, record
from duly.clock import Clock
from duly.config import ReminderSettings
from duly.notify import metrics
from duly.notify.deliveries import (
    NewDelivery,
    cancel_deliveries,
    enqueue,
    enqueue_many,
)
from duly.notify.recipients import customer_contact, customer_contacts, customer_targets
from duly.notify.schema import deliveries, reminder_overrides, reminder_plans, reminders
from duly.operations.recurring.models import payment_row, recurring_occurrences, recurring_payments
from duly.operations.reminders.planning import (
    PlannedReminder,
    offset_span,
    offsets_lookahead,
    parse_offset,
    plan_times,
)
from duly.operations.transfers.models import scheduled_transfers

__all__ = ["ReminderPlanner"]

log = structlog.get_logger("duly.reminders")

_R = reminders
_PL = reminder_plans
_T = scheduled_transfers
_P = recurring_payments
_O = recurring_occurrences
_OV = reminder_overrides


# -- planning -------------------------------------------------------------------------


def _insert(conn: Connection) -> Any:
    return pg_insert if conn.dialect.name == "postgresql" else sqlite_insert


class ReminderPlanner:
    """Plans, re-plans and cancels reminders, on the caller's transaction."""

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        settings: ReminderSettings | None = None,
        available: Iterable[str] = ("email",),
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.settings = settings or ReminderSettings()
        self.available = set(available)

    @property
    def lookahead(self) -> timedelta:
        """How far ahead of execution occurrences are planned."""
        spans = [offset_span(o) for o in self.settings.offsets] or [timedelta(0)]
        return max(spans) + timedelta(hours=self.settings.horizon_hours)

    # -- scheduled transfers --------------------------------------------------------

    def plan_transfer(
        self, conn: Connection, transfer_id: int, not_before: datetime, *, replan: bool = False
    ) -> int:
        """Plan (or re-plan) the transfer's reminders for its current version; returns how many.

        ``replan``: the offsets changed; plan the current version again (see :meth:`set_offsets`).
        """
        row = conn.execute(select(_T).where(_T.c.id == transfer_id)).one_or_none()
        if row is None:
            return 0
        now = self.clock.now()
        if row.status != "scheduled":
            self.cancel(conn, row.transfer_key, now, f"transfer {row.status}")
            return 0
        return self._plan_one(
            conn,
            kind="transfer",
            ref_id=int(row.id),
            occurrence_key=row.transfer_key,
            version=int(row.version),
            customer_id=row.customer_id,
            execute_at=row.execute_at,
            context=_transfer_context(row),
            not_before=not_before,
            now=now,
            replan=replan,
        )

    def plan_transfers(self, conn: Connection, items: Sequence[tuple[int, datetime]]) -> int:
        """:meth:`plan_transfer` for many transfers (``(transfer id, not_before)`` pairs) in a
        few set-based statements: the plans, the reminders and their deliveries are inserted
        many rows at a time. Same rules and keys; returns how many reminders were queued."""
        wanted: dict[int, datetime] = {}
        for tid, not_before in items:
            wanted.setdefault(int(tid), not_before)
        if not wanted:
            return 0
        rows = {int(r.id): r for r in conn.execute(select(_T).where(_T.c.id.in_(list(wanted))))}
        now = self.clock.now()
        total = 0
        scheduled = []
        for tid, not_before in wanted.items():
            row = rows.get(tid)
            if row is None:
                continue
            if row.status != "scheduled":  # rare here: cancel its reminders, one by one
                total += self.plan_transfer(conn, tid, not_before)
                continue
            scheduled.append((row, not_before))
        first: set[tuple[str, int]] = set()
        if scheduled:
            plans = [{"occurrence_key": r.transfer_key, "version": int(r.version),
                      "execute_at": r.execute_at, "planned_at": now}
                     for r, _ in scheduled]  # fmt: skip
            found = conn.execute(
                _insert(conn)(_PL)
                .on_conflict_do_nothing()
                .returning(_PL.c.occurrence_key, _PL.c.version),
                plans,
            )
            first = {(key, int(version)) for key, version in found}
        todo = [(r, nb) for r, nb in scheduled if (r.transfer_key, int(r.version)) in first]
        if not todo:
            return total  # every version was planned already
        versions = {r.transfer_key: int(r.version) for r, _ in todo}
        self._cancel_other_versions(conn, versions, now)
        if not self.settings.enabled:
            return total
        ids = [int(r.id) for r, _ in todo]
        keys = list(versions)
        contacts = customer_contacts(
            conn, {int(r.customer_id) for r, _ in todo if r.customer_id is not None}
        )
        own = {
            int(ref): [str(o) for o in offsets]
            for ref, offsets in conn.execute(
                select(_OV.c.ref_id, _OV.c.offsets).where(
                    _OV.c.kind == "transfer", _OV.c.ref_id.in_(ids)
                )
            )
            if isinstance(offsets, list)
        }
        already: dict[str, set[tuple[str, str]]] = {}
        for key, offset, channel in conn.execute(
            select(_R.c.occurrence_key, _R.c.offset, _R.c.channel)
            .join(deliveries, deliveries.c.id == _R.c.delivery_id)
            .where(_R.c.occurrence_key.in_(keys), deliveries.c.status.in_(("sent", "sending")))
        ):
            already.setdefault(key, set()).add((offset, channel))
        s = self.settings
        news: list[NewDelivery] = []
        planned_rows: list[dict[str, Any]] = []
        for row, not_before in todo:
            contact = contacts.get(int(row.customer_id)) if row.customer_id is not None else None
            if contact is None or contact.prefs.get("reminders") is False:
                continue
            offsets = own.get(int(row.id)) or self._default_offsets(contact.prefs)
            targets = {t.channel: t for t in customer_targets(contact, self.available)}
            planned = plan_times(row.execute_at, contact.timezone, offsets, list(targets),
                                 not_before=not_before, quiet_channels=s.quiet_channels,
                                 quiet_start=s.quiet_start, quiet_end=s.quiet_end)  # fmt: skip
            context = _transfer_context(row)
            sent = already.get(row.transfer_key, set())
            for p in planned:
                key = f"{row.transfer_key}:v{int(row.version)}:{p.offset}:{p.channel}"
                if p.send_at is not None and (p.offset, p.channel) in sent:
                    p = PlannedReminder(p.offset, p.channel, None, "sent before the reschedule")
                if p.send_at is not None:
                    target = targets[p.channel]
                    news.append(NewDelivery(
                        dedupe_key=key, source="reminder", source_ref=row.transfer_key,
                        channel=p.channel, recipient_ref=target.recipient_ref,
                        recipient_masked=target.recipient_masked, template="payment_reminder",
                        context={**context, "offset": p.offset}, not_before=p.send_at,
                    ))  # fmt: skip
                planned_rows.append({
                    "reminder_key": key, "kind": "transfer", "ref_id": int(row.id),
                    "occurrence_key": row.transfer_key, "version": int(row.version),
                    "customer_id": row.customer_id, "offset": p.offset, "channel": p.channel,
                    "execute_at": row.execute_at, "send_at": p.send_at or row.execute_at,
                    "status": "planned" if p.send_at is not None else "skipped",
                    "reason": p.reason, "delivery_id": None, "created_at": now,
                    "updated_at": now,
                })  # fmt: skip
        queued = enqueue_many(conn, news, now)
        for r in planned_rows:
            r["delivery_id"] = queued.get(r["reminder_key"]) if r["status"] == "planned" else None
        if planned_rows:
            conn.execute(_insert(conn)(_R).on_conflict_do_nothing(), planned_rows)
        n_planned = sum(r["status"] == "planned" for r in planned_rows)
        if n_planned:
            metrics.REMINDERS_PLANNED.labels(status="planned").inc(n_planned)
        if len(planned_rows) > n_planned:
            metrics.REMINDERS_PLANNED.labels(status="skipped").inc(len(planned_rows) - n_planned)
        return total + len(queued)

    @staticmethod
    def _cancel_other_versions(conn: Connection, versions: dict[str, int], now: datetime) -> None:
        """:meth:`cancel` with ``keep_version`` for many occurrence keys at once."""
        rows = [
            r
            for r in conn.execute(
                select(_R.c.id, _R.c.delivery_id, _R.c.occurrence_key, _R.c.version)
                .outerjoin(deliveries, deliveries.c.id == _R.c.delivery_id)
                .where(
                    _R.c.occurrence_key.in_(list(versions)),
                    _R.c.status == "planned",
                    or_(deliveries.c.id.is_(None), deliveries.c.status == "pending"),
                )
            )
            if int(r.version) != versions[r.occurrence_key]
        ]
        if not rows:
            return
        reason = "re-planned"
        conn.execute(
            update(_R)
            .where(_R.c.id.in_([r.id for r in rows]))
            .values(status="cancelled", reason=reason, updated_at=now)
        )
        cancel_deliveries(conn, [int(r.delivery_id) for r in rows if r.delivery_id], now, reason)

    # -- recurring payments ---------------------------------------------------------

    def plan_payment(
        self, conn: Connection, payment_id: int, not_before: datetime, *, replan: bool = False
    ) -> int:
        """Plan the reminders of the payment's occurrences within the look-ahead.

        ``replan``: the offsets changed; plan the occurrences again (see :meth:`set_offsets`).
        """
        row = conn.execute(select(_P).where(_P.c.id == payment_id)).one_or_none()
        if row is None:
            return 0
        now = self.clock.now()
        if row.status in ("paused", "cancelled"):
            keys = conn.execute(
                select(_R.c.occurrence_key)
                .where(
                    _R.c.kind == "occurrence", _R.c.ref_id == payment_id, _R.c.status == "planned"
                )
                .distinct()
            ).scalars()
            for key in list(keys):
                self.cancel(conn, key, now, f"payment {row.status}")
            return 0
        if row.status != "active":
            return 0
        payment = payment_row(row)
        own = _override(conn, "payment", payment_id)
        until = now + max(self.lookahead, offsets_lookahead(own or [], self.settings.horizon_hours))
        wanted: dict[str, tuple[datetime, str]] = {}
        for occ in conn.execute(
            select(_O.c.transfer_key, _O.c.execute_at, _O.c.unadjusted_date).where(
                _O.c.payment_id == payment_id, _O.c.status == "scheduled", _O.c.execute_at > now
            )
        ):
            wanted[occ.transfer_key] = (occ.execute_at, occ.unadjusted_date.isoformat())
        for planned in payment.plan.occurrences(payment.next_index):
            if planned.execute_at > until or len(wanted) > 500:
                break
            key = f"rp-{payment.id}-{planned.unadjusted_date:%Y%m%d}"
            wanted.setdefault(key, (planned.execute_at, planned.unadjusted_date.isoformat()))
        total = 0
        for key, (execute_at, _day) in sorted(wanted.items(), key=lambda kv: kv[1][0]):
            if execute_at <= now:
                continue
            context = {
                "kind": "occurrence",
                "amount_minor": int(row.amount_minor),
                "currency": row.currency,
                "from_account": row.from_account,
                "to_account": row.to_account,
                "memo": row.memo,
                "execute_at": execute_at.isoformat(),
            }
            total += self._plan_one(
                conn,
                kind="occurrence",
                ref_id=payment_id,
                occurrence_key=key,
                version=int(row.version),
                customer_id=row.customer_id,
                execute_at=execute_at,
                context=context,
                not_before=not_before,
                now=now,
                replan=replan,
            )
        return total

    def sweep(self, limit: int = 500) -> int:
        """Plan the occurrences that came within the look-ahead (recurring payments and, as a
        safety net, scheduled transfers whose current version has no plan)."""
        now = self.clock.now()
        until = now + self.lookahead
        with self.engine.connect() as conn:
            payment_ids = list(
                conn.execute(
                    select(_P.c.id)
                    .where(_P.c.status == "active", _P.c.next_execute_at <= until)
                    .order_by(_P.c.next_execute_at)
                    .limit(limit)
                ).scalars()
            )
            # Payments whose own offsets reach further back than the configured ones.
            for pid, offsets in conn.execute(
                select(_OV.c.ref_id, _OV.c.offsets)
                .join(_P, _P.c.id == _OV.c.ref_id)
                .where(_OV.c.kind == "payment", _P.c.status == "active")
            ):
                reach = offsets_lookahead(offsets, self.settings.horizon_hours)
                row = conn.execute(select(_P.c.next_execute_at).where(_P.c.id == pid)).scalar()
                if row is not None and row <= now + reach and pid not in payment_ids:
                    payment_ids.append(pid)
            transfer_ids = list(
                conn.execute(
                    select(_T.c.id)
                    .outerjoin(
                        _PL,
                        and_(
                            _PL.c.occurrence_key == _T.c.transfer_key, _PL.c.version == _T.c.version
                        ),
                    )
                    .where(
                        _T.c.status == "scheduled",
                        _T.c.execute_at > now,
                        _T.c.execute_at <= until,
                        _PL.c.id.is_(None),
                    )
                    .limit(limit)
                ).scalars()
            )
        total = 0
        for pid in payment_ids:
            with self.engine.begin() as conn:
                total += self.plan_payment(conn, int(pid), now)
        for tid in transfer_ids:
            with self.engine.begin() as conn:
                total += self.plan_transfer(conn, int(tid), now)
        return total

    # -- per-operation offsets ------------------------------------------------------

    def set_offsets(
        self, conn: Connection, kind: str, ref_id: int, offsets: Sequence[str] | None
    ) -> int:
        """Give a scheduled transfer (``kind="transfer"``) or a recurring payment
        (``"payment"``) its own reminder offsets (``None``: back to the customer's or the
        configured ones), and re-plan its pending reminders now; returns how many were planned.

        :raises ValueError: an unknown ``kind`` or operation, or a bad offset.
        """
        if kind not in ("transfer", "payment"):
            raise ValueError(f"reminder offsets are set on a transfer or a payment, not {kind!r}")
        wanted = None if offsets is None else sorted(set(offsets), key=offset_span, reverse=True)
        for offset in wanted or []:
            parse_offset(offset)
        table = _T if kind == "transfer" else _P
        if conn.execute(select(table.c.id).where(table.c.id == ref_id)).first() is None:
            raise ValueError(f"no {kind} {ref_id}")
        now = self.clock.now()
        before = _override(conn, kind, ref_id)
        conn.execute(_OV.delete().where(_OV.c.kind == kind, _OV.c.ref_id == ref_id))
        if wanted is not None:
            conn.execute(_OV.insert().values(kind=kind, ref_id=ref_id, offsets=wanted,
                                             updated_at=now))  # fmt: skip
        object_type = "transfer" if kind == "transfer" else "recurring_payment"
        details = {"offsets": {"before": before, "after": wanted}}
        record(conn, [AuditEntry("reminders.set_offsets", object_type, ref_id, details)], now)
        log.info("reminders.offsets_set", kind=kind, ref_id=ref_id, offsets=wanted)
        if kind == "transfer":
            return self.plan_transfer(conn, ref_id, now, replan=True)
        return self.plan_payment(conn, ref_id, now, replan=True)

    def _offsets(
        self, conn: Connection, kind: str, ref_id: int, prefs: dict[str, Any]
    ) -> list[str]:
        """The operation's own offsets, else the customer's, else the configured ones."""
        own = _override(conn, "transfer" if kind == "transfer" else "payment", ref_id)
        if own is not None:
            return own
        return self._default_offsets(prefs)

    def _default_offsets(self, prefs: dict[str, Any]) -> list[str]:
        """The customer's offsets, else the configured ones."""
        offsets = list(self.settings.offsets)
        custom = prefs.get("reminder_offsets")
        if isinstance(custom, list):
            try:
                offsets = [o for o in (str(c) for c in custom) if parse_offset(o)]
            except ValueError:
                log.warning("reminders.bad_customer_offsets")
        return offsets

    # -- shared ---------------------------------------------------------------------

    def cancel(
        self,
        conn: Connection,
        occurrence_key: str,
        now: datetime,
        reason: str,
        *,
        keep_version: int | None = None,
    ) -> int:
        """Cancel the planned, not yet sent reminders of ``occurrence_key`` (but ``keep_version``'s)."""
        conds = [_R.c.occurrence_key == occurrence_key, _R.c.status == "planned"]
        if keep_version is not None:
            conds.append(_R.c.version != keep_version)
        rows = conn.execute(
            select(_R.c.id, _R.c.delivery_id)
            .outerjoin(deliveries, deliveries.c.id == _R.c.delivery_id)
            .where(*conds, or_(deliveries.c.id.is_(None), deliveries.c.status == "pending"))
        ).all()
        if not rows:
            return 0
        conn.execute(
            update(_R)
            .where(_R.c.id.in_([r.id for r in rows]))
            .values(status="cancelled", reason=reason, updated_at=now)
        )
        cancel_deliveries(conn, [int(r.delivery_id) for r in rows if r.delivery_id], now, reason)
        return len(rows)

    @staticmethod
    def _cancel_offsets(
        conn: Connection, occurrence_key: str, version: int, keep: Sequence[str], now: datetime
    ) -> None:
        rows = conn.execute(
            select(_R.c.id, _R.c.delivery_id)
            .outerjoin(deliveries, deliveries.c.id == _R.c.delivery_id)
            .where(
                _R.c.occurrence_key == occurrence_key,
                _R.c.version == version,
                _R.c.status == "planned",
                _R.c.offset.not_in(list(keep)),
                or_(deliveries.c.id.is_(None), deliveries.c.status == "pending"),
            )
        ).all()
        if not rows:
            return
        reason = "offsets changed"
        conn.execute(
            update(_R)
            .where(_R.c.id.in_([r.id for r in rows]))
            .values(status="cancelled", reason=reason, updated_at=now)
        )
        cancel_deliveries(conn, [int(r.delivery_id) for r in rows if r.delivery_id], now, reason)

    @staticmethod
    def _sent(conn: Connection, occurrence_key: str) -> set[tuple[str, str]]:
        """(offset, channel) pairs already sent for this occurrence, in any version."""
        rows = conn.execute(
            select(_R.c.offset, _R.c.channel)
            .join(deliveries, deliveries.c.id == _R.c.delivery_id)
            .where(
                _R.c.occurrence_key == occurrence_key, deliveries.c.status.in_(("sent", "sending"))
            )
        ).all()
        return {(r.offset, r.channel) for r in rows}

    def _plan_one(
        self,
        conn: Connection,
        *,
        kind: str,
        ref_id: int,
        occurrence_key: str,
        version: int,
        customer_id: int | None,
        execute_at: datetime,
        context: dict[str, Any],
        not_before: datetime,
        now: datetime,
        replan: bool = False,
    ) -> int:
        first = conn.execute(
            _insert(conn)(_PL)
            .values(
                occurrence_key=occurrence_key,
                version=version,
                execute_at=execute_at,
                planned_at=now,
            )
            .on_conflict_do_nothing()
            .returning(_PL.c.id)
        ).scalar()
        if first is None and not replan:
            return 0  # this version is planned already
        self.cancel(conn, occurrence_key, now, "re-planned", keep_version=version)
        if not self.settings.enabled or customer_id is None:
            return 0
        contact = customer_contact(conn, int(customer_id))
        if contact is None or contact.prefs.get("reminders") is False:
            return 0
        offsets = self._offsets(conn, kind, ref_id, contact.prefs)
        if replan:  # this version's reminders of offsets no longer wanted
            self._cancel_offsets(conn, occurrence_key, version, offsets, now)
        targets = {t.channel: t for t in customer_targets(contact, self.available)}
        s = self.settings
        planned = plan_times(execute_at, contact.timezone, offsets, list(targets),
                             not_before=not_before, quiet_channels=s.quiet_channels,
                             quiet_start=s.quiet_start, quiet_end=s.quiet_end)  # fmt: skip
        already = self._sent(conn, occurrence_key)
        created = 0
        for p in planned:
            target = targets[p.channel]
            key = f"{occurrence_key}:v{version}:{p.offset}:{p.channel}"
            if p.send_at is not None and (p.offset, p.channel) in already:
                p = PlannedReminder(p.offset, p.channel, None, "sent before the reschedule")
            delivery_id = None
            if p.send_at is not None:
                delivery_id = enqueue(
                    conn,
                    NewDelivery(
                        dedupe_key=key,
                        source="reminder",
                        source_ref=occurrence_key,
                        channel=p.channel,
                        recipient_ref=target.recipient_ref,
                        recipient_masked=target.recipient_masked,
                        template="payment_reminder",
                        context={**context, "offset": p.offset},
                        not_before=p.send_at,
                    ),
                    now,
                )
            conn.execute(
                _insert(conn)(_R)
                .values(
                    reminder_key=key,
                    kind=kind,
                    ref_id=ref_id,
                    occurrence_key=occurrence_key,
                    version=version,
                    customer_id=customer_id,
                    offset=p.offset,
                    channel=p.channel,
                    execute_at=execute_at,
                    send_at=p.send_at or execute_at,
                    status="planned" if p.send_at is not None else "skipped",
                    reason=p.reason,
                    delivery_id=delivery_id,
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing()
            )
            metrics.REMINDERS_PLANNED.labels(status="planned" if p.send_at else "skipped").inc()
            created += delivery_id is not None  # a kept reminder (re-plan) is not new
        return created


def _transfer_context(row: Any) -> dict[str, Any]:
    """A scheduled transfer's fields for the reminder template."""
    return {
        "kind": "transfer",
        "amount_minor": int(row.amount_minor),
        "currency": row.currency,
        "from_account": row.from_account,
        "to_account": row.to_account,
        "memo": row.memo,
        "execute_at": row.execute_at.isoformat(),
    }


def _override(conn: Connection, kind: str, ref_id: int) -> list[str] | None:
    """The offsets set on one operation, if any."""
    found = conn.execute(
        select(_OV.c.offsets).where(_OV.c.kind == kind, _OV.c.ref_id == ref_id)
    ).scalar()
    return [str(o) for o in found] if isinstance(found, list) else None
