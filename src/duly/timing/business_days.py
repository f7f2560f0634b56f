"""Business-day conventions (ISDA 2006 §4.12): moving a date that is not a business day.

``adjust(date, convention, calendar)`` leaves a business day where it is under every
convention (finance checklist item 1) and otherwise moves it:

- ``none``: never moves;
- ``following``: to the first following business day;
- ``modified_following``: following, unless that is in the next month, then preceding;
- ``preceding``: to the first preceding business day;
- ``modified_preceding``: preceding, unless that is in the previous month, then following.

Every convention is monotone: if ``a <= b`` then ``adjust(a) <= adjust(b)``. Schedules
rely on it to emit each adjusted date once and in order.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum

from duly.timing.calendars import BusinessCalendar
from duly.timing.errors import SpecError

__all__ = ["Convention", "adjust", "parse_convention"]


class Convention(StrEnum):
    """A business-day convention; the value is its spelling in specs, JSON and the CLI."""

    NONE = "none"  #: no adjustment
    FOLLOWING = "following"  #: next business day
    MODIFIED_FOLLOWING = "modified_following"  #: next, unless in the next month
    PRECEDING = "preceding"  #: previous business day
    MODIFIED_PRECEDING = "modified_preceding"  #: previous, unless in the previous month


def parse_convention(text: str | Convention) -> Convention:
    """Read a convention name (case-insensitive, ``-`` or ``_``).

    :raises SpecError: for an unknown name.
    """
    if isinstance(text, Convention):
        return text
    key = str(text).strip().lower().replace("-", "_")
    try:
        return Convention(key)
    except ValueError:
        allowed = ", ".join(c.value for c in Convention)
        raise SpecError(f"unknown business-day convention {text!r}: use one of {allowed}") from None


def adjust(day: date, convention: Convention | str, calendar: BusinessCalendar) -> date:
    """The execution date of the unadjusted date ``day`` under ``convention``.

    A business day is returned unchanged under every convention.

    >>> from duly.timing.calendars import load_calendar
    >>> adjust(date(2024, 6, 1), "following", load_calendar(None))
    datetime.date(2024, 6, 3)

    :raises SpecError: for an unknown convention name.
    """
    rule = parse_convention(convention)
    if rule is Convention.NONE or calendar.is_business_day(day):
        return day
    if rule is Convention.FOLLOWING:
        return calendar.next_business_day(day)
    if rule is Convention.PRECEDING:
        return calendar.previous_business_day(day)
    if rule is Convention.MODIFIED_FOLLOWING:
        moved = calendar.next_business_day(day)
        return moved if moved.month == day.month else calendar.previous_business_day(day)
    moved = calendar.previous_business_day(day)
    return moved if moved.month == day.month else calendar.next_business_day(day)
