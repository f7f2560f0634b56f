"""``/recurring-payments``: set up, list, read, change, pause, resume and cancel recurring
payments; their occurrences so far and the next ones planned.

The same :class:`~duly.operations.recurring.service.RecurringPayments` service as
``duly recurring``. ``POST`` takes an ``Idempotency-Key`` (the payment's own request key).
A payment made here never pays anything at once: one whose first occurrence has passed is
refused (the service's catch-up is for downtime, not for a start date in the past).
"""

from __future__ import annotations

from dataclasses import fields
from datetime import date, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import anyio.to_thread
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from duly.api.context import Ctx
from duly.api.errors import ApiError
from duly.api.idempotency import Created, respond_once
from duly.api.money import (
    MAX_ID,
    AccountRef,
    Calendar,
    Convention,
    IdempotencyKey,
    Line,
    Memo,
    MoneyDate,
    PathId,
    RefId,
    TimeOfDay,
    Zone,
    after_id,
    request_key,
)
from duly.api.pagination import Cursor, Limit, Page, decode_cursor, page_of
from duly.api.paths import API_PREFIX
from duly.api.routers.transfers import MOVERS, BankName, check_customer
from duly.api.schemas import Amount, Currency, Response, decimal_text
from duly.api.schemas import Request as Body
from duly.api.security import ALL, roles
from duly.operations.recurring.models import (
    KEEP,
    NewRecurringPayment,
    OccurrenceRow,
    PaymentChange,
    PaymentRow,
)
from duly.operations.recurring.service import RecurringPayments

router = APIRouter(prefix=f"{API_PREFIX}/recurring-payments", tags=["recurring-payments"])

PaymentStatus = Literal["active", "paused", "cancelled", "completed"]
Frequency = Literal["weekly", "monthly", "quarterly", "yearly", "rrule"]
Count = Annotated[int, Field(ge=1, le=10_000, description="How many occurrences in all.")]
_MAX_SEQ = 2**31 - 1  # occurrences' seq is a 32-bit column


class RecurringPaymentIn(Body):
    """A recurring payment to set up.

    ``monthly``/``quarterly``/``yearly`` pay on ``day_of_month`` (default: the start's day;
    -1: the last day), clamped to shorter months; ``weekly`` on ``weekday`` (0 = Monday;
    default: the start's); ``rrule`` by an RFC 5545 rule on dates.
    """

    from_account: AccountRef
    to_account: AccountRef
    amount: Amount
    currency: Currency
    frequency: Frequency
    start_date: MoneyDate
    interval: int = Field(1, ge=1, le=1000, description="Every n weeks, months, quarters, years.")
    day_of_month: int | None = Field(None, ge=-1, le=31)
    weekday: int | None = Field(None, ge=0, le=6)
    rrule: Annotated[Line, Field(min_length=1, max_length=500)] | None = Field(
        None, examples=["FREQ=MONTHLY;BYMONTHDAY=-1"], description="For frequency `rrule`."
    )
    end_date: MoneyDate | None = Field(None, description="The last unadjusted date.")
    count: Count | None = None
    time_of_day: TimeOfDay = "09:00"
    timezone: Zone | None = Field(None, description="Default: the customer's.")
    convention: Convention = "following"
    calendar: Calendar | None = None
    memo: Memo | None = None
    customer_id: RefId | None = None
    bank: BankName = "ledger"
    on_final_failure: Literal["skip", "pause"] = Field(
        "skip", description="After an occurrence's final failure: pay the next (skip) or pause."
    )


class RecurringPaymentPatch(Body):
    """The terms to change; those left out stay. Null clears ``memo``, ``end_date`` or
    ``count``. They apply to every occurrence not made yet."""

    amount: Amount | None = Field(None, description="In the payment's currency.")
    memo: Memo | None = None
    end_date: MoneyDate | None = None
    count: Count | None = None
    time_of_day: TimeOfDay | None = None


class PauseIn(Body):
    """Why the payment is paused (shown as its ``status_reason``)."""

    reason: Annotated[Line, Field(min_length=1, max_length=200)] | None = None


class RecurringPayment(Response):
    """A recurring payment: ``active``, ``paused``, ``cancelled`` or ``completed`` (every
    occurrence made). ``next_execute_at``: the next occurrence not made yet."""

    id: int
    status: str
    status_reason: str | None
    customer_id: int | None
    bank: str
    from_account: str
    to_account: str
    amount: str
    currency: str
    memo: str | None
    frequency: str
    interval: int
    day_of_month: int | None
    weekday: int | None
    rrule: str | None
    start_date: date
    end_date: date | None
    count: int | None
    time_of_day: str
    timezone: str
    convention: str
    calendar: str | None
    on_final_failure: str
    version: int
    next_execute_at: datetime | None
    created_at: datetime


class Occurrence(Response):
    """One occurrence made so far: ``scheduled → executing → executed | retrying → … |
    failed | skipped | cancelled``."""

    id: int
    seq: int
    unadjusted_date: date
    execution_date: date
    execute_at: datetime
    status: str
    attempts: int
    next_attempt_at: datetime | None
    run_id: int | None
    error_code: str | None
    error_message: str | None
    executed_at: datetime | None


class PlannedOccurrence(Response):
    """An occurrence as planned (nothing stored yet); ``execute_at`` in the payment's zone."""

    seq: int
    unadjusted_date: date
    execution_date: date
    execute_at: datetime


class Preview(Response):
    """The next occurrences from now."""

    timezone: str
    occurrences: list[PlannedOccurrence]


def payment_out(row: PaymentRow) -> RecurringPayment:
    """The API's view of a recurring payment."""
    names = [n for n in RecurringPayment.model_fields if n != "amount"]
    return RecurringPayment(**{n: getattr(row, n) for n in names},
                            amount=decimal_text(row.amount_minor, row.currency))  # fmt: skip


def occurrence_out(row: OccurrenceRow) -> Occurrence:
    """The API's view of an occurrence."""
    return Occurrence.model_validate(row)


def _service(ctx: Ctx) -> RecurringPayments:
    return RecurringPayments(ctx.client)


def _found(ctx: Ctx, payment_id: int) -> PaymentRow:
    row = _service(ctx).get(payment_id)
    if row is None:
        raise ApiError(404, f"no recurring payment {payment_id}")
    return row


def _new(body: RecurringPaymentIn, key: str) -> NewRecurringPayment:
    return NewRecurringPayment(request_key=key, **body.model_dump())


def _set_up(ctx: Ctx, new: NewRecurringPayment) -> Created:
    check_customer(ctx, new.customer_id)
    row, _ = _service(ctx).create(new, catch_up=False)
    return Created(201, payment_out(row).model_dump(mode="json"),
                   f"/api/v1/recurring-payments/{row.id}")  # fmt: skip


def _change(body: RecurringPaymentPatch) -> PaymentChange:
    given: dict[str, Any] = body.model_dump(exclude_unset=True)
    if not given:
        raise ApiError(422, "nothing to change: give amount, memo, end_date, count or time_of_day")
    for required in ("amount", "time_of_day"):
        if required in given and given[required] is None:
            raise ApiError(422, f"{required}: may not be null")
    return PaymentChange(**{f.name: given.get(f.name, KEEP) for f in fields(PaymentChange)})


def _after_seq(cursor: str | None) -> int:
    after = decode_cursor(cursor, int)
    if after is None:
        return -1
    if not 0 <= after <= _MAX_SEQ:
        raise ApiError(422, "cursor: not a cursor this list gave out", code="INVALID_CURSOR")
    return int(after)


@router.post("", status_code=201, summary="Set up a recurring payment",
             response_model=RecurringPayment, **roles(*MOVERS))  # fmt: skip
async def create_recurring_payment(
    request: Request, ctx: Ctx, body: RecurringPaymentIn, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    async def create(key: str | None) -> Created:
        return await anyio.to_thread.run_sync(_set_up, ctx, _new(body, request_key(key)))

    return await respond_once(request, ctx.keys, idempotency_key, body.model_dump(mode="json"),
                              create)  # fmt: skip


@router.get("", summary="Recurring payments by id, optionally one customer's or in one status",
            **roles(*ALL))  # fmt: skip
def list_recurring_payments(
    ctx: Ctx,
    customer_id: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Only this customer's.")
    ] = None,
    status: Annotated[PaymentStatus | None, Query(description="Only this status.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[RecurringPayment]:
    rows = _service(ctx).find(customer_id=customer_id, status=status, after_id=after_id(cursor),
                              limit=limit + 1)  # fmt: skip
    return page_of(rows, limit, payment_out, lambda r: r.id)


@router.get("/{payment_id}", summary="One recurring payment", **roles(*ALL))
def get_recurring_payment(ctx: Ctx, payment_id: PathId) -> RecurringPayment:
    return payment_out(_found(ctx, payment_id))


@router.patch("/{payment_id}", summary="Change the amount, memo, end or time of day",
              **roles(*MOVERS))  # fmt: skip
def update_recurring_payment(
    ctx: Ctx, payment_id: PathId, body: RecurringPaymentPatch
) -> RecurringPayment:
    return payment_out(_service(ctx).update(payment_id, _change(body)))


@router.post("/{payment_id}/pause", summary="Pause: occurrences falling due are skipped",
             **roles(*MOVERS))  # fmt: skip
def pause_recurring_payment(
    ctx: Ctx, payment_id: PathId, body: PauseIn | None = None
) -> RecurringPayment:
    return payment_out(_service(ctx).pause(payment_id, body.reason if body else None))


@router.post("/{payment_id}/resume", summary="Pay again from now on", **roles(*MOVERS))
def resume_recurring_payment(ctx: Ctx, payment_id: PathId) -> RecurringPayment:
    return payment_out(_service(ctx).resume(payment_id))


@router.post("/{payment_id}/cancel", summary="Cancel for good; pending occurrences are cancelled",
             **roles(*MOVERS))  # fmt: skip
def cancel_recurring_payment(ctx: Ctx, payment_id: PathId) -> RecurringPayment:
    return payment_out(_service(ctx).cancel(payment_id))


@router.get("/{payment_id}/occurrences", summary="The occurrences made so far, in order",
            **roles(*ALL))  # fmt: skip
def list_occurrences(
    ctx: Ctx, payment_id: PathId, limit: Limit = 50, cursor: Cursor = None
) -> Page[Occurrence]:
    _found(ctx, payment_id)
    rows = _service(ctx).occurrences(payment_id, after_seq=_after_seq(cursor), limit=limit + 1)
    return page_of(rows, limit, occurrence_out, lambda o: o.seq)


@router.get("/{payment_id}/preview", summary="The next occurrences from now, as planned",
            **roles(*ALL))  # fmt: skip
def preview_recurring_payment(
    ctx: Ctx, payment_id: PathId, count: Annotated[int, Query(ge=1, le=1000)] = 10
) -> Preview:
    row = _found(ctx, payment_id)
    zone = ZoneInfo(row.timezone)
    planned = _service(ctx).preview(payment_id, count)
    return Preview(timezone=row.timezone, occurrences=[
        PlannedOccurrence(seq=p.seq, unadjusted_date=p.unadjusted_date,
                          execution_date=p.execution_date, execute_at=p.execute_at.astimezone(zone))
        for p in planned
    ])  # fmt: skip
