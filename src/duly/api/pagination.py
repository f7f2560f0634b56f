"""Cursor pagination: every list answers ``{"items": [...], "next_cursor": ...}``.

A cursor is opaque to callers (URL-safe base64 of the last item's sort key), so the order
behind it can change without breaking clients. ``limit`` is 1–500, 50 by default.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from duly.api.errors import ApiError
from duly.api.schemas import MAX_ROW_ID

__all__ = ["MAX_LIMIT", "Cursor", "Limit", "Page", "decode_cursor", "encode_cursor", "page_of"]

MAX_LIMIT = 500

T = TypeVar("T")
R = TypeVar("R")

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page (1–500).")]
Cursor = Annotated[
    str | None, Query(max_length=200, description="`next_cursor` of the previous page.")
]


class Page(BaseModel, Generic[T]):
    """One page of a list; ``next_cursor`` is null on the last page."""

    items: list[T]
    next_cursor: str | None = None


def encode_cursor(key: Any) -> str:
    """The cursor that continues after the item whose sort key is ``key``."""
    raw = json.dumps(key, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, kind: type = int) -> Any:
    """The sort key in ``cursor`` (None for the first page); 422 for a cursor not ours."""
    if cursor is None or cursor == "":
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        key = None
    if not isinstance(key, kind) or isinstance(key, bool) or not _storable(key):
        raise ApiError(422, "cursor: not a cursor this list gave out", code="INVALID_CURSOR")
    return key


def _storable(key: Any) -> bool:
    """Whether the stores can compare against ``key``: an int beyond 64 bits is a driver error."""
    return not isinstance(key, int) or -MAX_ROW_ID - 1 <= key <= MAX_ROW_ID


def page_of(
    rows: Sequence[R], limit: int, item: Callable[[R], T], key: Callable[[R], Any]
) -> Page[T]:
    """A page from up to ``limit + 1`` rows: the extra row only says there is a next page."""
    more = len(rows) > limit
    shown = rows[:limit]
    cursor = encode_cursor(key(shown[-1])) if more and shown else None
    return Page[T](items=[item(r) for r in shown], next_cursor=cursor)
