"""The options every trigger carries besides its spec, validated once.

Timezone (IANA name), business-day convention and calendar, ``start``/``end`` bounds,
and the DST gap and repeat policies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from duly.timing.business_days import Convention, parse_convention
from duly.timing.calendars import BusinessCalendar, load_calendar
from duly.timing.dst import GapPolicy, RepeatPolicy
from duly.timing.errors import SpecError
from duly.timing.wallclock import WallClock

__all__ = ["TriggerOptions", "load_zone"]

_P = TypeVar("_P", GapPolicy, RepeatPolicy)


def load_zone(tz: str) -> ZoneInfo:
    """The IANA zone ``tz``.

    :raises SpecError: ``unknown timezone 'Mars/Base'`` for a name tzdata does not know.
    """
    if not isinstance(tz, str) or not tz.strip():
        raise SpecError(f"unknown timezone {tz!r}: use an IANA name such as 'Europe/London'")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise SpecError(
            f"unknown timezone {tz!r}: use an IANA name such as 'Europe/London'"
        ) from None


@dataclass(frozen=True)
class TriggerOptions:
    """Validated trigger options. Build them with :meth:`create`."""

    tz: str
    calendar: str | None
    adjust: Convention
    start: datetime | None
    end: datetime | None
    dst_gap: GapPolicy
    dst_repeat: RepeatPolicy
    zone: ZoneInfo = field(compare=False, repr=False)
    business: BusinessCalendar = field(compare=False, repr=False)
    wall_clock: WallClock = field(compare=False, repr=False)

    @classmethod
    def create(
        cls,
        tz: str = "UTC",
        *,
        calendar: str | None = None,
        adjust: str | Convention = Convention.NONE,
        start: datetime | None = None,
        end: datetime | None = None,
        dst_gap: str | GapPolicy = GapPolicy.SHIFT,
        dst_repeat: str | RepeatPolicy = RepeatPolicy.FIRST,
    ) -> TriggerOptions:
        """Validate every option.

        :raises SpecError: for an unknown timezone, calendar, convention or DST policy, a
            naive ``start``/``end``, or ``end`` before ``start``.
        """
        zone = load_zone(tz)
        business = load_calendar(calendar)
        start_utc = _aware("start", start)
        end_utc = _aware("end", end)
        if start_utc is not None and end_utc is not None and end_utc < start_utc:
            raise SpecError(f"end {end_utc.isoformat()} is before start {start_utc.isoformat()}")
        convention = parse_convention(adjust)
        gap = _policy(GapPolicy, "dst_gap", dst_gap)
        repeat = _policy(RepeatPolicy, "dst_repeat", dst_repeat)
        return cls(
            tz=tz,
            calendar=None if calendar is None else business.code,
            adjust=convention,
            start=start_utc,
            end=end_utc,
            dst_gap=gap,
            dst_repeat=repeat,
            zone=zone,
            business=business,
            wall_clock=WallClock(zone, gap, repeat, convention, business),
        )

    @property
    def is_default_dst(self) -> bool:
        """Whether both DST policies are the defaults (``shift``, ``first``)."""
        return self.dst_gap is GapPolicy.SHIFT and self.dst_repeat is RepeatPolicy.FIRST

    def to_json(self) -> dict[str, Any]:
        """The options as JSON-ready values (instants as ISO-8601 UTC strings)."""
        return {
            "tz": self.tz,
            "calendar": self.calendar,
            "adjust": self.adjust.value,
            "start": None if self.start is None else self.start.isoformat(),
            "end": None if self.end is None else self.end.isoformat(),
            "dst_gap": self.dst_gap.value,
            "dst_repeat": self.dst_repeat.value,
        }


def _aware(name: str, value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise SpecError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise SpecError(f"{name} {value.isoformat()} must be timezone-aware")
    return value.astimezone(UTC)


def _policy(kind: type[_P], name: str, value: str | _P) -> _P:
    try:
        return kind(str(value).strip().lower())
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise SpecError(f"unknown {name} {value!r}: use one of {allowed}") from None
