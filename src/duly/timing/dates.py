"""Month arithmetic on plain dates: month lengths, clamping, occurrence k from an anchor.

Money dates are dates. A monthly schedule on day 31 pays on the last day of a shorter
month (clamping), and occurrence ``k`` is always computed from the anchor and ``k``, never
by adding a month to the previous occurrence, so the day never drifts (31 Jan → 29 Feb →
31 Mar, not → 29 Mar).
"""

from __future__ import annotations

import calendar
from datetime import date

__all__ = ["LAST_DAY", "clamp_date", "days_in_month", "nth_occurrence_date"]

#: Day value meaning "the last day of the month" wherever a day of month is asked for.
LAST_DAY = -1


def days_in_month(year: int, month: int) -> int:
    """Number of days in ``month`` (1–12) of ``year``."""
    return calendar.monthrange(year, month)[1]


def clamp_date(year: int, month: int, day: int) -> date:
    """The date ``year-month-day``, with a day past the month's end moved to its last day.

    :param day: 1–31, or :data:`LAST_DAY` (-1) for the last day of the month.
    :raises ValueError: if ``day`` is not 1–31 or -1.
    """
    if day != LAST_DAY and not 1 <= day <= 31:
        raise ValueError(f"day must be 1–31 or {LAST_DAY} (last day), not {day}")
    last = days_in_month(year, month)
    return date(year, month, last if day == LAST_DAY else min(day, last))


def nth_occurrence_date(anchor: date, k: int, months_step: int, day: int | None = None) -> date:
    """Unadjusted date of occurrence ``k`` of a schedule every ``months_step`` months.

    Occurrence 0 is in the anchor's month, occurrence ``k`` is ``k * months_step`` months
    later, on ``day`` (default: the anchor's day of month), clamped to the month's end.
    It depends only on ``anchor`` and ``k``: no drift after a short month.

    >>> nth_occurrence_date(date(2024, 1, 31), 1, 1)
    datetime.date(2024, 2, 29)
    >>> nth_occurrence_date(date(2024, 1, 31), 2, 1)
    datetime.date(2024, 3, 31)

    :param months_step: 1 monthly, 3 quarterly, 12 yearly (any positive number).
    :param day: 1–31, or :data:`LAST_DAY` (-1) for the last day of each month.
    :raises ValueError: if ``months_step`` < 1, ``day`` is out of range, or the date
        falls outside years 1–9999.
    """
    if months_step < 1:
        raise ValueError(f"months_step must be at least 1, not {months_step}")
    index = anchor.year * 12 + (anchor.month - 1) + k * months_step
    year, month0 = divmod(index, 12)
    return clamp_date(year, month0 + 1, anchor.day if day is None else day)
