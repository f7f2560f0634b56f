"""From a local date and time of day to the instant an operation executes.

The date is adjusted by the business-day convention against the rail's calendar first
(money dates are dates, finance-rules.md §1.4); the time of day is then read in the
customer's timezone with duly's DST rules: a time in a spring-forward gap is shifted by
the gap (02:30 → 03:30), a repeated time is the first one.
"""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from duly.banking.rails import rail_calendar
from duly.timing.business_days import adjust, parse_convention
from duly.timing.dst import GapPolicy, RepeatPolicy, resolve_wall
from duly.timing.errors import SpecError

__all__ = ["execution_date", "execution_instant", "parse_time_of_day", "zone"]


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``.

    :raises ValueError: if unknown.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r}") from None


def parse_time_of_day(text: str) -> time:
    """``"HH:MM"`` as a time.

    :raises ValueError: if it is not a valid 24-hour ``HH:MM``.
    """
    try:
        hours, minutes = text.strip().split(":")
        if len(hours) != 2 or len(minutes) != 2:
            raise ValueError
        return time(int(hours), int(minutes))
    except ValueError:
        raise ValueError(f"time of day {text!r}: use HH:MM (00:00–23:59)") from None


def execution_date(day: date, convention: str, calendar: str | None) -> date:
    """``day`` moved by ``convention`` against the rail or calendar ``calendar``.

    :raises ValueError: unknown convention or calendar.
    """
    try:
        return adjust(day, parse_convention(convention), rail_calendar(calendar))
    except SpecError as exc:
        raise ValueError(str(exc)) from None


def execution_instant(day: date, time_of_day: str, timezone: str) -> datetime:
    """The UTC instant of ``time_of_day`` on ``day`` in ``timezone`` (DST gap: shifted)."""
    wall = datetime.combine(day, parse_time_of_day(time_of_day))
    (instant,) = resolve_wall(wall, zone(timezone), GapPolicy.SHIFT, RepeatPolicy.FIRST)
    return instant
