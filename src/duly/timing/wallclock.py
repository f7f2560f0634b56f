"""The next fire of a wall-clock schedule: rule → business-day adjustment → DST policy.

A wall-clock schedule names local wall times (a :class:`~duly.timing.rules.WallRule`).
Each wall time's date may be moved by a business-day convention (the wall time is
kept), then the wall time becomes 0–2 instants under the DST policies
(:func:`~duly.timing.dst.resolve_wall`). The schedule fires at the *set* of those
instants, so an instant reached twice (e.g. Saturday and Sunday both moved to Monday
under ``following``) fires once, and fires are strictly increasing.

When neither the query nor the answer is within 2 days of an offset change this is a
single step: the first adjusted wall time after the query's, minus its offset. Otherwise
every candidate from 2 days before the query to 3 days after the best one is resolved
and the earliest fire wins.
The margins hold as long as no zone changes its offset by a day or more at once (the
largest change in tzdata is 24 h, Pacific/Apia skipping 30 Dec 2011).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from duly.timing.business_days import Convention, adjust
from duly.timing.calendars import BusinessCalendar
from duly.timing.dst import (
    GapPolicy,
    RepeatPolicy,
    first_transition,
    offset_at,
    resolve_wall,
    wall_of,
)
from duly.timing.rules import WallRule

__all__ = ["WallClock", "next_wall_fire"]

_NEAR = timedelta(days=2)
_LOOKBACK = timedelta(days=2)
_LOOKAHEAD = timedelta(days=3)


@dataclass(frozen=True)
class WallClock:
    """How wall times become instants: zone, DST policies, convention and calendar."""

    zone: ZoneInfo
    gap: GapPolicy
    repeat: RepeatPolicy
    convention: Convention
    calendar: BusinessCalendar

    def adjusted(self, wall: datetime) -> datetime:
        """``wall`` with its date moved by the business-day convention, same wall time."""
        if self.convention is Convention.NONE:
            return wall
        day = adjust(wall.date(), self.convention, self.calendar)
        return wall if day == wall.date() else datetime.combine(day, wall.time())

    def resolve(self, wall: datetime) -> tuple[datetime, ...]:
        """The UTC instants at which the (already adjusted) ``wall`` fires."""
        return resolve_wall(wall, self.zone, self.gap, self.repeat)


def next_wall_fire(rule: WallRule, after: datetime, clock: WallClock) -> datetime | None:
    """The first fire of ``rule`` strictly after the aware UTC instant ``after``."""
    wall_after, offset = wall_of(after, clock.zone)
    if _steady(clock.zone, after):
        candidate = _first_adjusted_wall(rule, wall_after, clock)
        if candidate is None:
            return None
        # The candidate's offset may differ from the query's (summer and winter).
        guess = (candidate - offset).replace(tzinfo=UTC)
        fire = (candidate - offset_at(guess, clock.zone)).replace(tzinfo=UTC)
        if _steady(clock.zone, fire):
            # No offset change near the query or the candidate: no wall time before the
            # candidate can fire after the query, and the candidate is a real instant.
            # Offset changes in between do not matter: none is as large as 2 days.
            return fire
    return _search_near_transition(rule, after, wall_after, clock)


def _steady(zone: ZoneInfo, instant: datetime) -> bool:
    """Whether ``zone``'s offset is the same throughout 2 days either side of ``instant``."""
    return first_transition(zone, instant - _NEAR, instant + _NEAR) is None


def _first_adjusted_wall(rule: WallRule, wall_after: datetime, clock: WallClock) -> datetime | None:
    """The smallest adjusted wall time strictly after ``wall_after``."""
    if clock.convention is Convention.NONE:
        return rule.next_wall(wall_after)
    # An unadjusted date on or before the last business day before `wall_after`'s date
    # is moved to that business day at the latest, so it cannot come after `wall_after`.
    first_day = clock.calendar.previous_business_day(wall_after.date()) + timedelta(days=1)
    best: datetime | None = None
    wall = rule.next_wall(_midnight(first_day), inclusive=True)
    while wall is not None:
        moved = clock.adjusted(wall)
        if best is not None and moved.date() > best.date():
            break  # conventions are monotone: every later wall moves later still
        if moved > wall_after and (best is None or moved < best):
            best = moved
        wall = rule.next_wall(wall)
    return best


def _search_near_transition(
    rule: WallRule, after: datetime, wall_after: datetime, clock: WallClock
) -> datetime | None:
    """Resolve every candidate around an offset change and keep the earliest fire."""
    first_day = wall_after.date() - _LOOKBACK
    if clock.convention is not Convention.NONE:
        first_day = clock.calendar.previous_business_day(first_day + timedelta(days=1))
    best: datetime | None = None
    best_day: date | None = None
    wall = rule.next_wall(_midnight(first_day), inclusive=True)
    while wall is not None:
        moved = clock.adjusted(wall)
        if best_day is not None and moved.date() > best_day + _LOOKAHEAD:
            break
        for fire in clock.resolve(moved):
            if fire > after and (best is None or fire < best):
                best, best_day = fire, moved.date()
        wall = rule.next_wall(wall)
    return best


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time())
