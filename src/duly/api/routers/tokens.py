"""``/tokens``: create (the token shown once), list and revoke API tokens.

Admins manage tokens; auditors may read who holds which (never a secret).
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import Field

from duly.api.context import Ctx
from duly.api.errors import ApiError
from duly.api.money import RefId
from duly.api.pagination import Cursor, Limit, Page, decode_cursor, page_of
from duly.api.paths import API_PREFIX
from duly.api.schemas import Request as Body
from duly.api.schemas import Response
from duly.api.security import principal_of, roles
from duly.auth.durations import parse_duration
from duly.auth.roles import Role
from duly.auth.service import TokenRow

router = APIRouter(prefix=f"{API_PREFIX}/tokens", tags=["tokens"])


class TokenIn(Body):
    """A token to issue."""

    # The service's rule (duly.auth.tokens.check_name), so a name it refuses is a 422 here.
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    role: Role
    expires_in: str | None = Field(None, max_length=16, examples=["90d"],
                                   description="Lifetime: `90d`, `12h` or `30m`; none: no expiry.")  # fmt: skip
    customers: list[RefId] = Field(default_factory=list, max_length=1000,
                                   description="channel only: the customers it acts for (a customer's history).")  # fmt: skip


class Token(Response):
    """A token, without its secret."""

    id: str
    name: str
    role: Role
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None
    last_used_at: datetime | None
    customers: list[int] = Field(description="The customers a channel token acts for.")


class IssuedToken(Token):
    """A token just issued; ``token`` is shown this once and never stored."""

    token: str


def token_out(row: TokenRow) -> Token:
    """The API's view of a token."""
    return Token.model_validate(row)


def _actor(request: Request) -> str:
    who = principal_of(request)
    return f"token:{who.token_id}:{who.name}"


@router.get("", summary="Every token, revoked ones included", **roles(Role.ADMIN, Role.AUDITOR))
def list_tokens(ctx: Ctx, limit: Limit = 50, cursor: Cursor = None) -> Page[Token]:
    after = decode_cursor(cursor, int)
    rows = ctx.tokens.list()
    start = after or 0
    return page_of(rows[start : start + limit + 1], limit, token_out, lambda _r: start + limit)


@router.post("", status_code=201, summary="Issue a token (shown once)", **roles(Role.ADMIN))
def create_token(ctx: Ctx, request: Request, body: TokenIn) -> IssuedToken:
    try:
        lifetime = parse_duration(body.expires_in) if body.expires_in is not None else None
    except ValueError as exc:
        raise ApiError(422, f"expires_in: {exc}") from None
    created = ctx.tokens.create(body.name, body.role, created_by=_actor(request),
                                expires_in=lifetime, customers=body.customers)  # fmt: skip
    return IssuedToken(**token_out(created.row).model_dump(), token=created.text)


@router.get("/{token_id}", summary="One token", **roles(Role.ADMIN, Role.AUDITOR))
def get_token(ctx: Ctx, token_id: str) -> Token:
    row = ctx.tokens.get(token_id)
    if row is None:
        raise ApiError(404, f"no token {token_id!r}")
    return token_out(row)


@router.post("/{token_id}/revoke", summary="Revoke a token (by id or name)", **roles(Role.ADMIN))
def revoke_token(ctx: Ctx, request: Request, token_id: str) -> Token:
    return token_out(ctx.tokens.revoke(token_id, revoked_by=_actor(request)))
