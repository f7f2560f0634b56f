"""``/customers``: list, create, read, erase personal data; a customer's accounts.

The same :class:`~duly.banking.customers.Customers` service as ``duly customers``. Erasing
deletes the name, e-mail and phone only (admins only); ledger, history and audit stay.
No route here or in ``/accounts`` shows a balance.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import anyio.to_thread
from babel import Locale, UnknownLocaleError
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field, field_validator

from duly.api.context import Ctx
from duly.api.errors import ApiError
from duly.api.idempotency import Created, respond_once
from duly.api.money import (
    LINE_PATTERN,
    IdempotencyKey,
    PathId,
    Zone,
    after_account,
    after_id,
)
from duly.api.pagination import Cursor, Limit, Page, page_of
from duly.api.paths import API_PREFIX
from duly.api.routers.accounts import Account, account_out
from duly.api.schemas import Amount, Currency, Response, decimal_text
from duly.api.schemas import Request as Body
from duly.api.security import ALL, OPS, READ_ALL, roles
from duly.auth.roles import Role
from duly.banking.customers import CustomerRow, Customers, NewCustomer
from duly.banking.money import check_currency, to_minor

router = APIRouter(prefix=f"{API_PREFIX}/customers", tags=["customers"])

Tier = Literal["standard", "premium"]
ExternalId = Annotated[
    str, Field(min_length=1, max_length=100, pattern=LINE_PATTERN,
               description="The bank's own reference for the customer (unique).")
]  # fmt: skip
_EMAIL = r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$"
Offset = Annotated[str, Field(pattern=r"^[1-9][0-9]{0,3}[mhdw]$", examples=["2d"])]


class NotificationPrefs(Body):
    """How the customer hears from duly; fields left out take the installation's defaults."""

    channels: list[Literal["email", "sms", "push"]] | None = Field(
        None, max_length=3, description="Opted-in channels (default: e-mail)."
    )
    push_token: str | None = Field(None, min_length=1, max_length=4096, pattern=LINE_PATTERN)
    reminder_offsets: list[Offset] | None = Field(
        None, max_length=10, description="When to remind before a payment: `30m`, `2h`, `1d`, `1w`."
    )
    reminders: bool | None = Field(None, description="false: no payment reminders at all.")


class CustomerIn(Body):
    """A new customer. ``name``, ``email`` and ``phone`` are personal data (erasable)."""

    external_id: ExternalId
    name: str | None = Field(None, min_length=1, max_length=200, pattern=LINE_PATTERN)
    email: str | None = Field(None, max_length=254, pattern=_EMAIL, examples=["ann@example.com"])
    phone: str | None = Field(None, pattern=r"^\+[1-9][0-9]{6,14}$", description="E.164.")
    timezone: Zone = "UTC"
    locale: str = Field("en", min_length=2, max_length=35, examples=["en", "de-CH"],
                        pattern=r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8}){0,3}$")  # fmt: skip
    tier: Tier = "standard"
    min_balance: Amount | None = Field(None, description="Premium only: the minimum balance.")
    min_balance_currency: Currency | None = None
    notification_prefs: NotificationPrefs = Field(default_factory=NotificationPrefs)

    @field_validator("locale")
    @classmethod
    def _known_locale(cls, value: str) -> str:
        try:
            Locale.parse(value.replace("-", "_"))
        except (UnknownLocaleError, ValueError):
            raise ValueError(f"unknown locale {value!r}") from None
        return value


class Customer(Response):
    """A customer; the personal fields are null once erased (``pii_erased_at``)."""

    id: int
    external_id: str
    tier: str
    min_balance: str | None
    min_balance_currency: str | None
    timezone: str
    locale: str
    notification_prefs: dict[str, Any]
    name: str | None
    email: str | None
    phone: str | None
    pii_erased_at: datetime | None
    created_at: datetime


def customer_out(row: CustomerRow) -> Customer:
    """The API's view of a customer."""
    minor, code = row.min_balance_minor, row.min_balance_currency
    minimum = decimal_text(minor, code) if minor is not None and code else None
    return Customer(
        id=row.id, external_id=row.external_id, tier=row.tier, min_balance=minimum,
        min_balance_currency=row.min_balance_currency, timezone=row.timezone, locale=row.locale,
        notification_prefs=row.notification_prefs, name=row.name, email=row.email,
        phone=row.phone, pii_erased_at=row.pii_erased_at, created_at=row.created_at,
    )  # fmt: skip


def people(ctx: Ctx) -> Customers:
    """The customers service on the app's database."""
    return Customers(ctx.store.engine, ctx.clock)


def found_customer(ctx: Ctx, customer_id: int) -> CustomerRow:
    """The customer ``customer_id``; 404 if there is none."""
    row = people(ctx).get(customer_id)
    if row is None:
        raise ApiError(404, f"no customer {customer_id}")
    return row


def _new_customer(body: CustomerIn) -> NewCustomer:
    """The service's request, with the rules ``duly customers add`` applies."""
    if (body.min_balance is None) != (body.min_balance_currency is None):
        raise ApiError(422, "min_balance and min_balance_currency go together")
    if body.min_balance is not None and body.tier != "premium":
        raise ApiError(422, "min_balance applies to premium customers (tier: premium)")
    code = check_currency(body.min_balance_currency) if body.min_balance_currency else None
    minimum = to_minor(body.min_balance, code) if body.min_balance is not None and code else None
    return NewCustomer(
        external_id=body.external_id, tier=body.tier, timezone=body.timezone,
        locale=body.locale, min_balance_minor=minimum, min_balance_currency=code,
        notification_prefs=body.notification_prefs.model_dump(exclude_none=True),
        name=body.name, email=body.email, phone=body.phone,
    )  # fmt: skip


def _same(row: CustomerRow, new: NewCustomer) -> bool:
    """Whether ``row`` is what ``new`` makes (the request made again after a crash)."""
    fields = ("tier", "timezone", "locale", "min_balance_minor", "min_balance_currency",
              "notification_prefs", "name", "email", "phone")  # fmt: skip
    return row.pii_erased_at is None and all(getattr(row, f) == getattr(new, f) for f in fields)


def _taken(external_id: str) -> ApiError:
    return ApiError(409, f"a customer with external id {external_id!r} exists",
                    code="ALREADY_EXISTS")  # fmt: skip


def _add(ctx: Ctx, new: NewCustomer) -> Created:
    service = people(ctx)
    existing = service.by_external_id(new.external_id)
    if existing is not None:
        if not _same(existing, new):
            raise _taken(new.external_id)
        row = existing
    else:
        try:
            row = service.add(new)
        except ValueError as exc:
            if service.by_external_id(new.external_id) is not None:  # a concurrent request won
                raise _taken(new.external_id) from None
            raise ApiError(422, str(exc)) from None
    return Created(201, customer_out(row).model_dump(mode="json"), f"/api/v1/customers/{row.id}")


@router.get("", summary="Customers by id, optionally one tier or one external id",
            **roles(*READ_ALL))  # fmt: skip
def list_customers(
    ctx: Ctx,
    tier: Annotated[Tier | None, Query(description="Only this tier.")] = None,
    external_id: Annotated[
        str | None,
        Query(min_length=1, max_length=100, pattern=LINE_PATTERN, description="Only this one."),
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[Customer]:
    after = after_id(cursor)
    service = people(ctx)
    if external_id is not None:
        one = service.by_external_id(external_id)
        rows = [one] if one and one.id > after and tier in (None, one.tier) else []
    else:
        rows = service.find(tier=tier, after_id=after, limit=limit + 1)
    return page_of(rows, limit, customer_out, lambda r: r.id)


@router.post("", status_code=201, summary="Add a customer", response_model=Customer,
             **roles(*OPS))  # fmt: skip
async def create_customer(
    request: Request, ctx: Ctx, body: CustomerIn, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    new = _new_customer(body)

    async def run(_key: str | None) -> Created:
        # the external id is the customer's own unique key: a retry finds it
        return await anyio.to_thread.run_sync(_add, ctx, new)

    return await respond_once(request, ctx.keys, idempotency_key, body.model_dump(mode="json"), run)


@router.get("/{customer_id}", summary="One customer", **roles(*ALL))
def get_customer(ctx: Ctx, customer_id: PathId) -> Customer:
    return customer_out(found_customer(ctx, customer_id))


@router.get("/{customer_id}/accounts", summary="A customer's accounts, by account number",
            **roles(*ALL))  # fmt: skip
def list_customer_accounts(
    ctx: Ctx, customer_id: PathId, limit: Limit = 50, cursor: Cursor = None
) -> Page[Account]:
    found_customer(ctx, customer_id)
    rows = people(ctx).find_accounts(customer_id=customer_id, after_id=after_account(cursor),
                                     limit=limit + 1)  # fmt: skip
    return page_of(rows, limit, account_out, lambda a: a.id)


@router.post("/{customer_id}/erase", summary="Erase personal data (name, e-mail, phone); "
             "ledger and history stay", **roles(Role.ADMIN))  # fmt: skip
def erase_customer(ctx: Ctx, customer_id: PathId) -> Customer:
    row = found_customer(ctx, customer_id)
    if row.pii_erased_at is None:  # erased once: the first erasure's time stays
        people(ctx).erase_pii(customer_id)
    return customer_out(found_customer(ctx, customer_id))
