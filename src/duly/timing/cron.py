"""Cron expressions (5 fields): parsing, matching, and the next matching local wall time.

Fields are parsed by ``cronsim`` (so its syntax is ours: ``*``, lists, ranges, steps,
month and weekday names, ``L``, ``LW``, ``5L``, ``5#2``), with Debian cron's day rule: if
day-of-month or day-of-week starts with ``*`` both must match, otherwise either. Cron
keeps cron's meaning: day 31 fires only in 31-day months.

**Which cron specs follow elapsed time** (``frequent``): those whose minute field or
hour field contains ``*`` or ``/`` — a wildcard (``*``) or a step in any form (``*/5``,
``0-59/5``, ``5/15``). They fire at every real instant whose local wall time matches:
in both passes of a repeated hour, and never at a wall time invented in a gap. Every
other spec (the minute and hour fields are numbers, lists or ranges, e.g. ``0 9 * * 1-5``,
``0,30 9-17 * * *``) is a wall-clock schedule and follows the DST gap/repeat policies.
This matches Debian cron (and ``cronsim``), which also looks for a leading ``*`` in
those two fields, extended to every step so that ``0-59/5`` behaves like ``*/5``.

This module works on naive local wall times only; DST is handled by the triggers.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from cronsim import CronSim, CronSimError
from cronsim.cronsim import Field

from duly.timing.errors import SpecError

__all__ = ["CronExpr"]

_ONE_DAY = timedelta(days=1)
_ONE_MINUTE = timedelta(minutes=1)
#: A valid expression that has not matched in 400 years (a Gregorian cycle) never will.
_SEARCH_YEARS = 400

_FIELDS = (
    (Field.MINUTE, "minute", "0–59"),
    (Field.HOUR, "hour", "0–23"),
    (Field.DAY, "day-of-month", "1–31, L, LW"),
    (Field.MONTH, "month", "1–12 or JAN–DEC"),
    (Field.DOW, "day-of-week", "0–7 or SUN–SAT, 5L, 5#2"),
)


@dataclass(frozen=True)
class CronExpr:
    """A parsed 5-field cron expression. Build it with :meth:`parse`."""

    text: str
    frequent: bool
    months: frozenset[int] = field(repr=False)
    minutes_of_day: tuple[int, ...] = field(repr=False)
    _sim: CronSim = field(repr=False, compare=False)

    @classmethod
    def parse(cls, text: str) -> CronExpr:
        """Parse ``text`` (5 whitespace-separated fields).

        :raises SpecError: naming the bad field and what it allows.
        """
        parts = text.split()
        if len(parts) != 5:
            fields = "minute hour day-of-month month day-of-week"
            raise SpecError(f"cron needs 5 fields ({fields}), got {len(parts)}")
        for part, (kind, name, allowed) in zip(parts, _FIELDS, strict=True):
            try:
                kind.parse(part.upper())
            except (CronSimError, ValueError):
                forms = "*, lists a,b, ranges a-b, steps /n"
                raise SpecError(
                    f"bad {name} field {part!r} (allowed: {allowed}, {forms})"
                ) from None
        normalized = " ".join(parts)
        try:
            sim = CronSim(normalized, datetime.combine(date(2000, 1, 1), time()))
        except CronSimError as exc:
            raise SpecError(f"cron expression never matches a date ({exc})") from None
        minutes = sorted(sim.minutes)
        hours = sorted(sim.hours)
        return cls(
            text=normalized,
            frequent=any(ch in part for part in parts[:2] for ch in "*/"),
            months=frozenset(sim.months),
            minutes_of_day=tuple(h * 60 + m for h in hours for m in minutes),
            _sim=sim,
        )

    def matches_date(self, day: date) -> bool:
        """Whether the day-of-month, month and day-of-week fields match ``day``."""
        return day.month in self.months and self._sim.match_day(day)

    def matches(self, wall: datetime) -> bool:
        """Whether the naive wall time ``wall`` (seconds ignored) matches every field."""
        minute = wall.hour * 60 + wall.minute
        index = bisect.bisect_left(self.minutes_of_day, minute)
        hit = index < len(self.minutes_of_day) and self.minutes_of_day[index] == minute
        return hit and self.matches_date(wall.date())

    def next_wall(self, after: datetime, *, inclusive: bool = False) -> datetime | None:
        """The first matching naive wall time after ``after`` (or at it, if ``inclusive``).

        Returns ``None`` past year 9999 or if nothing matches within 400 years.
        """
        floor = after.replace(second=0, microsecond=0)
        start = floor if inclusive and floor == after else floor + _ONE_MINUTE
        day = start.date()
        minute = start.hour * 60 + start.minute
        last_year = min(day.year + _SEARCH_YEARS, 9999)
        times = self.minutes_of_day
        try:
            while day.year <= last_year:
                if day.month not in self.months:
                    day = _first_of_next_month(day)
                    minute = 0
                    continue
                if self._sim.match_day(day):
                    index = bisect.bisect_left(times, minute)
                    if index < len(times):
                        hour, minute = divmod(times[index], 60)
                        return datetime.combine(day, time(hour, minute))
                day += _ONE_DAY
                minute = 0
        except OverflowError:
            return None
        return None


def _first_of_next_month(day: date) -> date:
    if day.month == 12:
        return date(day.year + 1, 1, 1)
    return date(day.year, day.month + 1, 1)
