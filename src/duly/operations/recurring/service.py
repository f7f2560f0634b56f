"""Recurring payments: weekly, monthly (a day or the last), quarterly, yearly or an RRULE.

A payment is ``active``, ``paused``, ``cancelled`` or ``completed`` (every occurrence
materialised). Its occurrences are rows unique on ``(payment_id, unadjusted_date)``
with ``scheduled → executing → executed | retrying → … | failed | skipped | cancelled``.

**Materialising** (:meth:`RecurringPayments.materialize_due`, run by the
``operations.sweep`` job every few minutes, and at once when a payment is created) creates
the occurrence rows due within a horizon, in order, from the payment's ``next_index``;
each row gets an engine run (key: its ``transfer_key``, ``rp-<payment>-<YYYYMMDD>`` of the
unadjusted date). After downtime every missed occurrence is created and runs at once —
once each, because the row and the run are unique. Occurrences that fall due while the
payment is paused are recorded ``skipped``; the executor skips a scheduled one whose
payment is paused when it comes to run.

**Failures**: transient ones are retried ``retry_every`` later, at most ``max_attempts``
times within ``retry_window`` of the occurrence's instant; after the final failure the
occurrence is ``failed`` and one customer notification goes to the outbox. The payment
carries on with its next occurrence, unless ``on_final_failure`` is ``pause`` or the
failure is terminal for the account (``ACCOUNT_CLOSED``): then it is paused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from duly.audit import AuditEntry, changes, record
from duly.banking.money import MoneyError, check_currency, from_minor, to_minor
from duly.banking.schema import accounts, customers
from duly.engine.client import EngineClient
from duly.operations.auditing import money_terms, safe_key
from duly.operations.banks import BankDirectory, default_banks
from duly.operations.errors import IdempotencyConflict, InvalidRequest, NotFound, StateConflict
from duly.operations.execution.models import ACTIVE
from duly.operations.execution.outcomes import set_state
from duly.operations.execution.runs import cancel_run, ensure_run
from duly.operations.localtime import execution_date, parse_time_of_day, zone
from duly.operations.outbox import emit
from duly.operations.recurring.execution import OCCURRENCES, load_target, set_payment_status
from duly.operations.recurring.models import (
    Keep,
    NewRecurringPayment,
    OccurrenceRow,
    PaymentChange,
    PaymentRow,
    occurrence_row,
    payment_row,
    recurring_occurrences,
    recurring_payments,
)
from duly.operations.recurring.planning import PaymentPlan, PlannedOccurrence
from duly.operations.recurring.recurrence import Recurrence
from duly.timing.business_days import parse_convention
from duly.timing.errors import SpecError

__all__ = ["DEFAULT_HORIZON", "MAX_PER_PASS", "RecurringPayments"]

_P = recurring_payments
_O = recurring_occurrences

#: How far ahead occurrences (and their runs) are created by default.
DEFAULT_HORIZON = timedelta(hours=1)

#: Most occurrences one payment gets per materialising pass (the next pass continues).
MAX_PER_PASS = 500


# -- the service ----------------------------------------------------------------------


class RecurringPayments:
    """Set up, pause, resume, cancel and preview recurring payments; materialise occurrences.

    :param horizon: occurrences due within this much of now get their rows and runs.
    """

    def __init__(
        self,
        client: EngineClient,
        banks: BankDirectory = default_banks,
        *,
        horizon: timedelta = DEFAULT_HORIZON,
    ) -> None:
        self.client = client
        self.store = client.store
        self.engine = client.store.engine
        self.clock = client.clock
        self.banks = banks
        self.horizon = horizon

    def create(
        self, new: NewRecurringPayment, *, catch_up: bool = True
    ) -> tuple[PaymentRow, bool]:
        """Set up ``new``; returns the payment and whether this call created it.

        :param catch_up: a payment whose first occurrences have passed pays them at once;
            ``False`` refuses it instead (the API: nothing is paid by surprise on creation).
        :raises InvalidRequest: a field is wrong, or (without ``catch_up``) the first
            occurrence has passed.
        :raises IdempotencyConflict: ``request_key`` was used with a different body.
        """
        body = self._normalise(new)
        digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
        existing = self._by_request(new.request_key)
        if existing is not None:
            return self._replay(existing, digest), False
        now = self.clock.now()
        plan = _plan_of(body)
        first = plan.occurrence(0)
        if first is None:
            raise InvalidRequest("the payment has no occurrence (check start, end and count)")
        if not catch_up and first.execute_at < now:
            raise InvalidRequest(
                f"the first occurrence ({first.unadjusted_date.isoformat()}, at "
                f"{first.execute_at.isoformat()}) has passed; choose a later start date or time"
            )
        insert = pg_insert if self.store.is_postgres else sqlite_insert
        with self.engine.begin() as conn:
            customer_id = self._owner(conn, new, body)
            values = {k: v for k, v in body.items() if k not in ("policy", "customer_id")}
            new_id = conn.execute(
                insert(_P)
                .values(
                    **values,
                    request_key=new.request_key,
                    request_hash=digest,
                    customer_id=customer_id,
                    max_attempts=new.policy.max_attempts,
                    retry_every_seconds=int(new.policy.retry_every.total_seconds()),
                    retry_window_seconds=int(new.policy.retry_window.total_seconds()),
                    status="active",
                    next_index=0,
                    next_execute_at=first.execute_at,
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing()
                .returning(_P.c.id)
            ).scalar()
            if new_id is not None:
                emit(
                    conn,
                    event_type="recurring_payment.created",
                    aggregate="recurring_payment",
                    aggregate_id=new_id,
                    dedupe_key=f"recurring_payment:{new_id}:v1",
                    payload={"status": "active", "customer_id": customer_id, "version": 1},
                    now=now,
                )
                entry = _created_entry(int(new_id), body, new.request_key, customer_id, first)
                record(conn, [entry], now)
        if new_id is None:
            raced = self._by_request(new.request_key)
            assert raced is not None
            return self._replay(raced, digest), False
        self.materialize(int(new_id))
        row = self.get(int(new_id))
        assert row is not None
        return row, True

    def get(self, payment_id: int) -> PaymentRow | None:
        """The payment ``payment_id``, if any."""
        with self.engine.connect() as conn:
            row = conn.execute(select(_P).where(_P.c.id == payment_id)).one_or_none()
        return payment_row(row) if row is not None else None

    def find(
        self,
        *,
        customer_id: int | None = None,
        status: str | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[PaymentRow]:
        """Payments by id, optionally one customer's or in one status."""
        conds = [_P.c.id > after_id]
        if customer_id is not None:
            conds.append(_P.c.customer_id == customer_id)
        if status is not None:
            conds.append(_P.c.status == status)
        with self.engine.connect() as conn:
            rows = conn.execute(select(_P).where(*conds).order_by(_P.c.id).limit(limit)).all()
        return [payment_row(r) for r in rows]

    def occurrences(
        self, payment_id: int, *, after_seq: int = -1, limit: int | None = None
    ) -> list[OccurrenceRow]:
        """The payment's occurrences so far, in order; ``limit`` at a time after ``after_seq``."""
        stmt = (
            select(_O)
            .where(_O.c.payment_id == payment_id, _O.c.seq > after_seq)
            .order_by(_O.c.seq)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [occurrence_row(r) for r in rows]

    def occurrence(self, occurrence_id: int) -> OccurrenceRow | None:
        """The occurrence ``occurrence_id`` (a run's ``ref_id``), if any."""
        with self.engine.connect() as conn:
            row = conn.execute(select(_O).where(_O.c.id == occurrence_id)).one_or_none()
        return occurrence_row(row) if row is not None else None

    def preview(self, payment_id: int, count: int = 10) -> list[PlannedOccurrence]:
        """The next ``count`` occurrences from now, as planned.

        :raises NotFound: no such payment.
        """
        payment = self.get(payment_id)
        if payment is None:
            raise NotFound(f"no recurring payment {payment_id}")
        if payment.status in ("cancelled", "completed"):
            return []
        return payment.plan.preview(self.clock.now(), count)

    def pause(self, payment_id: int, reason: str | None = None) -> PaymentRow:
        """Stop paying: occurrences falling due while paused are skipped.

        :raises StateConflict: it is not active.
        """
        return self._transition(payment_id, ("active",), "paused", reason or "paused")

    def resume(self, payment_id: int) -> PaymentRow:
        """Pay again from now on; occurrences that fell due while paused stay skipped.

        :raises StateConflict: it is not paused.
        """
        now = self.clock.now()
        with self.engine.begin() as conn:
            row = self._lock(conn, payment_id)
            if row.status != "paused":
                raise StateConflict(f"recurring payment {payment_id} is {row.status}, not paused")
            self._materialize_on(conn, payment_row(row), until=now, now=now)  # skip what fell due
            set_payment_status(conn, payment_id, int(row.version), "active", now, None,
                               previous="paused")  # fmt: skip
        self.materialize(payment_id)
        out = self.get(payment_id)
        assert out is not None
        return out

    def update(self, payment_id: int, change: PaymentChange) -> PaymentRow:
        """Change the amount, memo, end (date or count) or time of day of a payment.

        The new terms apply to every occurrence not made yet: the plan is worked out again
        from the payment's next occurrence and materialised, as :meth:`resume` does. So that
        no occurrence is paid on terms other than those it started with, the change is
        refused while one is scheduled, executing or retrying (an occurrence gets its row
        when it is within the materialising horizon, an hour or two ahead). A change of
        nothing changes nothing (no new version).

        :raises NotFound: no such payment.
        :raises StateConflict: it is cancelled or completed, or an occurrence is under way.
        :raises InvalidRequest: a new term is wrong, the end comes before occurrences
            already made, or the next occurrence would move to a time that has passed.
        """
        now = self.clock.now()
        with self.engine.begin() as conn:
            current = payment_row(self._lock(conn, payment_id))
            if current.status not in ("active", "paused"):
                raise StateConflict(
                    f"recurring payment {payment_id} is {current.status}; it can no longer change"
                )
            values = _changed_terms(current, change)
            if not values:
                return current
            _check_idle(conn, payment_id)
            next_at = _next_after_change(current, replace(current, **values), now)
            version = current.version + 1
            conn.execute(
                update(_P)
                .where(_P.c.id == payment_id)
                .values(**values, next_execute_at=next_at, version=version, updated_at=now)
            )
            emit(
                conn,
                event_type="recurring_payment.updated",  # the relay re-plans its reminders
                aggregate="recurring_payment",
                aggregate_id=payment_id,
                dedupe_key=f"recurring_payment:{payment_id}:v{version}",
                payload={"status": current.status, "version": version, "changed": sorted(values)},
                now=now,
            )
            before = {**_audited_terms(current, values), "version": current.version}
            after = {**_audited_terms(replace(current, **values), values), "version": version}
            entry = AuditEntry(
                "recurring_payment.update", "recurring_payment", payment_id, changes(before, after)
            )
            record(conn, [entry], now)
        self.materialize(payment_id)
        out = self.get(payment_id)
        assert out is not None
        return out

    def cancel(self, payment_id: int) -> PaymentRow:
        """Stop the payment for good; its occurrences that have not started are cancelled.

        :raises StateConflict: it is already cancelled or completed.
        """
        now = self.clock.now()
        with self.engine.begin() as conn:
            row = self._lock(conn, payment_id)
            if row.status not in ("active", "paused"):
                raise StateConflict(f"recurring payment {payment_id} is {row.status}")
            pending = (
                conn.execute(
                    select(_O.c.id).where(
                        _O.c.payment_id == payment_id, _O.c.status.in_(("scheduled", "retrying"))
                    )
                )
                .scalars()
                .all()
            )
            run_ids = []
            for occ_id in pending:
                target = load_target(conn, int(occ_id), True)
                assert target is not None
                set_state(conn, OCCURRENCES, target, "cancelled", now, event="cancelled",
                          dedupe="cancelled", payload={"reason": "the payment was cancelled"},
                          next_attempt_at=None)  # fmt: skip
                run_ids.append(target.run_id)
            conn.execute(update(_P).where(_P.c.id == payment_id).values(next_execute_at=None))
            set_payment_status(conn, payment_id, int(row.version), "cancelled", now, "cancelled",
                               previous=row.status,
                               details={"cancelled_occurrences": [int(i) for i in pending]})  # fmt: skip
        for run_id in run_ids:
            cancel_run(self.store, run_id, now)
        out = self.get(payment_id)
        assert out is not None
        return out

    # -- materialising --------------------------------------------------------------

    def materialize(self, payment_id: int) -> int:
        """Create the payment's occurrences due within the horizon, and their runs."""
        now = self.clock.now()
        with self.engine.begin() as conn:
            row = self._lock(conn, payment_id)
            created = self._materialize_on(
                conn, payment_row(row), until=now + self.horizon, now=now
            )
        self._ensure_runs(payment_id)
        return created

    def materialize_due(self, limit: int = 1000) -> int:
        """Materialise every payment with an occurrence due within the horizon; return how many rows."""
        now = self.clock.now()
        until = now + self.horizon
        total = 0
        with self.engine.connect() as conn:
            ids = (
                conn.execute(
                    select(_P.c.id)
                    .where(
                        _P.c.status.in_(("active", "paused")),
                        _P.c.next_execute_at <= until,
                    )
                    .order_by(_P.c.next_execute_at)
                    .limit(limit)
                )
                .scalars()
                .all()
            )
        for payment_id in ids:
            total += self.materialize(int(payment_id))
        return total

    def _materialize_on(
        self, conn: Connection, payment: PaymentRow, *, until: datetime, now: datetime
    ) -> int:
        """Create occurrences executing up to ``until`` (only up to now, as skipped, if paused)."""
        if payment.status not in ("active", "paused"):
            return 0
        paused = payment.status == "paused"
        limit_at = now if paused else until
        insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        seq, created, next_at = payment.next_index, 0, None
        exhausted = True
        audited: list[AuditEntry] = []
        for occ in payment.plan.occurrences(payment.next_index):
            if occ.execute_at > limit_at or created >= MAX_PER_PASS:
                next_at, exhausted = occ.execute_at, False
                break
            status = "skipped" if paused else "scheduled"
            occ_id = conn.execute(
                insert(_O)
                .values(
                    payment_id=payment.id,
                    customer_id=payment.customer_id,
                    seq=occ.seq,
                    unadjusted_date=occ.unadjusted_date,
                    execution_date=occ.execution_date,
                    execute_at=occ.execute_at,
                    transfer_key=f"rp-{payment.id}-{occ.unadjusted_date:%Y%m%d}",
                    status=status,
                    next_attempt_at=None if paused else occ.execute_at,
                    error_message="the payment was paused" if paused else None,
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing()
                .returning(_O.c.id)
            ).scalar()
            if occ_id is not None:
                created += 1
                emit(
                    conn,
                    event_type=f"occurrence.{status}",
                    aggregate="occurrence",
                    aggregate_id=occ_id,
                    dedupe_key=f"occurrence:{occ_id}:{status}",
                    payload={
                        "status": status,
                        "payment_id": payment.id,
                        "unadjusted_date": occ.unadjusted_date.isoformat(),
                        "execution_date": occ.execution_date.isoformat(),
                        "execute_at": occ.execute_at.isoformat(),
                    },
                    now=now,
                )
                audited.append(_occurrence_entry(int(occ_id), payment, occ, status))
            seq = occ.seq + 1
        record(conn, audited, now)
        conn.execute(
            update(_P)
            .where(_P.c.id == payment.id)
            .values(next_index=seq, next_execute_at=next_at, updated_at=now)
        )
        if exhausted and not paused:
            set_payment_status(conn, payment.id, payment.version, "completed", now,
                               "every occurrence is scheduled", previous=payment.status)  # fmt: skip
        return created

    def _ensure_runs(self, payment_id: int) -> None:
        with self.engine.connect() as conn:
            ids = (
                conn.execute(
                    select(_O.c.id).where(
                        _O.c.payment_id == payment_id,
                        _O.c.status.in_(ACTIVE),
                        _O.c.run_attempt <= _O.c.attempts,
                        _O.c.next_attempt_at <= self.clock.now() + self.horizon,
                    )
                )
                .scalars()
                .all()
            )
        for occ_id in ids:
            ensure_run(self.client, OCCURRENCES, int(occ_id))

    # -- helpers --------------------------------------------------------------------

    def _lock(self, conn: Connection, payment_id: int) -> Any:
        stmt = select(_P).where(_P.c.id == payment_id)
        if conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        row = conn.execute(stmt).one_or_none()
        if row is None:
            raise NotFound(f"no recurring payment {payment_id}")
        return row

    def _transition(
        self, payment_id: int, allowed: tuple[str, ...], status: str, reason: str | None
    ) -> PaymentRow:
        now = self.clock.now()
        with self.engine.begin() as conn:
            row = self._lock(conn, payment_id)
            if row.status not in allowed:
                raise StateConflict(f"recurring payment {payment_id} is {row.status}")
            set_payment_status(conn, payment_id, int(row.version), status, now, reason,
                               previous=row.status)  # fmt: skip
        out = self.get(payment_id)
        assert out is not None
        return out

    def _by_request(self, request_key: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(select(_P).where(_P.c.request_key == request_key)).one_or_none()

    def _replay(self, row: Any, digest: str) -> PaymentRow:
        if row.request_hash != digest:
            raise IdempotencyConflict(
                f"idempotency key {row.request_key!r} was used for a different payment; nothing changed"
            )
        return payment_row(row)

    def _normalise(self, new: NewRecurringPayment) -> dict[str, Any]:
        if not new.request_key or len(new.request_key) > 255:
            raise InvalidRequest("the idempotency key must be 1–255 characters")
        if new.on_final_failure not in ("skip", "pause"):
            raise InvalidRequest("on_final_failure must be skip or pause")
        if new.from_account == new.to_account:
            raise InvalidRequest("the two accounts are the same")
        if new.memo is not None and len(new.memo) > 140:
            raise InvalidRequest("the memo is at most 140 characters")
        if not self.banks.has(new.bank):
            raise InvalidRequest(f"unknown bank {new.bank!r}")
        timezone = new.timezone or self._customer_timezone(new)
        try:
            currency = check_currency(new.currency)
            amount_minor = to_minor(new.amount, currency)
            time_of_day = parse_time_of_day(new.time_of_day).strftime("%H:%M")
            convention = parse_convention(new.convention).value
            execution_date(new.start_date, convention, new.calendar)  # validates the calendar
            zone(timezone)
            Recurrence(
                frequency=new.frequency,
                start=new.start_date,
                interval=new.interval,
                day_of_month=new.day_of_month,
                weekday=new.weekday,
                rrule=new.rrule,
                count=new.count,
                end=new.end_date,
            )
        except (MoneyError, ValueError, SpecError) as exc:
            raise InvalidRequest(str(exc)) from None
        if amount_minor <= 0:
            raise InvalidRequest("the amount must be greater than zero")
        return {
            "from_account": new.from_account,
            "to_account": new.to_account,
            "amount_minor": amount_minor,
            "currency": currency,
            "memo": new.memo,
            "bank": new.bank,
            "frequency": new.frequency,
            "interval": new.interval,
            "day_of_month": new.day_of_month,
            "weekday": new.weekday,
            "rrule": new.rrule,
            "start_date": new.start_date,
            "end_date": new.end_date,
            "count": new.count,
            "time_of_day": time_of_day,
            "timezone": timezone,
            "convention": convention,
            "calendar": new.calendar,
            "on_final_failure": new.on_final_failure,
            "customer_id": new.customer_id,
            "policy": [
                new.policy.max_attempts,
                int(new.policy.retry_every.total_seconds()),
                int(new.policy.retry_window.total_seconds()),
            ],
        }

    def _customer_timezone(self, new: NewRecurringPayment) -> str:
        with self.engine.connect() as conn:
            customer_id = new.customer_id
            if customer_id is None:
                customer_id = conn.execute(
                    select(accounts.c.customer_id).where(accounts.c.id == new.from_account)
                ).scalar()
            if customer_id is None:
                return "UTC"
            tz = conn.execute(
                select(customers.c.timezone).where(customers.c.id == customer_id)
            ).scalar()
        return str(tz) if tz else "UTC"

    def _owner(
        self, conn: Connection, new: NewRecurringPayment, body: dict[str, Any]
    ) -> int | None:
        if body["bank"] != "ledger":
            return new.customer_id
        rows = {
            r.id: r
            for r in conn.execute(
                select(accounts).where(accounts.c.id.in_([new.from_account, new.to_account]))
            ).all()
        }
        for account_id in (new.from_account, new.to_account):
            row = rows.get(account_id)
            if row is None:
                raise InvalidRequest(f"no account ending {account_id[-4:]}")
            if row.status != "open":  # as for a transfer: it could only ever fail
                raise InvalidRequest(f"account ending {account_id[-4:]} is closed")
            if row.currency != body["currency"]:
                raise InvalidRequest(f"account ending {account_id[-4:]} holds {row.currency}")
        owner = rows[new.from_account].customer_id
        if new.customer_id is not None and owner is not None and owner != new.customer_id:
            raise InvalidRequest("the debit account does not belong to this customer")
        return new.customer_id if new.customer_id is not None else owner


def _created_entry(
    payment_id: int,
    body: dict[str, Any],
    request_key: str,
    customer_id: int | None,
    first: PlannedOccurrence,
) -> AuditEntry:
    """The audit event of a new payment: its money terms (masked) and its recurrence."""
    accounts_of = (body["from_account"], body["to_account"])
    recurrence = ("frequency", "interval", "day_of_month", "weekday", "rrule", "start_date",
                  "end_date", "count", "time_of_day", "timezone", "convention", "calendar",
                  "on_final_failure", "bank", "memo")  # fmt: skip
    details = {
        **money_terms(*accounts_of, body["amount_minor"], body["currency"]),
        **{k: body[k] for k in recurrence},
        "customer_id": customer_id,
        "first_execute_at": first.execute_at,
        "request_key": safe_key(request_key, *accounts_of),
    }
    return AuditEntry("recurring_payment.create", "recurring_payment", payment_id, details)


def _audited_terms(payment: PaymentRow, values: dict[str, Any]) -> dict[str, Any]:
    """The payment's terms named in ``values`` as the audit trail shows them (amount as text)."""
    shown: dict[str, Any] = {}
    for key in values:
        if key == "amount_minor":
            shown["amount"] = str(from_minor(payment.amount_minor, payment.currency))
        else:
            shown[key] = getattr(payment, key)
    return shown


def _occurrence_entry(
    occ_id: int, payment: PaymentRow, occ: PlannedOccurrence, status: str
) -> AuditEntry:
    """The audit event of an occurrence made: when it executes (or that it was skipped)."""
    verb = "skip" if status == "skipped" else "schedule"
    details = {
        "payment_id": payment.id,
        "seq": occ.seq,
        "unadjusted_date": occ.unadjusted_date,
        "execution_date": occ.execution_date,
        "execute_at": occ.execute_at,
        **money_terms(payment.from_account, payment.to_account, payment.amount_minor,
                      payment.currency),
    }  # fmt: skip
    return AuditEntry(f"occurrence.{verb}", "occurrence", occ_id, details)


def _changed_terms(current: PaymentRow, change: PaymentChange) -> dict[str, Any]:
    """The columns ``change`` sets to new values, validated."""
    values: dict[str, Any] = {}
    if not isinstance(change.amount, Keep):
        values["amount_minor"] = _amount_minor(change.amount, current.currency)
    if not isinstance(change.memo, Keep):
        if change.memo is not None and len(change.memo) > 140:
            raise InvalidRequest("the memo is at most 140 characters")
        values["memo"] = change.memo
    if not isinstance(change.end_date, Keep):
        values["end_date"] = change.end_date
    if not isinstance(change.count, Keep):
        values["count"] = change.count
    if not isinstance(change.time_of_day, Keep):
        try:
            values["time_of_day"] = parse_time_of_day(change.time_of_day).strftime("%H:%M")
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
    return {k: v for k, v in values.items() if getattr(current, k) != v}


def _amount_minor(amount: str, currency: str) -> int:
    try:
        minor = to_minor(amount, currency)
    except MoneyError as exc:
        raise InvalidRequest(str(exc)) from None
    if minor <= 0:
        raise InvalidRequest("the amount must be greater than zero")
    return minor


def _check_idle(conn: Connection, payment_id: int) -> None:
    """Refuse a change while an occurrence is under way: it would be paid on mixed terms."""
    busy = conn.execute(
        select(_O.c.unadjusted_date, _O.c.status)
        .where(_O.c.payment_id == payment_id, _O.c.status.in_(ACTIVE))
        .order_by(_O.c.seq)
        .limit(1)
    ).first()
    if busy is not None:
        raise StateConflict(
            f"the occurrence of {busy.unadjusted_date.isoformat()} is {busy.status}; "
            "change the payment once it has run"
        )


def _next_after_change(current: PaymentRow, changed: PaymentRow, now: datetime) -> datetime | None:
    """When the next occurrence not made yet executes under the changed terms.

    :raises InvalidRequest: the terms are wrong, end before an occurrence already made,
        leave no occurrence at all, or move an active payment's next one into the past
        (it would be paid at once, at a time nobody asked for).
    """
    try:
        plan = changed.plan
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    made = current.next_index
    if made and plan.occurrence(made - 1) is None:
        raise InvalidRequest(
            f"{made} occurrence(s) are made already; the end may not come before the last of them"
        )
    following = plan.occurrence(made)
    if following is None:
        if not made:
            raise InvalidRequest("the payment would have no occurrence (check end and count)")
        return None
    planned = current.plan.occurrence(made)
    moved = planned is None or planned.execute_at != following.execute_at
    if current.status == "active" and moved and following.execute_at < now:
        raise InvalidRequest(
            f"the occurrence of {following.unadjusted_date.isoformat()} would execute at "
            f"{following.execute_at.isoformat()}, which has passed; change it after that occurrence"
        )
    return following.execute_at


def _plan_of(body: dict[str, Any]) -> PaymentPlan:
    return PaymentPlan(
        Recurrence(
            frequency=body["frequency"],
            start=body["start_date"],
            interval=body["interval"],
            day_of_month=body["day_of_month"],
            weekday=body["weekday"],
            rrule=body["rrule"],
            count=body["count"],
            end=body["end_date"],
        ),
        body["time_of_day"],
        body["timezone"],
        body["convention"],
        body["calendar"],
    )
