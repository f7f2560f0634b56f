"""``rrule:`` specs: RFC 5545 recurrence rules (python-dateutil) on local wall times.

The spec is the RRULE value, with the time of day either as an ``@HH:MM`` suffix or
in the rule's ``BYHOUR``/``BYMINUTE`` (``BYSECOND`` defaults to 0)::

    rrule:FREQ=MONTHLY;BYMONTHDAY=-1@09:00          last day of every month, 09:00
    rrule:FREQ=WEEKLY;BYDAY=MO,TH;BYHOUR=7;BYMINUTE=30
    rrule:FREQ=MONTHLY;BYMONTHDAY=28,29,30,31;BYSETPOS=-1@09:00   day 31 or the last day

Only date frequencies (``DAILY``, ``WEEKLY``, ``MONTHLY``, ``YEARLY``) are accepted; use
``cron:`` or ``every:`` for sub-daily schedules. As RFC 5545 says, instances with an
invalid date (30 Feb, 31 Apr) are dropped and not counted. Unlike RFC 5545, instances
whose local time falls in a DST gap are *not* dropped: the trigger's gap policy applies
(shifted by default), so a payment is never silently skipped.

The rule's DTSTART is the trigger's ``start`` (as local wall time) or, without one,
1970-01-01 00:00 local. DTSTART decides what the rule leaves out: ``FREQ=WEEKLY`` with
no ``BYDAY`` repeats DTSTART's weekday (a Thursday without ``start``), ``FREQ=MONTHLY``
with no ``BYMONTHDAY`` repeats its day, and ``INTERVAL`` counts from it. ``COUNT`` needs
a ``start``. ``UNTIL`` is read as local wall time (a date means the end of that day; a
``Z`` value is converted to the zone).

dateutil iterates from DTSTART, so instances are computed one calendar year at a time
(cached), restarting the rule at the beginning of a period (day, week, month or year,
aligned with ``INTERVAL``) just before 1 January; the result is the same because every
BY-part is made explicit first.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

from dateutil import rrule as du

from duly.timing.dates import days_in_month
from duly.timing.errors import SpecError

__all__ = ["RRuleParams", "RRuleRule"]

Frequency = Literal[0, 1, 2, 3]  # dateutil's YEARLY, MONTHLY, WEEKLY, DAILY
_FREQS: dict[str, Frequency] = {"DAILY": 3, "WEEKLY": 2, "MONTHLY": 1, "YEARLY": 0}
_SUBDAILY = ("HOURLY", "MINUTELY", "SECONDLY")
_DAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_BYDAY = re.compile(r"^([+-]?\d{1,2})?(MO|TU|WE|TH|FR|SA|SU)$")
_UNTIL = re.compile(r"^(\d{8})(?:T(\d{6})(Z?))?$")
#: key → (lowest, highest, zero allowed)
_INT_LISTS = {
    "BYMONTH": (1, 12, False),
    "BYWEEKNO": (-53, 53, False),
    "BYYEARDAY": (-366, 366, False),
    "BYMONTHDAY": (-31, 31, False),
    "BYHOUR": (0, 23, True),
    "BYMINUTE": (0, 59, True),
    "BYSECOND": (0, 59, True),
    "BYSETPOS": (-366, 366, False),
}
_KEYS = frozenset({"FREQ", "INTERVAL", "COUNT", "UNTIL", "BYDAY", "WKST", *_INT_LISTS})
_MAX_COUNT = 100_000
#: How far a yearly period (ISO weeks) reaches into the neighbouring years.
_OVERLAP = timedelta(days=14)
#: A rule with no instance in 400 years (a Gregorian cycle) has none.
_SEARCH_YEARS = 400
_EPOCH_WALL = datetime.combine(date(1970, 1, 1), time())


@dataclass(frozen=True)
class RRuleParams:
    """The rule's parts, explicit and hashable (dateutil keyword names)."""

    freq: Frequency
    interval: int = 1
    count: int | None = None
    until: datetime | None = None
    wkst: int = 0
    bysetpos: tuple[int, ...] | None = None
    bymonth: tuple[int, ...] | None = None
    bymonthday: tuple[int, ...] | None = None
    byyearday: tuple[int, ...] | None = None
    byweekno: tuple[int, ...] | None = None
    byweekday: tuple[du.weekday, ...] | None = None
    byhour: tuple[int, ...] = (0,)
    byminute: tuple[int, ...] = (0,)
    bysecond: tuple[int, ...] = (0,)

    def build(self, dtstart: datetime) -> du.rrule:
        """The dateutil rule starting at the naive ``dtstart``."""
        return _build(self, dtstart)


@dataclass(frozen=True)
class RRuleRule:
    """A parsed ``rrule:`` spec anchored at a local wall time. Build it with :meth:`parse`."""

    text: str
    params: RRuleParams
    anchor: datetime = field(repr=False)

    @classmethod
    def parse(cls, body: str, zone: ZoneInfo, start: datetime | None) -> RRuleRule:
        """Parse the text after ``rrule:``; ``start`` (aware) anchors the rule.

        :raises SpecError: naming the bad part.
        """
        rule_text, at_sign, at_text = body.strip().partition("@")
        if not rule_text:
            raise SpecError("rrule needs a rule, e.g. rrule:FREQ=MONTHLY;BYMONTHDAY=-1@09:00")
        parts = _split_parts(rule_text)
        anchor = start.astimezone(zone).replace(tzinfo=None) if start is not None else _EPOCH_WALL
        params = _params(parts, zone, anchor)
        params = _with_time(params, parts, at_text if at_sign else None)
        if params.count is not None and start is None:
            raise SpecError("COUNT counts from the schedule's start: give a start, or use UNTIL")
        try:
            params.build(anchor)
        except ValueError as exc:
            raise SpecError(f"rule rejected by RFC 5545 rules: {exc}") from None
        _check_matches_some_date(params)
        _check_fires(params, anchor)
        canonical = ";".join(f"{key}={value}" for key, value in parts.items())
        text = canonical + (f"@{at_text.strip()}" if at_sign else "")
        return cls(text=text, params=params, anchor=anchor)

    def next_wall(self, after: datetime, *, inclusive: bool = False) -> datetime | None:
        """The first instance (naive wall time) after ``after``, or at it if ``inclusive``."""
        params = self.params
        search = bisect.bisect_left if inclusive else bisect.bisect_right
        if params.count is not None:
            walls = _all_walls(params, self.anchor)
            index = search(walls, after)
            return walls[index] if index < len(walls) else None
        last_year = min(after.year + _SEARCH_YEARS, 9999)
        if params.until is not None:
            last_year = min(last_year, params.until.year)
        for year in range(max(after.year, self.anchor.year), last_year + 1):
            walls = _walls_in_year(params, self.anchor, year)
            index = search(walls, after)
            if index < len(walls):
                return walls[index]
        return None


def _period_start(params: RRuleParams, anchor: datetime, query: datetime) -> datetime:
    """Start of the INTERVAL-aligned period containing ``query`` (never before DTSTART)."""
    if query <= anchor:
        return anchor
    step = params.interval
    if params.freq == du.YEARLY:
        year = query.year - (query.year - anchor.year) % step
        start = datetime.combine(date(year, 1, 1), time())
    elif params.freq == du.MONTHLY:
        index = query.year * 12 + query.month - 1
        index -= (index - (anchor.year * 12 + anchor.month - 1)) % step
        start = datetime.combine(date(index // 12, index % 12 + 1, 1), time())
    else:
        days = 7 * step if params.freq == du.WEEKLY else step
        first = anchor.date()
        if params.freq == du.WEEKLY:
            first -= timedelta(days=(first.weekday() - params.wkst) % 7)
        elapsed = (query.date() - first).days
        start = datetime.combine(first + timedelta(days=elapsed - elapsed % days), time())
    return start if start > anchor else anchor


@lru_cache(maxsize=1024)
def _walls_in_year(params: RRuleParams, anchor: datetime, year: int) -> tuple[datetime, ...]:
    """The rule's instances in ``year``.

    The rule restarts at the period containing 25 December of the year before, and reads
    on to mid-January after: a yearly period with ``BYWEEKNO`` can reach a week into the
    neighbouring years, and dateutil then yields across the new year out of order.
    """
    begin = datetime.combine(date(year, 1, 1), time())
    end = datetime.combine(date(year, 12, 31), time.max)
    rule = params.build(_period_start(params, anchor, begin - _OVERLAP))
    found = []
    for wall in rule:
        if wall > end + _OVERLAP:
            break
        if wall >= begin and wall <= end:
            found.append(wall)
    return tuple(sorted(found))


@lru_cache(maxsize=256)
def _build(params: RRuleParams, dtstart: datetime) -> du.rrule:
    return du.rrule(
        params.freq,
        dtstart=dtstart,
        interval=params.interval,
        wkst=params.wkst,
        count=params.count,
        until=params.until,
        bysetpos=params.bysetpos,
        bymonth=params.bymonth,
        bymonthday=params.bymonthday,
        byyearday=params.byyearday,
        byweekno=params.byweekno,
        byweekday=params.byweekday,
        byhour=params.byhour,
        byminute=params.byminute,
        bysecond=params.bysecond,
    )


@lru_cache(maxsize=256)
def _all_walls(params: RRuleParams, anchor: datetime) -> tuple[datetime, ...]:
    return tuple(params.build(anchor))


def _split_parts(text: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for chunk in text.upper().split(";"):
        key, eq, value = chunk.strip().partition("=")
        if not eq or not key or not value:
            raise SpecError(f"rrule part {chunk.strip()!r} is not KEY=VALUE")
        if key not in _KEYS:
            allowed = ", ".join(sorted(_KEYS))
            raise SpecError(f"unknown rrule part {key!r} (allowed: {allowed})")
        if key in parts:
            raise SpecError(f"rrule part {key} given twice")
        parts[key] = value
    return parts


def _params(parts: dict[str, str], zone: ZoneInfo, anchor: datetime) -> RRuleParams:
    freq_text = parts.get("FREQ")
    if freq_text is None:
        raise SpecError("rrule needs FREQ (DAILY, WEEKLY, MONTHLY or YEARLY)")
    if freq_text in _SUBDAILY:
        raise SpecError(f"FREQ={freq_text} is sub-daily: use cron: or every: for it")
    if freq_text not in _FREQS:
        raise SpecError(f"bad FREQ {freq_text!r} (allowed: DAILY, WEEKLY, MONTHLY, YEARLY)")
    if "COUNT" in parts and "UNTIL" in parts:
        raise SpecError("COUNT and UNTIL cannot both be given (RFC 5545)")
    lists = {key: _int_list(key, parts[key]) for key in _INT_LISTS if key in parts}
    params = RRuleParams(
        freq=_FREQS[freq_text],
        interval=_positive("INTERVAL", parts.get("INTERVAL", "1"), 10_000),
        count=_positive("COUNT", parts["COUNT"], _MAX_COUNT) if "COUNT" in parts else None,
        until=_until(parts["UNTIL"], zone) if "UNTIL" in parts else None,
        wkst=_day_index("WKST", parts.get("WKST", "MO")),
        bysetpos=lists.get("BYSETPOS"),
        bymonth=lists.get("BYMONTH"),
        bymonthday=lists.get("BYMONTHDAY"),
        byyearday=lists.get("BYYEARDAY"),
        byweekno=lists.get("BYWEEKNO"),
        byweekday=_byday(parts["BYDAY"]) if "BYDAY" in parts else None,
    )
    return _explicit_defaults(params, anchor)


def _explicit_defaults(params: RRuleParams, anchor: datetime) -> RRuleParams:
    """Write down the parts dateutil would take from DTSTART, so any DTSTART gives the same rule."""
    if any((params.byweekno, params.byyearday, params.bymonthday, params.byweekday)):
        return params
    if params.freq == du.YEARLY:
        return replace(params, bymonth=params.bymonth or (anchor.month,), bymonthday=(anchor.day,))
    if params.freq == du.MONTHLY:
        return replace(params, bymonthday=(anchor.day,))
    if params.freq == du.WEEKLY:
        return replace(params, byweekday=(du.weekday(anchor.weekday()),))
    return params


def _with_time(params: RRuleParams, parts: dict[str, str], at_text: str | None) -> RRuleParams:
    in_rule = "BYHOUR" in parts or "BYMINUTE" in parts
    if at_text is not None:
        if in_rule:
            raise SpecError("give the time either as @HH:MM or as BYHOUR/BYMINUTE, not both")
        match = re.fullmatch(r"(\d{2}):(\d{2})", at_text.strip())
        if match is None:
            raise SpecError(f"time {at_text.strip()!r} must be HH:MM (24-hour), e.g. 09:30")
        hour, minute = int(match[1]), int(match[2])
        if hour > 23:
            raise SpecError("hour must be 00–23")
        if minute > 59:
            raise SpecError("minute must be 00–59")
        if "BYSECOND" in parts:
            raise SpecError("BYSECOND needs BYHOUR/BYMINUTE, not @HH:MM")
        return replace(params, byhour=(hour,), byminute=(minute,), bysecond=(0,))
    if not in_rule:
        raise SpecError("rrule needs a time of day: add @HH:MM or BYHOUR/BYMINUTE")
    return replace(
        params,
        byhour=_int_list("BYHOUR", parts["BYHOUR"]) if "BYHOUR" in parts else (0,),
        byminute=_int_list("BYMINUTE", parts["BYMINUTE"]) if "BYMINUTE" in parts else (0,),
        bysecond=_int_list("BYSECOND", parts["BYSECOND"]) if "BYSECOND" in parts else (0,),
    )


def _int_list(key: str, text: str) -> tuple[int, ...]:
    low, high, zero_ok = _INT_LISTS[key]
    values = []
    for item in text.split(","):
        try:
            value = int(item)
        except ValueError:
            value = None
        if value is None or not low <= value <= high or (value == 0 and not zero_ok):
            allowed = f"{low}–{high}" if zero_ok or low > 0 else f"{low}–-1 or 1–{high}"
            raise SpecError(f"bad {key} value {item!r} (allowed: {allowed})")
        values.append(value)
    return tuple(sorted(set(values)))


def _positive(key: str, text: str, highest: int) -> int:
    if not text.isdigit() or not 1 <= int(text) <= highest:
        raise SpecError(f"bad {key} {text!r} (allowed: 1–{highest})")
    return int(text)


def _day_index(key: str, text: str) -> int:
    if text not in _DAYS:
        raise SpecError(f"bad {key} {text!r} (allowed: {', '.join(_DAYS)})")
    return _DAYS.index(text)


def _byday(text: str) -> tuple[du.weekday, ...]:
    days = []
    for item in text.split(","):
        match = _BYDAY.match(item)
        if match is None or (match[1] is not None and not 1 <= abs(int(match[1])) <= 53):
            raise SpecError(
                f"bad BYDAY value {item!r} (allowed: MO…SU, optionally with ±1–53, e.g. -1FR)"
            )
        n = int(match[1]) if match[1] is not None else None
        days.append(du.weekday(_DAYS.index(match[2]), n))
    return tuple(days)


def _until(text: str, zone: ZoneInfo) -> datetime:
    match = _UNTIL.match(text)
    if match is None:
        raise SpecError(f"bad UNTIL {text!r} (allowed: YYYYMMDD, YYYYMMDDTHHMMSS, or with Z)")
    digits = match[1] + (match[2] or "235959")
    try:
        value = datetime.combine(
            date(int(digits[0:4]), int(digits[4:6]), int(digits[6:8])),
            time(int(digits[8:10]), int(digits[10:12]), int(digits[12:14])),
        )
    except ValueError:
        raise SpecError(f"bad UNTIL {text!r}: not a real date and time") from None
    if match[3]:
        return value.replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None)
    return value


def _check_fires(params: RRuleParams, anchor: datetime) -> None:
    """Refuse a rule that has no instance at all after DTSTART (ignoring COUNT and UNTIL).

    dateutil looks for the next instance up to year 9999, so this costs at most one such
    scan, once, here; afterwards each year's instances are bounded by the next instance.
    """
    unbounded = replace(params, count=None, until=None)
    if next(iter(unbounded.build(anchor)), None) is None:
        raise SpecError("this rule matches no date after its start, so it would never fire")


def _check_matches_some_date(params: RRuleParams) -> None:
    """Refuse BYMONTHDAY values that no month in BYMONTH has (e.g. 30 Feb): never fires."""
    if params.bymonthday is None or params.byweekday or params.byyearday or params.byweekno:
        return
    months = params.bymonth or tuple(range(1, 13))
    longest = max(days_in_month(2000, month) for month in months)
    if all(abs(day) > longest for day in params.bymonthday):
        raise SpecError(
            "BYMONTHDAY never occurs in the months of this rule, so it would never fire"
        )
