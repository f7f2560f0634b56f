"""Triggers: when a schedule fires, as aware UTC instants. Pure: time is passed in.

Build them with :func:`duly.timing.parse_trigger` (or :func:`~duly.timing.trigger_from_json`).
Every trigger answers :meth:`Trigger.next_fire` (the first fire strictly after an
instant) and :meth:`Trigger.fires` (successive fires), and serializes with
:meth:`Trigger.to_json`. Triggers are frozen and compare equal when their spec and
options are equal.

The concrete classes, one per way of computing fires:

- :class:`CronTrigger` (``cron:``): wall-clock, or elapsed time if it fires more often than hourly;
- :class:`EveryTrigger` (``every:``): elapsed time from an anchor;
- :class:`AtTrigger` (``at:``): one local date and time;
- :class:`CalendarTrigger` (``daily:``, ``weekdays:``, ``weekly:``, ``monthly:``,
  ``quarterly:``, ``yearly:``, ``rrule:``): wall-clock on dates, business-day aware.
"""

from __future__ import annotations

import bisect
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from duly.timing.business_days import Convention
from duly.timing.cron import CronExpr
from duly.timing.dst import GapPolicy, RepeatPolicy
from duly.timing.elapsed import next_elapsed_fire
from duly.timing.options import TriggerOptions
from duly.timing.rules import WallRule
from duly.timing.wallclock import next_wall_fire

__all__ = [
    "JSON_VERSION",
    "AtTrigger",
    "BaseTrigger",
    "CalendarTrigger",
    "CronTrigger",
    "EveryTrigger",
    "Trigger",
]

#: Version of the JSON form written by :meth:`Trigger.to_json`.
JSON_VERSION = 1
_TICK = timedelta(microseconds=1)
_DAY = timedelta(days=1)


@runtime_checkable
class Trigger(Protocol):
    """When a schedule fires. All instants are aware; results are UTC."""

    @property
    def spec(self) -> str:
        """The spec in canonical form, e.g. ``"cron:*/5 * * * *"`` or ``"daily:09:00"``."""
        ...

    @property
    def tz(self) -> str:
        """The IANA timezone the spec is read in."""
        ...

    @property
    def fires_more_than_hourly(self) -> bool:
        """Whether the schedule follows elapsed time (frequent cron, ``every:`` under a day)."""
        ...

    def next_fire(self, after: datetime) -> datetime | None:
        """The first fire strictly after ``after`` (aware), as aware UTC; ``None`` if no more.

        :raises ValueError: if ``after`` is naive.
        """
        ...

    def fires(self, after: datetime) -> Iterator[datetime]:
        """Successive fires strictly after ``after``: aware UTC, strictly increasing."""
        ...

    def to_json(self) -> dict[str, Any]:
        """The JSON form: ``version``, ``kind``, ``spec``, ``tz`` and every option."""
        ...


@dataclass(frozen=True)
class BaseTrigger(ABC):
    """What every trigger shares: the spec, the options, bounds and serialization."""

    spec: str
    options: TriggerOptions

    @property
    def kind(self) -> str:
        """The spec's form: ``cron``, ``every``, ``at``, ``daily``, … ``rrule``."""
        return self.spec.partition(":")[0]

    @property
    def tz(self) -> str:
        """The IANA timezone the spec is read in."""
        return self.options.tz

    @property
    def calendar(self) -> str | None:
        """The business calendar code, or ``None`` for weekends only."""
        return self.options.calendar

    @property
    def adjust(self) -> Convention:
        """The business-day convention."""
        return self.options.adjust

    @property
    def start(self) -> datetime | None:
        """No fire before this instant (UTC)."""
        return self.options.start

    @property
    def end(self) -> datetime | None:
        """No fire after this instant (UTC)."""
        return self.options.end

    @property
    def dst_gap(self) -> GapPolicy:
        """What a wall time in a DST gap does."""
        return self.options.dst_gap

    @property
    def dst_repeat(self) -> RepeatPolicy:
        """What a wall time that occurs twice does."""
        return self.options.dst_repeat

    @property
    def fires_more_than_hourly(self) -> bool:
        """Whether the schedule follows elapsed time through DST changes."""
        return False

    def next_fire(self, after: datetime) -> datetime | None:
        """The first fire strictly after ``after`` within ``start``/``end``, aware UTC.

        :raises ValueError: if ``after`` is naive.
        """
        point = _utc(after)
        start, end = self.options.start, self.options.end
        if start is not None and point < start:
            point = start - _TICK  # a fire exactly at `start` counts
        try:
            fire = self._next(point)
        except OverflowError:  # past year 9999
            return None
        if fire is None or (end is not None and fire > end):
            return None
        return fire

    def fires(self, after: datetime) -> Iterator[datetime]:
        """Successive fires strictly after ``after``: aware UTC, strictly increasing.

        :raises ValueError: if ``after`` is naive (at once, not on first iteration).
        """
        return self._iterate(_utc(after))

    def _iterate(self, point: datetime) -> Iterator[datetime]:
        fire = self.next_fire(point)
        while fire is not None:
            yield fire
            fire = self.next_fire(fire)

    def to_json(self) -> dict[str, Any]:
        """The JSON form; :func:`duly.timing.trigger_from_json` reads it back."""
        return {
            "version": JSON_VERSION,
            "kind": self.kind,
            "spec": self.spec,
            **self.options.to_json(),
        }

    @abstractmethod
    def _next(self, after: datetime) -> datetime | None:
        """The first fire strictly after the aware UTC ``after``, ignoring start/end."""


@dataclass(frozen=True)
class CronTrigger(BaseTrigger):
    """``cron:`` — wall-clock, or elapsed time when the minute or hour field has ``*`` or ``/``."""

    cron: CronExpr = field(compare=False, repr=False)

    @property
    def fires_more_than_hourly(self) -> bool:
        """True when the minute or hour field is a wildcard or a step (see :mod:`.cron`)."""
        return self.cron.frequent

    def _next(self, after: datetime) -> datetime | None:
        if self.cron.frequent:
            return next_elapsed_fire(self.cron, after, self.options.zone)
        return next_wall_fire(self.cron, after, self.options.wall_clock)


@dataclass(frozen=True)
class EveryTrigger(BaseTrigger):
    """``every:`` — ``anchor + k × period``; elapsed time, so DST never matters."""

    period: timedelta = field(compare=False)
    anchor: datetime = field(compare=False)

    @property
    def fires_more_than_hourly(self) -> bool:
        """True when the period is shorter than a day."""
        return self.period < _DAY

    def _next(self, after: datetime) -> datetime | None:
        return self.anchor + self.period * ((after - self.anchor) // self.period + 1)


@dataclass(frozen=True)
class AtTrigger(BaseTrigger):
    """``at:`` — one local date and time (two instants only under ``dst_repeat='both'``)."""

    instants: tuple[datetime, ...] = field(compare=False)

    def _next(self, after: datetime) -> datetime | None:
        index = bisect.bisect_right(self.instants, after)
        return self.instants[index] if index < len(self.instants) else None


@dataclass(frozen=True)
class CalendarTrigger(BaseTrigger):
    """Date-based wall-clock forms: daily, weekdays, weekly, monthly, quarterly, yearly, rrule."""

    rule: WallRule = field(compare=False, repr=False)

    def _next(self, after: datetime) -> datetime | None:
        return next_wall_fire(self.rule, after, self.options.wall_clock)


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()}: pass an aware instant")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # within a day of year 1 or year 9999
        if value.year < 5000:
            return datetime.min.replace(tzinfo=UTC)
        return datetime.max.replace(tzinfo=UTC)
