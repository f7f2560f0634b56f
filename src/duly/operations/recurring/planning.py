"""A recurring payment's plan: occurrence k → unadjusted date, execution date, instant.

``Recurrence`` gives the unadjusted date (the occurrence's key); the business-day
convention against the rail's calendar gives the execution date; the time of day in the
payment's timezone gives the instant (finance-rules.md §1.4: RRULE or relativedelta →
unadjusted → adjust → execution; store both).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime

from duly.operations.localtime import execution_date, execution_instant
from duly.operations.recurring.recurrence import Recurrence

__all__ = ["PaymentPlan", "PlannedOccurrence"]

#: Occurrences a preview looks through before giving up (a daily rule: ~270 years).
_PREVIEW_SCAN = 100_000


@dataclass(frozen=True, slots=True)
class PlannedOccurrence:
    """One occurrence as planned (nothing stored yet)."""

    seq: int
    unadjusted_date: date
    execution_date: date
    execute_at: datetime


@dataclass(frozen=True)
class PaymentPlan:
    """Recurrence + time of day + timezone + business-day convention + calendar."""

    recurrence: Recurrence
    time_of_day: str
    timezone: str
    convention: str = "following"
    calendar: str | None = None

    def occurrence(self, seq: int) -> PlannedOccurrence | None:
        """Occurrence ``seq`` (0-based), or ``None`` past the end."""
        day = self.recurrence.date_of(seq)
        return self._plan(seq, day) if day is not None else None

    def occurrences(self, first: int = 0) -> Iterator[PlannedOccurrence]:
        """Occurrences from ``first`` on, in order."""
        for seq, day in self.recurrence.dates(first):
            planned = self._plan(seq, day)
            if planned is None:
                return
            yield planned

    def preview(self, after: datetime, count: int) -> list[PlannedOccurrence]:
        """The next ``count`` occurrences executing at or after ``after``."""
        out: list[PlannedOccurrence] = []
        for occ in self.occurrences():
            if occ.seq >= _PREVIEW_SCAN:
                break
            if occ.execute_at >= after:
                out.append(occ)
                if len(out) >= count:
                    break
        return out

    def _plan(self, seq: int, day: date) -> PlannedOccurrence | None:
        """The occurrence on ``day``; ``None`` if its instant falls past year 9999 (the end)."""
        moved = execution_date(day, self.convention, self.calendar)
        try:
            instant = execution_instant(moved, self.time_of_day, self.timezone)
        except OverflowError:
            return None
        return PlannedOccurrence(seq, day, moved, instant)
