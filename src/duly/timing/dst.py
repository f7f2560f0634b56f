"""Local wall time → UTC instants, with duly's DST policies, and the zone's offset changes.

A wall time (a naive local datetime) maps to 0, 1 or 2 real instants in an IANA zone:

- normally exactly one;
- in a **gap** (spring forward, e.g. 02:00→03:00 in New York) none. Policy
  :class:`GapPolicy`: ``shift`` (default) fires at the same wall time shifted by the gap's
  length (02:30 → 03:30, as RFC 5545 §3.3.5 reads), ``skip`` does not fire, and
  ``at_transition`` fires at the first instant after the gap (03:00);
- in a **repeat** (fall back, e.g. 01:00–02:00 occurs twice) two. Policy
  :class:`RepeatPolicy`: ``first`` (default), ``last`` or ``both``.

:func:`first_transition` finds when a zone's UTC offset changes. ``zoneinfo`` does not
expose its transition table, so each (zone, year) is probed once a day, each change is
located to the second by bisection, and the result is cached (well under a millisecond
per zone-year). This assumes two offset changes are never less than a day apart: in
tzdata 2026 the closest since 1970 are 6.9 days apart, and no change exceeds 24 hours.
"""

from __future__ import annotations

import bisect
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo

__all__ = [
    "GapPolicy",
    "RepeatPolicy",
    "first_transition",
    "offset_at",
    "resolve_wall",
    "wall_of",
]

_SECOND = timedelta(seconds=1)
_PROBE = timedelta(days=1)


class GapPolicy(StrEnum):
    """What a wall time inside a DST gap (spring forward) does."""

    SHIFT = "shift"  #: fire at the wall time shifted by the gap (02:30 → 03:30)
    SKIP = "skip"  #: no fire
    AT_TRANSITION = "at_transition"  #: fire at the first instant after the gap (03:00)


class RepeatPolicy(StrEnum):
    """What a wall time that occurs twice (fall back) does."""

    FIRST = "first"  #: fire once, at the first occurrence
    LAST = "last"  #: fire once, at the second occurrence
    BOTH = "both"  #: fire at both


def wall_of(instant: datetime, zone: ZoneInfo) -> tuple[datetime, timedelta]:
    """The naive local wall time of the aware ``instant`` in ``zone``, and the UTC offset."""
    local = instant.astimezone(zone)
    offset = local.utcoffset()
    assert offset is not None  # a ZoneInfo always has one
    return local.replace(tzinfo=None), offset


def offset_at(instant: datetime, zone: ZoneInfo) -> timedelta:
    """The UTC offset of ``zone`` in force at the aware ``instant``."""
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None  # a ZoneInfo always has one
    return offset


def resolve_wall(
    wall: datetime, zone: ZoneInfo, gap: GapPolicy, repeat: RepeatPolicy
) -> tuple[datetime, ...]:
    """The aware UTC instants at which the naive local ``wall`` fires, in order.

    Returns one instant normally, none for a gap under ``skip``, two for a repeated wall
    time under ``both``.
    """
    # PEP 495: fold=0 uses the offset before a transition, fold=1 the offset after.
    early = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    late = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if early == late:
        return (early,)
    if early < late:  # the wall time occurs twice
        if repeat is RepeatPolicy.FIRST:
            return (early,)
        if repeat is RepeatPolicy.LAST:
            return (late,)
        return (early, late)
    # In a gap: `early` is the wall time shifted forward by the gap, `late` is before it.
    if gap is GapPolicy.SHIFT:
        return (early,)
    if gap is GapPolicy.SKIP:
        return ()
    transition = first_transition(zone, late, early)
    assert transition is not None  # offsets differ between `late` and `early`
    return (transition,)


def first_transition(zone: ZoneInfo, after: datetime, until: datetime) -> datetime | None:
    """The first instant ``t`` with ``after < t <= until`` at which ``zone``'s offset changes.

    Both bounds are aware. From ``t`` on, the new offset is in force.
    """
    lo = after.astimezone(UTC)
    hi = until.astimezone(UTC)
    for year in range(lo.year, hi.year + 1):
        changes = _year_transitions(zone, year)
        index = bisect.bisect_right(changes, lo)
        if index < len(changes):
            return changes[index] if changes[index] <= hi else None
    return None


@lru_cache(maxsize=4096)
def _year_transitions(zone: ZoneInfo, year: int) -> tuple[datetime, ...]:
    """Instants in ``[year-01-01, year+1-01-01)`` UTC at which ``zone``'s offset changes."""
    if not 2 <= year <= 9998:
        return ()
    start = datetime(year, 1, 1, tzinfo=UTC)
    stop = datetime(year + 1, 1, 1, tzinfo=UTC)
    found: list[datetime] = []
    prev = start - _SECOND
    prev_offset = offset_at(prev, zone)
    while prev < stop - _SECOND:
        probe = min(prev + _PROBE, stop - _SECOND)
        probe_offset = offset_at(probe, zone)
        if probe_offset != prev_offset:
            found.append(_locate_change(zone, prev, probe, prev_offset))
        prev, prev_offset = probe, probe_offset
    return tuple(found)


def _locate_change(zone: ZoneInfo, lo: datetime, hi: datetime, lo_offset: timedelta) -> datetime:
    """The first whole second in ``(lo, hi]`` whose offset differs from ``lo_offset``."""
    while hi - lo > _SECOND:
        mid = lo + _SECOND * (((hi - lo) // _SECOND) // 2)
        if offset_at(mid, zone) == lo_offset:
            lo = mid
        else:
            hi = mid
    return hi
