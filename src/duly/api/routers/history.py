"""``/customers/{id}/history``: a customer's execution history as JSON pages, CSV and PDF.

Staff roles (operator, auditor, admin) read any customer's history. A ``channel`` token
reads only the customers it was created for (``duly token create --role channel
--customer ID``); for any other customer, and always for a channel token bound to none,
the answer is 403. An unknown customer is 404 first, for every role.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response as HttpResponse
from fastapi.responses import StreamingResponse
from pydantic import Field

from duly.api.context import Ctx
from duly.api.errors import ApiError
from duly.api.money import AccountRef, MoneyDate, PathId
from duly.api.pagination import Cursor, Page
from duly.api.paths import API_PREFIX
from duly.api.schemas import Amount, Currency, Response
from duly.api.security import principal_of, roles
from duly.auth.roles import Role
from duly.operations.history.export import csv_chunks
from duly.operations.history.models import (
    KINDS,
    MAX_LIMIT,
    CustomerInfo,
    HistoryEntry,
    HistoryFilter,
)
from duly.operations.history.service import (
    check_filter,
    customer_info,
    entries,
    history,
    local_range,
)
from duly.operations.history.statement import Statement, StatementStyle, render_statement

router = APIRouter(prefix=f"{API_PREFIX}/customers", tags=["history"])

_ROLES = (Role.ADMIN, Role.OPERATOR, Role.AUDITOR, Role.CHANNEL)

Kind = Literal["transfer", "recurring", "reminder", "balance_check"]
#: Every status of every kind (``STATUSES`` in the service; a test checks they agree).
Status = Literal[
    "below_minimum", "cancelled", "error", "executed", "executing", "failed", "passed",
    "pending", "retrying", "scheduled", "sending", "sent", "skipped",
]  # fmt: skip
HistoryLimit = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description=f"Entries per page (1–{MAX_LIMIT}).")
]


class Links(Response):
    """Where to read more."""

    run: str | None = Field(None, description="The engine run of the latest attempt.")


class HistoryItem(Response):
    """One operation occurrence; times in the customer's time zone, with the offset."""

    id: str = Field(description="Unique across kinds: `transfer:12`.")
    kind: Kind
    operation_id: int
    payment_id: int | None
    occurrence: str
    reference: str | None
    description: str | None
    from_account: str | None = Field(description="Masked.")
    counterparty: str | None = Field(description="Masked.")
    amount: str | None = Field(description="Decimal text; null for balance checks.")
    currency: str | None
    status: str
    scheduled_at: str
    started_at: str | None
    finished_at: str | None
    attempts: int
    failure_code: str | None
    failure_reason: str | None
    suggested_action: str | None
    links: Links


def item_out(entry: HistoryEntry) -> HistoryItem:
    """The API's view of an entry (times as ISO-8601 with the customer's offset)."""
    run = f"{API_PREFIX}/runs/{entry.run_id}" if entry.run_id is not None else None

    def iso(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    return HistoryItem(
        id=entry.id, kind=entry.kind, operation_id=entry.operation_id,
        payment_id=entry.payment_id, occurrence=entry.occurrence, reference=entry.reference,
        description=entry.description, from_account=entry.from_account,
        counterparty=entry.counterparty,
        amount=None if entry.amount is None else f"{entry.amount:f}", currency=entry.currency,
        status=entry.status, scheduled_at=entry.scheduled_at.isoformat(),
        started_at=iso(entry.started_at), finished_at=iso(entry.finished_at),
        attempts=entry.attempts, failure_code=entry.failure_code,
        failure_reason=entry.failure_reason, suggested_action=entry.suggested_action,
        links=Links(run=run),
    )  # fmt: skip


class HistoryQuery:
    """The filters every history route takes, as query parameters."""

    def __init__(
        self,
        kind: Annotated[list[Kind] | None, Query(max_length=4, description="Only these kinds (repeat).")] = None,
        status: Annotated[list[Status] | None, Query(max_length=20, description="Only these statuses (repeat).")] = None,
        from_date: Annotated[MoneyDate | None, Query(description="Scheduled on or after this day (customer's zone).")] = None,
        to_date: Annotated[MoneyDate | None, Query(description="Scheduled on or before this day (customer's zone).")] = None,
        account: Annotated[AccountRef | None, Query(description="Paid from or to this account.")] = None,
        currency: Annotated[Currency | None, Query(description="Only this currency.")] = None,
        amount_min: Annotated[Amount | None, Query(description="At least this amount.")] = None,
        amount_max: Annotated[Amount | None, Query(description="At most this amount.")] = None,
    ) -> None:  # fmt: skip
        self.kinds = tuple(dict.fromkeys(kind)) if kind else KINDS
        self.statuses = tuple(dict.fromkeys(status)) if status else None
        self.from_date, self.to_date = from_date, to_date
        self.account, self.currency = account, currency
        self.amount_min = Decimal(amount_min) if amount_min is not None else None
        self.amount_max = Decimal(amount_max) if amount_max is not None else None

    def filter(self, who: CustomerInfo) -> HistoryFilter:
        """The service's filter; 422 for one that cannot select anything meaningful."""
        if self.from_date and self.to_date and self.from_date > self.to_date:
            raise ApiError(422, "from_date is after to_date")
        since, until = local_range(who.timezone, self.from_date, self.to_date)
        flt = HistoryFilter(
            customer_id=who.id, kinds=self.kinds, statuses=self.statuses, since=since,
            until=until, account_id=self.account, currency=self.currency,
            amount_min=self.amount_min, amount_max=self.amount_max,
        )  # fmt: skip
        check_filter(flt)
        return flt


Filters = Annotated[HistoryQuery, Depends()]


def _customer(ctx: Ctx, request: Request, customer_id: int) -> CustomerInfo:
    """The customer, once the caller may see it: 404 if unknown, 403 for a channel not bound to it."""
    who = customer_info(ctx.store.engine, customer_id)
    caller = principal_of(request)
    if not caller.acts_for(customer_id):
        raise ApiError(
            403,
            f"this channel token does not act for customer {customer_id}: "
            "create one with `duly token create --role channel --customer ID`",
        )
    return who


def _filename(who: CustomerInfo, suffix: str) -> str:
    return f'attachment; filename="history-customer-{who.id}.{suffix}"'


@router.get("/{customer_id}/history", summary="A customer's execution history, newest first",
            **roles(*_ROLES))  # fmt: skip
def list_history(
    ctx: Ctx, request: Request, customer_id: PathId, filters: Filters,
    limit: HistoryLimit = 50, cursor: Cursor = None,
) -> Page[HistoryItem]:  # fmt: skip
    who = _customer(ctx, request, customer_id)
    page = history(ctx.store.engine, filters.filter(who), limit=limit, cursor=cursor or None)
    return Page[HistoryItem](
        items=[item_out(e) for e in page.entries], next_cursor=page.next_cursor
    )


@router.get(
    "/{customer_id}/history.csv",
    summary="The history as CSV (RFC 4180, UTF-8, streamed)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                     "description": "One header row, then one row per entry."}},
    **roles(*_ROLES),
)  # fmt: skip
def history_csv(
    ctx: Ctx, request: Request, customer_id: PathId, filters: Filters
) -> StreamingResponse:
    who = _customer(ctx, request, customer_id)
    flt = filters.filter(who)  # refused here, before the first byte is sent
    chunks = (chunk.encode("utf-8") for chunk in csv_chunks(entries(ctx.store.engine, flt)))
    return StreamingResponse(
        chunks,
        media_type="text/csv; charset=utf-8; header=present",
        headers={"Content-Disposition": _filename(who, "csv")},
    )


@router.get(
    "/{customer_id}/history.pdf",
    summary="The history as a PDF statement",
    response_class=HttpResponse,
    responses={200: {"content": {"application/pdf": {"schema": {"type": "string",
                                                                "format": "binary"}}},
                     "description": "A statement: heading, table, totals, page X of Y."}},
    **roles(*_ROLES),
)  # fmt: skip
def history_pdf(ctx: Ctx, request: Request, customer_id: PathId, filters: Filters) -> HttpResponse:
    who = _customer(ctx, request, customer_id)
    flt = filters.filter(who)
    pdf = render_statement(
        statement_of(who, filters.from_date, filters.to_date, ctx),
        entries(ctx.store.engine, flt),
        style_of(ctx),
    )
    return HttpResponse(
        pdf, media_type="application/pdf", headers={"Content-Disposition": _filename(who, "pdf")}
    )


def statement_of(who: CustomerInfo, first: date | None, last: date | None, ctx: Ctx) -> Statement:
    """The statement's heading: whose, which days, generated now in the customer's zone."""
    return Statement(who, first, last, ctx.clock.now().astimezone(ZoneInfo(who.timezone)))


def style_of(ctx: Ctx) -> StatementStyle:
    """The bank's name and fonts from the ``history`` settings."""
    h = ctx.settings.history
    return StatementStyle(h.bank_name, h.pdf_font, h.pdf_font_bold)
