"""Wall-clock rules of the fixed-time forms: which local wall times a schedule names.

A rule answers one question in O(1)-ish time, on naive local datetimes and with no
timezone: the first wall time after a given one. DST policies and business-day
adjustment are applied by :mod:`duly.timing.wallclock`.

- :class:`WeekdayRule`: ``daily:``, ``weekdays:`` and ``weekly:`` (a time on some weekdays).
- :class:`MonthDayRule`: ``monthly:``, ``quarterly:`` and ``yearly:`` (a day of some months,
  clamped to the month's end: day 31 in April is 30 April, 29 Feb in 2025 is 28 Feb).

:class:`~duly.timing.cron.CronExpr` and :class:`~duly.timing.rrules.RRuleRule` answer the
same question for ``cron:`` and ``rrule:``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Protocol

from duly.timing.dates import clamp_date

__all__ = ["MonthDayRule", "WallRule", "WeekdayRule"]


class WallRule(Protocol):
    """Something that names local wall times, in increasing order."""

    def next_wall(self, after: datetime, *, inclusive: bool = False) -> datetime | None:
        """The first wall time strictly after ``after`` (or at it, if ``inclusive``).

        ``None`` when there is none (a finite rule, or past year 9999).
        """
        ...


@dataclass(frozen=True)
class WeekdayRule:
    """``at`` on each day whose weekday (Monday 0 … Sunday 6) is in ``weekdays``."""

    at: time
    weekdays: frozenset[int]
    _gap_to_next: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.weekdays or not self.weekdays <= set(range(7)):
            raise ValueError(
                f"weekdays must be a non-empty subset of 0–6, not {set(self.weekdays)}"
            )
        gaps = tuple(
            next(step for step in range(1, 8) if (wd + step) % 7 in self.weekdays)
            for wd in range(7)
        )
        object.__setattr__(self, "_gap_to_next", gaps)

    def next_wall(self, after: datetime, *, inclusive: bool = False) -> datetime | None:
        """See :meth:`WallRule.next_wall`."""
        day = after.date()
        today = datetime.combine(day, self.at)
        if day.weekday() in self.weekdays and (today > after or (inclusive and today == after)):
            return today
        try:
            return today + timedelta(days=self._gap_to_next[day.weekday()])
        except OverflowError:
            return None


@dataclass(frozen=True)
class MonthDayRule:
    """``at`` on ``day`` (1–31, or -1 for the last) of each month in ``months``, clamped."""

    at: time
    day: int
    months: frozenset[int]

    def __post_init__(self) -> None:
        if not self.months or not self.months <= set(range(1, 13)):
            raise ValueError(f"months must be a non-empty subset of 1–12, not {set(self.months)}")
        clamp_date(2000, 1, self.day)  # validates the day

    def next_wall(self, after: datetime, *, inclusive: bool = False) -> datetime | None:
        """See :meth:`WallRule.next_wall`."""
        year, month = after.year, after.month
        for _ in range(13):
            if month in self.months:
                candidate = datetime.combine(clamp_date(year, month, self.day), self.at)
                if candidate > after or (inclusive and candidate == after):
                    return candidate
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
            if year > 9999:
                return None
        return None  # pragma: no cover - some month in 13 always matches
