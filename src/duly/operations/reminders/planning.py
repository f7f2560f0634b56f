"""When reminders are due: offsets before execution, quiet hours, the plan of one occurrence (pure)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from duly.timing.dst import GapPolicy, RepeatPolicy, resolve_wall

__all__ = [
    "PlannedReminder",
    "offset_instant",
    "offset_span",
    "parse_offset",
    "plan_times",
    "quiet_move",
]

_OFFSET = re.compile(r"^([1-9][0-9]{0,3})([mhdw])$")


def parse_offset(text: str) -> tuple[int, str]:
    """``"3d"`` → ``(3, "d")``.

    :raises ValueError: not a count and a unit (m, h, d, w).
    """
    found = _OFFSET.fullmatch(text)
    if not found:
        raise ValueError(f"bad reminder offset {text!r}: use 30m, 1h, 1d or 2w")
    return int(found.group(1)), found.group(2)


def offset_span(text: str) -> timedelta:
    """The longest time ``text`` can be before the execution instant (a DST hour included)."""
    count, unit = parse_offset(text)
    if unit == "m":
        return timedelta(minutes=count)
    if unit == "h":
        return timedelta(hours=count)
    return timedelta(days=count * (7 if unit == "w" else 1), hours=1)


def _wall(local: datetime, zone: ZoneInfo) -> datetime:
    (instant,) = resolve_wall(local, zone, GapPolicy.SHIFT, RepeatPolicy.FIRST)
    return instant


def offset_instant(execute_at: datetime, offset: str, zone: ZoneInfo) -> datetime:
    """The instant ``offset`` before ``execute_at`` (calendar days in ``zone`` for d/w)."""
    count, unit = parse_offset(offset)
    if unit in ("m", "h"):
        return execute_at - (timedelta(minutes=count) if unit == "m" else timedelta(hours=count))
    days = count * (7 if unit == "w" else 1)
    local = execute_at.astimezone(zone).replace(tzinfo=None) - timedelta(days=days)
    return _wall(local, zone)


def _hhmm(text: str) -> time:
    hour, minute = text.split(":")
    return time(int(hour), int(minute))


def quiet_move(instant: datetime, zone: ZoneInfo, start: str, end: str) -> datetime:
    """``instant`` if outside quiet hours, else the last minute before they began."""
    q_start, q_end = _hhmm(start), _hhmm(end)
    if q_start == q_end:
        return instant
    local = instant.astimezone(zone)
    t = local.time().replace(tzinfo=None)
    wraps = q_start > q_end  # 21:00–08:00
    inside = (t >= q_start or t < q_end) if wraps else (q_start <= t < q_end)
    if not inside:
        return instant
    day = local.date()
    if wraps and t < q_end:
        day -= timedelta(days=1)
    began = _wall(datetime.combine(day, q_start), zone)
    return began - timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class PlannedReminder:
    """When one reminder goes out, or why it does not (``send_at`` is then ``None``)."""

    offset: str
    channel: str
    send_at: datetime | None
    reason: str | None = None


def plan_times(
    execute_at: datetime,
    timezone: str,
    offsets: Sequence[str],
    channels: Iterable[str],
    *,
    not_before: datetime,
    quiet_channels: Iterable[str] = ("sms", "push"),
    quiet_start: str = "21:00",
    quiet_end: str = "08:00",
) -> list[PlannedReminder]:
    """The reminders of one occurrence on each channel (pure)."""
    zone = ZoneInfo(timezone)
    quiet = set(quiet_channels)
    ordered = sorted(set(offsets), key=offset_span, reverse=True)
    out: list[PlannedReminder] = []
    for channel in channels:
        previous: datetime | None = None
        for offset in ordered:
            nominal = offset_instant(execute_at, offset, zone)
            send_at = nominal
            moved = False
            if channel in quiet:
                send_at = quiet_move(nominal, zone, quiet_start, quiet_end)
                moved = send_at != nominal
            reason = None
            if send_at >= execute_at:
                reason = "at or after the execution time"
            elif send_at < not_before:
                reason = "moved before the plan by quiet hours" if moved else "already past"
            elif previous is not None and send_at <= previous:
                reason = "quiet hours: clashes with an earlier reminder"
            if reason is None:
                previous = send_at
            out.append(PlannedReminder(offset, channel, None if reason else send_at, reason))
    return out


def offsets_lookahead(offsets: Iterable[str], horizon_hours: float) -> timedelta:
    spans = [offset_span(o) for o in offsets] or [timedelta(0)]
    return max(spans) + timedelta(hours=horizon_hours)
