"""How commands show money, accounts, attempts and times, and read instants from flags."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from duly.cli.common import fail


def money(minor: int, currency: str) -> str:
    from duly.banking.money import format_money

    return format_money(minor, currency)


def mask(account_id: str) -> str:
    from duly.banking.money import mask_account

    return mask_account(account_id)


def attempt_line(a: Any) -> str:
    ms = a.execution_time_ms if a.execution_time_ms is not None else "-"
    error = f" {a.error_code}: {a.error_message}" if a.error_code else ""
    return (
        f"    #{a.attempt} {a.status:<11} node={a.node} started={iso(a.started_at)} ms={ms}{error}"
    )


def iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else "-"


def parse_instant(text: str, flag: str) -> datetime:
    from datetime import UTC

    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{flag} {text!r} is not an ISO-8601 date-time")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def parse_after(text: str, tz: str) -> datetime:
    """Read ``--after``: an aware ISO instant, or a naive one read in the schedule's zone."""
    from zoneinfo import ZoneInfo

    from duly.timing import SpecError

    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise SpecError(f"--after {text!r} is not an ISO-8601 date-time") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(tz))
    return value
