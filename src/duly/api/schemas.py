"""Pydantic types every router shares: money, instants, strict request bodies."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from duly.banking.money import from_minor

__all__ = ["Amount", "Currency", "Instant", "Request", "Response", "decimal_text", "utc"]


class Request(BaseModel):
    """A request body: unknown fields are refused, so a typo is an error, not a no-op."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Response(BaseModel):
    """A response body."""

    model_config = ConfigDict(from_attributes=True)


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("give a UTC offset, e.g. 2026-03-05T14:00:00+00:00")
    return value


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
