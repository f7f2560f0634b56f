"""Jinja2 filters: instants, durations, money and account numbers as people read them.

Account numbers are always masked (``****1234``) and amounts formatted from integer minor
units with their currency; no page shows a balance.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment

from duly.banking.money import format_money, mask_account

__all__ = ["duration", "install", "instant", "money"]


def instant(value: datetime | None, zone: bool = True) -> str:
    """``2026-03-02 09:30:00 UTC`` (or the instant in its own offset with ``zone``=False)."""
    if value is None:
        return "—"
    if not zone:
        return value.strftime("%Y-%m-%d %H:%M %Z").strip()
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    """``950 ms``, ``12.3 s``, ``4 min 05 s``, ``1 h 02 min``."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def money(minor: int, currency: str) -> str:
    """An amount in minor units with its currency (``GBP 950.00``)."""
    return format_money(minor, currency)


def _json(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True, default=str)


def install(env: Environment) -> None:
    """Make the filters available to every template."""
    env.filters.update(instant=instant, duration=duration, money=money, masked=mask_account,
                       json=_json)  # fmt: skip
