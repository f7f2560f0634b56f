"""Request types and helpers the money routers share (customers, accounts, transfers,
recurring payments).

Every value a caller sends is bounded here before it reaches a service or the database:
ids fit a signed 64-bit column, text carries no control characters (PostgreSQL refuses a
NUL byte with an error, not a 4xx), dates stay in years the calendars and clocks handle.
"""

from __future__ import annotations

import re
import uuid
from datetime import date
from typing import Annotated, Literal

from fastapi import Header, Path
from pydantic import AfterValidator, Field

from duly.api.errors import ApiError
from duly.api.pagination import decode_cursor

__all__ = [
    "FIRST_DATE",
    "LAST_DATE",
    "LINE_PATTERN",
    "MAX_ID",
    "AccountRef",
    "Calendar",
    "Convention",
    "IdempotencyKey",
    "Line",
    "Memo",
    "MoneyDate",
    "PathAccount",
    "PathId",
    "RefId",
    "TimeOfDay",
    "Zone",
    "after_account",
    "after_id",
    "request_key",
]

MAX_ID = 2**63 - 1
"""The largest id a store holds (a signed 64-bit integer)."""

FIRST_DATE = date(2000, 1, 1)
LAST_DATE = date(2199, 12, 31)

LINE_PATTERN = r"^[^\x00-\x1f\x7f]*$"
"""One line of text: no control characters (a NUL byte would fail in PostgreSQL)."""

PathId = Annotated[int, Path(ge=1, le=MAX_ID, description="The object's id.")]
RefId = Annotated[int, Field(ge=1, le=MAX_ID)]
Line = Annotated[str, Field(pattern=LINE_PATTERN)]
Memo = Annotated[
    str, Field(max_length=140, pattern=LINE_PATTERN, description="At most 140 characters.")
]
AccountRef = Annotated[
    str, Field(min_length=1, max_length=64, pattern=LINE_PATTERN, description="An account number.")
]  # fmt: skip
PathAccount = Annotated[
    str, Path(min_length=1, max_length=64, pattern=LINE_PATTERN, description="The account number.")
]  # fmt: skip
Zone = Annotated[
    str, Field(min_length=1, max_length=64, pattern=LINE_PATTERN, examples=["Europe/London"],
               description="IANA timezone.")
]  # fmt: skip
TimeOfDay = Annotated[
    str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", examples=["09:00"],
               description="Local time of day, `HH:MM` (24-hour).")
]  # fmt: skip
Calendar = Annotated[
    str, Field(min_length=2, max_length=32, pattern=LINE_PATTERN, examples=["GB-BACS"],
               description="The rail (`US-FED`, `GB-BACS`, `TARGET`) or a calendar `CC[-SUBDIV]`.")
]  # fmt: skip
Convention = Literal["none", "following", "modified_following", "preceding", "modified_preceding"]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=200,
           description="The same key and body answer the first response again."),
]  # fmt: skip


def _in_range(value: date) -> date:
    if not FIRST_DATE <= value <= LAST_DATE:
        raise ValueError(f"use a date from {FIRST_DATE.isoformat()} to {LAST_DATE.isoformat()}")
    return value


MoneyDate = Annotated[date, AfterValidator(_in_range)]
"""A local date ``YYYY-MM-DD`` from 2000 to 2199 (beyond, calendars and offsets run out)."""


def after_id(cursor: str | None) -> int:
    """The id a page of an id-ordered list continues after (0 for the first page)."""
    after = decode_cursor(cursor, int)
    if after is None:
        return 0
    if not 0 <= after <= MAX_ID:
        raise ApiError(422, "cursor: not a cursor this list gave out", code="INVALID_CURSOR")
    return int(after)


def after_account(cursor: str | None) -> str:
    """The account number a page of accounts continues after (``""`` for the first page)."""
    after = decode_cursor(cursor, str)
    if after is None:
        return ""
    if len(after) > 64 or not re.fullmatch(LINE_PATTERN, after):
        raise ApiError(422, "cursor: not a cursor this list gave out", code="INVALID_CURSOR")
    return str(after)


def request_key(key: str | None) -> str:
    """The object's own request key: the caller-scoped ``Idempotency-Key``, else a fresh one."""
    return key if key is not None else f"api-{uuid.uuid4()}"
