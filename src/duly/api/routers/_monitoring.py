"""What the monitoring routers share (balance checks, errors, alerts): ids, periods, actors.

Not a router. Ids are bounded to 64 bits here because a larger number (in a path, a filter
or a forged cursor) would overflow the database driver and answer 500 instead of 4xx.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Path, Request

from duly.api.errors import ApiError
from duly.api.pagination import decode_cursor
from duly.api.security import principal_of

__all__ = ["CODE_PATTERN", "MAX_ID", "Id", "actor_of", "bounds", "id_cursor", "period"]

#: The largest id a BIGINT (and SQLite's INTEGER) holds.
MAX_ID = 2**63 - 1

#: What an error code looks like (``TIMEOUT``); anything else, a NUL byte included, is 422.
CODE_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"

Id = Annotated[int, Path(ge=1, le=MAX_ID, description="The id.")]


def id_cursor(cursor: str | None) -> int | None:
    """The id in a cursor of an id-ordered list (None for the first page); 422 otherwise."""
    key: int | None = decode_cursor(cursor)
    if key is not None and not 1 <= key <= MAX_ID:
        raise ApiError(422, "cursor: not a cursor this list gave out", code="INVALID_CURSOR")
    return key


def _utc(value: datetime, name: str) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before datetime.min in UTC
        raise ApiError(422, f"{name}: outside the supported range") from None


def bounds(
    since: datetime | None, until: datetime | None
) -> tuple[datetime | None, datetime | None]:
    """Optional ``[since, until)`` bounds of a list, in UTC; 422 unless since < until."""
    start = _utc(since, "since") if since is not None else None
    end = _utc(until, "until") if until is not None else None
    if start is not None and end is not None and start >= end:
        raise ApiError(422, "since must be before until")
    return start, end


def period(
    now: datetime,
    since: datetime | None,
    until: datetime | None,
    *,
    default: timedelta,
    longest: timedelta,
) -> tuple[datetime, datetime]:
    """The period ``[since, until)`` of an aggregate, in UTC, as the CLI reads it.

    ``until`` defaults to ``now`` and ``since`` to ``default`` before ``until``; 422 unless
    since < until and the period is at most ``longest`` (the figures read every row of it).
    """
    end = _utc(until, "until") if until is not None else now.astimezone(UTC)
    if since is not None:
        start = _utc(since, "since")
    else:
        try:
            start = end - default
        except OverflowError:
            raise ApiError(422, "until: outside the supported range") from None
    if start >= end:
        raise ApiError(422, "since must be before until")
    if end - start > longest:
        raise ApiError(422, f"the period may be at most {longest.days} days",
                       code="PERIOD_TOO_LONG")  # fmt: skip
    return start, end


def actor_of(request: Request) -> str:
    """Who a change is recorded as: the calling token's id and name."""
    return principal_of(request).recorded_as
