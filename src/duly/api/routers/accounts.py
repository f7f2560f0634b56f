"""``/accounts``: customers' ledger accounts — open (with an optional opening deposit),
list, read, close.

The same :class:`~duly.banking.customers.Customers` service as ``duly accounts``. No answer
carries a balance: balances are the ledger's, read where they are needed, never here. The
bank's own accounts (funding, settlement: no customer) are not found here.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from duly.api.context import Ctx
from duly.api.errors import ApiError
from duly.api.idempotency import Created, respond_once
from duly.api.money import MAX_ID, IdempotencyKey, PathAccount, RefId, after_account
from duly.api.pagination import Cursor, Limit, Page, page_of
from duly.api.paths import API_PREFIX
from duly.api.schemas import Amount, Currency, Response, decimal_text
from duly.api.schemas import Request as Body
from duly.api.security import ALL, OPS, READ_ALL, roles
from duly.banking.customers import AccountRow, Customers, NewAccount
from duly.banking.errors import BankingError
from duly.banking.ledger import LedgerBank
from duly.banking.money import check_currency, mask_account, to_minor

router = APIRouter(prefix=f"{API_PREFIX}/accounts", tags=["accounts"])

AccountNumber = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", examples=["GB00EVE00000000001234"],
               description="The account number: 1–64 letters, digits, `.`, `_` or `-`.")
]  # fmt: skip


class AccountIn(Body):
    """An account to open for a customer."""

    id: AccountNumber
    customer_id: RefId
    currency: Currency
    overdraft_limit: Amount = Field("0", description="How far below zero it may go.")
    opening_deposit: Amount | None = Field(
        None, description="Posted from the bank's funding account with the opening."
    )


class Account(Response):
    """A customer's account (no balance: see the ledger)."""

    id: str
    masked: str
    """The number as shown to people and in logs: ``****1234``."""
    customer_id: int | None
    currency: str
    overdraft_limit: str | None
    """Null: no limit (only the bank's own accounts)."""
    status: str
    created_at: datetime
    closed_at: datetime | None


def account_out(row: AccountRow) -> Account:
    """The API's view of an account."""
    limit = row.overdraft_limit_minor
    return Account(
        id=row.id, masked=row.masked, customer_id=row.customer_id, currency=row.currency,
        overdraft_limit=decimal_text(limit, row.currency) if limit is not None else None,
        status=row.status, created_at=row.created_at, closed_at=row.closed_at,
    )  # fmt: skip


def _people(ctx: Ctx) -> Customers:
    return Customers(ctx.store.engine, ctx.clock)


def _customer_account(ctx: Ctx, account_id: str) -> AccountRow:
    row = _people(ctx).account(account_id)
    if row is None or row.customer_id is None:
        raise ApiError(404, f"no customer account {mask_account(account_id)}")
    return row


def _open(ctx: Ctx, new: NewAccount, deposit: int) -> Created:
    """Open ``new`` with its deposit, or neither; an identical account already there is this
    very request made again (the account number is the account's own unique key)."""
    service = _people(ctx)
    existing = service.account(new.id)
    if existing is not None:
        same = (existing.customer_id, existing.currency, existing.overdraft_limit_minor) == (
            new.customer_id, new.currency, new.overdraft_limit_minor)  # fmt: skip
        if not same:
            raise ApiError(409, f"account {existing.masked} exists", code="ALREADY_EXISTS")
        return _created(existing)
    if new.customer_id is None or service.get(new.customer_id) is None:
        raise ApiError(422, f"customer_id: no customer {new.customer_id}", code="UNKNOWN_CUSTOMER")
    engine = ctx.store.engine
    try:
        with engine.begin() as conn:
            row = service.open_account(new, conn=conn)
            if deposit:
                # the key names the account by a digest, never its number (keys are logged)
                digest = hashlib.sha256(new.id.encode()).hexdigest()[:20]
                LedgerBank(engine, ctx.clock).fund(
                    new.id, deposit, new.currency, f"opening-deposit:{digest}", conn=conn
                )
    except (ValueError, BankingError) as exc:
        if service.account(new.id) is not None:  # a concurrent request opened it
            raise ApiError(409, f"account {mask_account(new.id)} exists",
                           code="ALREADY_EXISTS") from None  # fmt: skip
        raise ApiError(422, str(exc)) from None
    return _created(row)


def _created(row: AccountRow) -> Created:
    return Created(201, account_out(row).model_dump(mode="json"), f"/api/v1/accounts/{row.id}")


@router.get("", summary="Customers' accounts by account number", **roles(*READ_ALL))
def list_accounts(
    ctx: Ctx,
    customer_id: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Only this customer's.")
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[Account]:
    rows = _people(ctx).find_accounts(customer_id=customer_id, after_id=after_account(cursor),
                                      limit=limit + 1)  # fmt: skip
    return page_of(rows, limit, account_out, lambda a: a.id)


@router.post("", status_code=201, summary="Open an account for a customer",
             response_model=Account, **roles(*OPS))  # fmt: skip
async def open_account(
    request: Request, ctx: Ctx, body: AccountIn, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    currency = check_currency(body.currency)
    limit = to_minor(body.overdraft_limit, currency)
    deposit = to_minor(body.opening_deposit, currency) if body.opening_deposit is not None else 0
    new = NewAccount(body.id, currency, body.customer_id, limit)

    async def run(_key: str | None) -> Created:
        return await anyio.to_thread.run_sync(_open, ctx, new, deposit)

    return await respond_once(request, ctx.keys, idempotency_key, body.model_dump(mode="json"), run)


@router.get("/{account_id}", summary="One customer account", **roles(*ALL))
def get_account(ctx: Ctx, account_id: PathAccount) -> Account:
    return account_out(_customer_account(ctx, account_id))


@router.post("/{account_id}/close", summary="Close an account: nothing may debit or credit it",
             **roles(*OPS))  # fmt: skip
def close_account(ctx: Ctx, account_id: PathAccount) -> Account:
    current = _customer_account(ctx, account_id)
    if current.status == "closed":
        raise ApiError(409, f"account {current.masked} is already closed", code="STATE_CONFLICT")
    return account_out(_people(ctx).close_account(account_id))
