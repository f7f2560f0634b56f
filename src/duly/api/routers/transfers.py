"""``/transfers``: schedule a one-off transfer at a local date and time, list, read,
cancel and reschedule one that has not started.

The same :class:`~duly.operations.transfers.service.ScheduledTransfers` service as
``duly transfers``. ``POST /transfers`` takes an ``Idempotency-Key``: the key (scoped to
the calling token) is the transfer's own ``request_key``, so the same key never makes two
transfers, even when the API's own record of the answer is lost.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

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
    Memo,
    MoneyDate,
    PathId,
    RefId,
    TimeOfDay,
    Zone,
    after_id,
    request_key,
)
from duly.api.pagination import Cursor, Limit, Page, page_of
from duly.api.paths import API_PREFIX
from duly.api.schemas import Amount, Currency, Response, decimal_text
from duly.api.schemas import Request as Body
from duly.api.security import ALL, roles
from duly.auth.roles import Role
from duly.banking.customers import Customers
from duly.operations.transfers.models import NewTransfer, TransferRow
from duly.operations.transfers.service import ScheduledTransfers

router = APIRouter(prefix=f"{API_PREFIX}/transfers", tags=["transfers"])

#: Who may move money: everyone but the auditor (the channel acts for its customers).
MOVERS = (Role.ADMIN, Role.OPERATOR, Role.CHANNEL)

TransferStatus = Literal["scheduled", "executing", "executed", "failed", "cancelled"]
BankName = Annotated[
    str, Field(min_length=1, max_length=32, pattern=r"^[a-z0-9_-]+$",
               description="Which bank moves the money: `ledger` (duly's own) or a registered one.")
]  # fmt: skip


class TransferIn(Body):
    """A transfer to schedule: ``amount`` from one account to another at a local date and time."""

    from_account: AccountRef
    to_account: AccountRef
    amount: Amount
    currency: Currency
    local_date: MoneyDate = Field(description="The date wanted, before business-day adjustment.")
    local_time: TimeOfDay = "09:00"
    timezone: Zone | None = Field(None, description="Default: the customer's.")
    convention: Convention = "following"
    calendar: Calendar | None = Field(None, description="Default: weekends only.")
    memo: Memo | None = None
    customer_id: RefId | None = Field(
        None, description="Whose transfer it is (checked against the debit account's owner)."
    )
    bank: BankName = "ledger"


class RescheduleIn(Body):
    """A new local date (and optionally time, convention, calendar) for a transfer."""

    local_date: MoneyDate
    local_time: TimeOfDay | None = Field(None, description="Default: the transfer's.")
    convention: Convention | None = None
    calendar: Calendar | None = None


class Transfer(Response):
    """A scheduled transfer and where it is: ``scheduled → executing → executed | failed |
    cancelled``. ``execute_at`` is the instant of ``local_time`` on ``execution_date``."""

    id: int
    status: str
    transfer_key: str
    """The bank's idempotency key for this transfer; it never changes."""
    customer_id: int | None
    bank: str
    from_account: str
    to_account: str
    amount: str
    currency: str
    memo: str | None
    local_date: date
    local_time: str
    timezone: str
    convention: str
    calendar: str | None
    execution_date: date
    execute_at: datetime
    version: int
    attempts: int
    next_attempt_at: datetime | None
    run_id: int | None
    error_code: str | None
    error_message: str | None
    executed_at: datetime | None
    cancelled_at: datetime | None
    created_at: datetime
    updated_at: datetime


def transfer_out(row: TransferRow) -> Transfer:
    """The API's view of a transfer."""
    fields = {name: getattr(row, name) for name in Transfer.model_fields if name != "amount"}
    return Transfer(**fields, amount=decimal_text(row.amount_minor, row.currency))


def _service(ctx: Ctx) -> ScheduledTransfers:
    return ScheduledTransfers(ctx.client)


def _new(body: TransferIn, key: str) -> NewTransfer:
    return NewTransfer(
        request_key=key, from_account=body.from_account, to_account=body.to_account,
        amount=body.amount, currency=body.currency, local_date=body.local_date,
        local_time=body.local_time, timezone=body.timezone, convention=body.convention,
        calendar=body.calendar, memo=body.memo, customer_id=body.customer_id, bank=body.bank,
    )  # fmt: skip


def check_customer(ctx: Ctx, customer_id: int | None) -> None:
    """422 for a ``customer_id`` naming no customer (before anything refers to it)."""
    if customer_id is not None and Customers(ctx.store.engine, ctx.clock).get(customer_id) is None:
        raise ApiError(422, f"customer_id: no customer {customer_id}", code="UNKNOWN_CUSTOMER")


def _schedule(ctx: Ctx, new: NewTransfer) -> Created:
    check_customer(ctx, new.customer_id)
    row, _ = _service(ctx).create(new)
    return Created(201, transfer_out(row).model_dump(mode="json"), f"/api/v1/transfers/{row.id}")


@router.post("", status_code=201, summary="Schedule a transfer", response_model=Transfer,
             **roles(*MOVERS))  # fmt: skip
async def create_transfer(
    request: Request, ctx: Ctx, body: TransferIn, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    async def create(key: str | None) -> Created:
        return await anyio.to_thread.run_sync(_schedule, ctx, _new(body, request_key(key)))

    return await respond_once(request, ctx.keys, idempotency_key, body.model_dump(mode="json"),
                              create)  # fmt: skip


@router.get("", summary="Transfers by id, optionally one customer's or in one status",
            **roles(*ALL))  # fmt: skip
def list_transfers(
    ctx: Ctx,
    customer_id: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Only this customer's.")
    ] = None,
    status: Annotated[TransferStatus | None, Query(description="Only this status.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[Transfer]:
    rows = _service(ctx).find(customer_id=customer_id, status=status, after_id=after_id(cursor),
                              limit=limit + 1)  # fmt: skip
    return page_of(rows, limit, transfer_out, lambda r: r.id)


@router.get("/{transfer_id}", summary="One transfer", **roles(*ALL))
def get_transfer(ctx: Ctx, transfer_id: PathId) -> Transfer:
    row = _service(ctx).get(transfer_id)
    if row is None:
        raise ApiError(404, f"no transfer {transfer_id}")
    return transfer_out(row)


@router.post("/{transfer_id}/cancel", summary="Cancel a transfer that has not started",
             **roles(*MOVERS))  # fmt: skip
def cancel_transfer(ctx: Ctx, transfer_id: PathId) -> Transfer:
    return transfer_out(_service(ctx).cancel(transfer_id))


@router.post("/{transfer_id}/reschedule",
             summary="Move a transfer that has not started to another local date and time",
             **roles(*MOVERS))  # fmt: skip
def reschedule_transfer(ctx: Ctx, transfer_id: PathId, body: RescheduleIn) -> Transfer:
    row = _service(ctx).reschedule(transfer_id, body.local_date, body.local_time,
                                   convention=body.convention, calendar=body.calendar)  # fmt: skip
    return transfer_out(row)
