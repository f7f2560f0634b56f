"""Schedule rows → triggers from :mod:`duly.timing`, parsed once and cached."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

from duly.engine.store.base import NewSchedule, ScheduleRow
from duly.timing import Trigger, parse_trigger

__all__ = ["first_fire", "next_fires", "trigger_for"]


@lru_cache(maxsize=4096)
def _cached(key: tuple[Any, ...]) -> Trigger:
    spec, tz, calendar, adjust, start, end, dst_gap, dst_repeat = key
    return parse_trigger(
        spec,
        tz,
        calendar=calendar,
        adjust=adjust,
        start=start,
        end=end,
        dst_gap=dst_gap,
        dst_repeat=dst_repeat,
    )


def trigger_for(s: ScheduleRow | NewSchedule) -> Trigger:
    """The trigger of a schedule (raises :class:`duly.timing.SpecError` if its spec is bad)."""
    return _cached(
        (s.spec, s.timezone, s.calendar, s.adjust, s.start_at, s.end_at, s.dst_gap, s.dst_repeat)
    )


def first_fire(s: ScheduleRow | NewSchedule, after: datetime) -> datetime | None:
    """The schedule's first fire strictly after ``after``."""
    return trigger_for(s).next_fire(after)


def next_fires(trigger: Trigger, after: datetime, count: int) -> list[datetime]:
    """The first ``count`` fires of ``trigger`` strictly after ``after`` (fewer if it ends)."""
    out: list[datetime] = []
    if count <= 0:
        return out
    for fire in trigger.fires(after):
        out.append(fire)
        if len(out) >= count:
            break
    return out
