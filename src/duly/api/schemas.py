"""Pydantic types every router shares: money, instants, strict request bodies."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Path
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from duly.banking.money import from_minor

__all__ = [
    "MAX_ROW_ID",
    "Amount",
    "Currency",
    "Instant",
    "Request",
    "Response",
    "RowId",
    "decimal_text",
    "utc",
]


class Request(BaseModel):
    """A request body: unknown fields are refused, so a typo is an error, not a no-op."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        # Free-form JSON (a job's `args`) is checked too: PostgreSQL refuses NUL in text and
        # `\u0000`, NaN or Infinity in JSON, and no JSON client reads NaN back. Refused here,
        # a 422, instead of a driver error (a 500) wherever the value is written or compared.
        problem = _unstorable(data)
        if problem is not None:
            raise ValueError(problem)
        return data


def _unstorable(value: Any, where: str = "") -> str | None:
    """Why ``value`` (parsed JSON) cannot be stored as it is, naming where in it; or None."""
    at = f"{where}: " if where else ""
    if isinstance(value, str):
        return f"{at}text may not contain NUL characters (\\u0000)" if "\x00" in value else None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{at}numbers must be finite (no NaN or Infinity)"
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{where}.{key}" if where else str(key)
            problem = _unstorable(key, f"{inner} (the key)") or _unstorable(item, inner)
            if problem is not None:
                return problem
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            problem = _unstorable(item, f"{where}[{i}]")
            if problem is not None:
                return problem
    return None


class Response(BaseModel):
    """A response body."""

    model_config = ConfigDict(from_attributes=True)


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("give a UTC offset, e.g. 2026-03-05T14:00:00+00:00")
    try:
        value.astimezone(UTC)  # the stores compare in UTC: 0001-01-01T00:00+01:00 is before year 1
    except OverflowError:
        raise ValueError("out of range: the instant in UTC must fall in years 1–9999") from None
    return value


MAX_ROW_ID = 2**63 - 1
"""The largest id a row can have: both stores keep ids as signed 64-bit integers, and a
larger number sent to either is a driver error (a 500), not a row that is missing."""

RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="The object's numeric id.")]
"""A numeric id in a path: out of range is 422, a valid one naming nothing 404."""

Instant = Annotated[datetime, AfterValidator(_aware)]
"""An ISO-8601 date-time with its offset (a naive one is refused)."""

Amount = Annotated[
    str,
    Field(
        pattern=r"^[0-9]{1,15}(\.[0-9]{1,4})?$",
        description="A positive decimal amount as text, e.g. `125.50`; never a number.",
        examples=["125.50"],
    ),
]
Currency = Annotated[
    str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code.", examples=["EUR"])
]


def decimal_text(minor: int, currency: str) -> str:
    """An amount in minor units as the API writes it: a decimal string."""
    return str(from_minor(minor, currency))


def utc(value: datetime | None) -> datetime | None:
    """``value`` in UTC (the store's times are aware; this only normalises the offset)."""
    return value.astimezone(UTC) if value is not None else None
