"""Recurrence of a payment: the unadjusted date of occurrence k, from the anchor and k only.

* ``weekly``: ``start`` (moved to ``weekday`` if given) + 7·interval·k days;
* ``monthly`` / ``quarterly`` / ``yearly``: every 1 / 3 / 12 × interval months on
  ``day_of_month`` (default: the start's day; -1: the last day), clamped to the month's
  end: day 31 pays on 30 Apr and 29 Feb, and still on 31 Mar after them — never a drift,
  because occurrence k is ``anchor + k·step`` months, not "previous + one month"
  (finance-rules.md §1.4, checklist 6–7);
* ``rrule``: an RFC 5545 rule on dates (``FREQ=DAILY|WEEKLY|MONTHLY|YEARLY``) with
  DTSTART = ``start``; as RFC 5545 says, invalid dates (30 Feb) are dropped, so use
  ``BYMONTHDAY=-1`` or ``BYMONTHDAY=28,29,30,31;BYSETPOS=-1`` to pay at month end.

``count`` limits the number of occurrences and ``end`` the last unadjusted date. The
first occurrence is the first date on or after ``start``. A date past 9999-12-31 is the
end of the recurrence, not an error.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cached_property
from typing import Any

from dateutil import rrule as du

from duly.timing.dates import LAST_DAY, nth_occurrence_date

__all__ = ["FREQUENCIES", "Recurrence"]

FREQUENCIES = ("weekly", "monthly", "quarterly", "yearly", "rrule")
_MONTHS = {"monthly": 1, "quarterly": 3, "yearly": 12}
_RRULE_FREQS = {"DAILY", "WEEKLY", "MONTHLY", "YEARLY"}
_TIME_PARTS = {"BYHOUR", "BYMINUTE", "BYSECOND", "DTSTART"}


@dataclass(frozen=True)
class Recurrence:
    """Which dates a payment falls due on (before business-day adjustment)."""

    frequency: str
    start: date
    interval: int = 1
    day_of_month: int | None = None
    weekday: int | None = None
    rrule: str | None = None
    count: int | None = None
    end: date | None = None

    def __post_init__(self) -> None:
        if self.frequency not in FREQUENCIES:
            raise ValueError(f"frequency {self.frequency!r}: use one of {', '.join(FREQUENCIES)}")
        if not 1 <= self.interval <= 1000:
            raise ValueError("interval must be 1–1000")
        if self.day_of_month is not None and not (
            self.day_of_month == LAST_DAY or 1 <= self.day_of_month <= 31
        ):
            raise ValueError("day of month must be 1–31, or -1 for the last day")
        if self.weekday is not None and not 0 <= self.weekday <= 6:
            raise ValueError("weekday must be 0 (Monday) – 6 (Sunday)")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be ≥ 1")
        if self.end is not None and self.end < self.start:
            raise ValueError("the end date is before the start date")
        if self.frequency == "rrule":
            if not self.rrule:
                raise ValueError("frequency rrule needs a rule, e.g. FREQ=MONTHLY;BYMONTHDAY=-1")
            self._rule  # noqa: B018  (parse now: a bad rule fails at creation)
        elif self.rrule:
            raise ValueError("a rule is only used with frequency rrule")

    # -- occurrences ----------------------------------------------------------------

    def date_of(self, k: int) -> date | None:
        """The unadjusted date of occurrence ``k`` (0-based), or ``None`` past the end."""
        if k < 0 or (self.count is not None and k >= self.count):
            return None
        found: date | None
        try:
            if self.frequency == "rrule":
                found = next(itertools.islice(self._rule_dates(), k, k + 1), None)
            elif self.frequency == "weekly":
                found = self._first_weekly() + timedelta(weeks=self.interval * k)
            else:
                step = _MONTHS[self.frequency] * self.interval
                found = nth_occurrence_date(
                    self.start, k + self._month_offset, step, self.day_of_month
                )
        except (OverflowError, ValueError):  # past year 9999: the calendar, and so the plan, ends
            return None
        if found is None or (self.end is not None and found > self.end):
            return None
        return found

    def dates(self, first: int = 0) -> Iterator[tuple[int, date]]:
        """``(k, unadjusted date)`` from occurrence ``first`` on, until the end (if any)."""
        if self.frequency == "rrule":
            source: Iterator[date] = itertools.islice(self._rule_dates(), first, None)
            for k, day in enumerate(source, start=first):
                if (self.count is not None and k >= self.count) or (
                    self.end is not None and day > self.end
                ):
                    return
                yield k, day
            return
        for k in itertools.count(first):
            found = self.date_of(k)
            if found is None:
                return
            yield k, found

    # -- helpers --------------------------------------------------------------------

    def _first_weekly(self) -> date:
        if self.weekday is None:
            return self.start
        return self.start + timedelta(days=(self.weekday - self.start.weekday()) % 7)

    @cached_property
    def _month_offset(self) -> int:
        """1 if the anchor month's occurrence falls before ``start`` (then k=0 is next period's)."""
        step = _MONTHS[self.frequency] * self.interval
        return 1 if nth_occurrence_date(self.start, 0, step, self.day_of_month) < self.start else 0

    @cached_property
    def _rule(self) -> du.rrule:
        assert self.rrule is not None
        body = self.rrule.strip()
        if body.upper().startswith("RRULE:"):
            body = body[6:]
        parts = _parts(body)
        freq = parts.get("FREQ")
        if freq not in _RRULE_FREQS:
            raise ValueError(
                f"rule {self.rrule!r}: FREQ must be one of {', '.join(sorted(_RRULE_FREQS))}"
            )
        interval = parts.get("INTERVAL", "1")
        # dateutil takes 0 (the same date for ever) and negatives (an error mid-iteration)
        if not interval.isdigit() or not 1 <= int(interval) <= 1000:
            raise ValueError(f"rule {self.rrule!r}: INTERVAL must be 1–1000")
        timed = _TIME_PARTS & parts.keys()
        if timed:
            raise ValueError(
                f"rule {self.rrule!r}: {', '.join(sorted(timed))} not allowed; "
                "the time of day is the payment's own"
            )
        try:
            rule: Any = du.rrulestr(
                f"RRULE:{body}", dtstart=datetime.combine(self.start, datetime.min.time())
            )
        except (ValueError, TypeError) as exc:
            raise ValueError(f"rule {self.rrule!r}: {exc}") from None
        if not isinstance(rule, du.rrule):
            raise ValueError(f"rule {self.rrule!r}: one RRULE expected")
        if next(iter(rule), None) is None:
            raise ValueError(f"rule {self.rrule!r} has no occurrence")
        return rule

    def _rule_dates(self) -> Iterator[date]:
        return (instant.date() for instant in self._rule)


def _parts(body: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for piece in body.split(";"):
        key, sep, value = piece.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"rule part {piece!r}: expected KEY=VALUE")
        out[key.strip().upper()] = value.strip().upper()
    return out
