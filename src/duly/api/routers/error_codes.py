"""``/error-codes``: the error taxonomy — every code a run, a transfer or a balance read ends with.

Read from the ``error_codes`` table (seeded from ``banking/catalog.py`` by migration 0002),
with the severity and the action operators (and customers) are told to take.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from duly.api.context import Ctx
from duly.api.errors import ApiError
from duly.api.pagination import Cursor, Limit, Page, decode_cursor, page_of
from duly.api.paths import API_PREFIX
from duly.api.routers._monitoring import CODE_PATTERN
from duly.api.schemas import Response
from duly.api.security import READ_ALL, roles
from duly.banking.catalog import ErrorCodeInfo, error_code_get, error_code_list

router = APIRouter(prefix=f"{API_PREFIX}/error-codes", tags=["error-codes"])

Severity = Literal["critical", "high", "medium", "low"]


class ErrorCode(Response):
    """One code of the taxonomy."""

    code: str
    description: str
    severity: Severity
    suggested_action: str
    transient: bool
    """Whether the failure is usually temporary (retried automatically)."""


def code_out(info: ErrorCodeInfo) -> ErrorCode:
    """The API's view of a taxonomy entry."""
    return ErrorCode.model_validate(info)


@router.get("", summary="The error taxonomy, by code", **roles(*READ_ALL))
def list_error_codes(
    ctx: Ctx,
    severity: Annotated[Severity | None, Query(description="Only this severity.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[ErrorCode]:
    after: str | None = decode_cursor(cursor, str)
    if after is not None and re.fullmatch(CODE_PATTERN, after) is None:  # forged: e.g. a NUL
        raise ApiError(422, "cursor: not a cursor this list gave out", code="INVALID_CURSOR")
    rows = error_code_list(ctx.store.engine, severity=severity, after=after, limit=limit + 1)
    return page_of(rows, limit, code_out, lambda r: r.code)


@router.get("/{code}", summary="One error code", **roles(*READ_ALL))
def get_error_code(
    ctx: Ctx, code: Annotated[str, Path(pattern=CODE_PATTERN, description="e.g. `TIMEOUT`.")]
) -> ErrorCode:
    info = error_code_get(ctx.store.engine, code)
    if info is None:
        raise ApiError(404, f"no error code {code!r}")
    return code_out(info)
