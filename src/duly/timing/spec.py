"""The spec grammar: one text form for the CLI, config and API, and its JSON form.

::

    cron:<5 fields>          cron:*/15 * * * *      (a bare 5-field expression also works)
    every:<N>s|m|h|d         every:15m              (from `start`, else 1970-01-01T00:00Z)
    at:<ISO date-time>       at:2026-03-08T09:30    (local; an offset is also accepted)
    daily:HH:MM              daily:22:00
    weekdays:HH:MM           weekdays:07:30         (Monday to Friday)
    weekly:<days>@HH:MM      weekly:mon,thu@09:00
    monthly:<1-31|last>@HH:MM   monthly:31@09:00    (clamped: 30 Apr, 28/29 Feb)
    quarterly:<1-31|last>@HH:MM quarterly:last@18:00  (Jan, Apr, Jul, Oct; clamped)
    yearly:MM-DD@HH:MM       yearly:02-29@09:00     (28 Feb in a non-leap year)
    rrule:<RRULE>[@HH:MM]    rrule:FREQ=MONTHLY;BYMONTHDAY=-1@09:00

Prefixes are case-insensitive. Business-day conventions apply to the date-based forms
(``at``, ``daily`` … ``yearly``, ``rrule``); ``cron`` and ``every`` follow the clock and
refuse them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, time, timedelta
from typing import Any

from duly.timing.business_days import Convention
from duly.timing.cron import CronExpr
from duly.timing.dates import LAST_DAY, days_in_month
from duly.timing.dst import wall_of
from duly.timing.errors import SpecError
from duly.timing.options import TriggerOptions
from duly.timing.rrules import RRuleRule
from duly.timing.rules import MonthDayRule, WeekdayRule
from duly.timing.triggers import (
    JSON_VERSION,
    AtTrigger,
    CalendarTrigger,
    CronTrigger,
    EveryTrigger,
    Trigger,
)

__all__ = ["parse_trigger", "trigger_from_json"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_QUARTER_MONTHS = frozenset({1, 4, 7, 10})
_ALL_MONTHS = frozenset(range(1, 13))
_DATE_FORMS = "at, daily, weekdays, weekly, monthly, quarterly, yearly, rrule"

Parser = Callable[[str, TriggerOptions], Trigger]


def parse_trigger(
    spec: str,
    tz: str = "UTC",
    *,
    calendar: str | None = None,
    adjust: str = "none",
    start: datetime | None = None,
    end: datetime | None = None,
    dst_gap: str = "shift",
    dst_repeat: str = "first",
) -> Trigger:
    """Parse ``spec`` into a trigger evaluated in the IANA zone ``tz``.

    :param calendar: business calendar code (``"GB-ENG"``, ``"US"``, ``"XECB"``…); ``None``
        means weekends only. See :mod:`duly.timing.calendars`.
    :param adjust: business-day convention for date-based specs: ``none``, ``following``,
        ``modified_following``, ``preceding``, ``modified_preceding``.
    :param start: aware; no fire before it. Anchors ``every:`` and ``rrule:``.
    :param end: aware; no fire after it.
    :param dst_gap: ``shift`` (default), ``skip`` or ``at_transition``.
    :param dst_repeat: ``first`` (default), ``last`` or ``both``.
    :raises SpecError: with one line naming the bad part and what is allowed.
    """
    if not isinstance(spec, str):
        raise SpecError(f"a spec must be a string, not {type(spec).__name__}")
    options = TriggerOptions.create(
        tz,
        calendar=calendar,
        adjust=adjust,
        start=start,
        end=end,
        dst_gap=dst_gap,
        dst_repeat=dst_repeat,
    )
    try:
        kind, body = _split_form(spec.strip())
        return _PARSERS[kind](body, options)
    except SpecError as exc:
        raise SpecError(f"invalid spec {spec!r}: {exc}") from None


def trigger_from_json(data: Mapping[str, Any]) -> Trigger:
    """Rebuild a trigger from :meth:`Trigger.to_json` output (``version`` 1).

    :raises SpecError: for another version or a bad field.
    """
    if not isinstance(data, Mapping):
        raise SpecError(f"trigger JSON must be an object, not {type(data).__name__}")
    version = data.get("version")
    if version != JSON_VERSION:
        raise SpecError(
            f"unsupported trigger JSON version {version!r} (this duly reads {JSON_VERSION})"
        )
    spec = data.get("spec")
    if not isinstance(spec, str):
        raise SpecError(f"trigger JSON needs a string 'spec', not {spec!r}")
    trigger = parse_trigger(
        spec,
        data.get("tz", "UTC"),
        calendar=data.get("calendar"),
        adjust=data.get("adjust", "none"),
        start=_json_instant(data, "start"),
        end=_json_instant(data, "end"),
        dst_gap=data.get("dst_gap", "shift"),
        dst_repeat=data.get("dst_repeat", "first"),
    )
    kind = data.get("kind")
    if kind is not None and kind != trigger.spec.partition(":")[0]:
        raise SpecError(f"trigger JSON kind {kind!r} does not match its spec {trigger.spec!r}")
    return trigger


def _json_instant(data: Mapping[str, Any], key: str) -> datetime | None:
    value = data.get(key)
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise SpecError(f"trigger JSON {key} {value!r} is not an ISO-8601 instant") from None


def _split_form(text: str) -> tuple[str, str]:
    if not text:
        raise SpecError("empty spec")
    head, colon, body = text.partition(":")
    kind = head.strip().lower()
    if colon and kind in _PARSERS:
        return kind, body.strip()
    if not colon and len(text.split()) == 5:
        return "cron", text
    raise SpecError(
        "unknown form: use cron:, every:, at:, daily:, weekdays:, weekly:, monthly:, "
        "quarterly:, yearly:, rrule: or a 5-field cron expression"
    )


# --- clock-following forms -------------------------------------------------------------


def _cron(body: str, options: TriggerOptions) -> Trigger:
    cron = CronExpr.parse(body)
    _refuse_business_days("cron", options)
    if cron.frequent:
        _refuse_dst_policies(
            "this cron fires more often than hourly and follows elapsed time", options
        )
    return CronTrigger(spec=f"cron:{cron.text}", options=options, cron=cron)


def _every(body: str, options: TriggerOptions) -> Trigger:
    match = re.fullmatch(r"(\d+)\s*([smhd])", body.lower())
    if match is None or int(match[1]) == 0:
        raise SpecError(
            "interval must be a positive whole number with s, m, h or d, e.g. every:15m"
        )
    count, unit = int(match[1]), match[2]
    _refuse_business_days("every", options)
    _refuse_dst_policies("every: follows elapsed time", options)
    try:
        period = timedelta(seconds=count * _UNITS[unit])
    except OverflowError:
        raise SpecError(f"interval {count}{unit} is too long") from None
    anchor = options.start if options.start is not None else _EPOCH
    return EveryTrigger(spec=f"every:{count}{unit}", options=options, period=period, anchor=anchor)


def _refuse_business_days(kind: str, options: TriggerOptions) -> None:
    if options.adjust is not Convention.NONE:
        raise SpecError(
            f"business-day convention {options.adjust.value!r} cannot apply to {kind}: schedules, "
            f"which follow the clock; conventions apply to {_DATE_FORMS}"
        )


def _refuse_dst_policies(why: str, options: TriggerOptions) -> None:
    if not options.is_default_dst:
        raise SpecError(f"{why}, so dst_gap/dst_repeat do not apply; leave them at shift/first")


# --- date-based forms ------------------------------------------------------------------


def _at(body: str, options: TriggerOptions) -> Trigger:
    try:
        value = datetime.fromisoformat(body)
    except ValueError:
        raise SpecError(
            f"{body!r} is not an ISO-8601 date and time, e.g. at:2026-03-08T09:30"
        ) from None
    if len(body) <= len("2026-03-08"):
        raise SpecError("at: needs a time as well as a date, e.g. at:2026-03-08T09:30")
    clock = options.wall_clock
    if value.tzinfo is None:
        instants = clock.resolve(clock.adjusted(value))
    else:
        instant = value.astimezone(UTC)
        wall, _ = wall_of(instant, options.zone)
        moved = clock.adjusted(wall)
        instants = (instant,) if moved == wall else clock.resolve(moved)
    return AtTrigger(spec=f"at:{value.isoformat()}", options=options, instants=instants)


def _daily(body: str, options: TriggerOptions) -> Trigger:
    at = _time_of_day(body)
    rule = WeekdayRule(at, frozenset(range(7)))
    return CalendarTrigger(spec=f"daily:{at:%H:%M}", options=options, rule=rule)


def _weekdays(body: str, options: TriggerOptions) -> Trigger:
    at = _time_of_day(body)
    rule = WeekdayRule(at, frozenset(range(5)))
    return CalendarTrigger(spec=f"weekdays:{at:%H:%M}", options=options, rule=rule)


def _weekly(body: str, options: TriggerOptions) -> Trigger:
    days_text, at = _split_at(body, "weekly:mon,thu@09:00")
    days = set()
    for name in days_text.lower().split(","):
        if name.strip() not in _DAY_NAMES:
            raise SpecError(f"unknown day {name.strip()!r} (allowed: {', '.join(_DAY_NAMES)})")
        days.add(_DAY_NAMES.index(name.strip()))
    canonical = ",".join(_DAY_NAMES[day] for day in sorted(days))
    rule = WeekdayRule(at, frozenset(days))
    return CalendarTrigger(spec=f"weekly:{canonical}@{at:%H:%M}", options=options, rule=rule)


def _monthly(body: str, options: TriggerOptions) -> Trigger:
    return _month_day("monthly", body, _ALL_MONTHS, options)


def _quarterly(body: str, options: TriggerOptions) -> Trigger:
    return _month_day("quarterly", body, _QUARTER_MONTHS, options)


def _month_day(kind: str, body: str, months: frozenset[int], options: TriggerOptions) -> Trigger:
    day_text, at = _split_at(body, f"{kind}:31@09:00 or {kind}:last@09:00")
    day_text = day_text.strip().lower()
    if day_text == "last":
        day = LAST_DAY
    elif day_text.isdigit() and 1 <= int(day_text) <= 31:
        day = int(day_text)
    else:
        raise SpecError(f"day {day_text!r} must be 1–31 or 'last'")
    rule = MonthDayRule(at, day, months)
    shown = "last" if day == LAST_DAY else str(day)
    return CalendarTrigger(spec=f"{kind}:{shown}@{at:%H:%M}", options=options, rule=rule)


def _yearly(body: str, options: TriggerOptions) -> Trigger:
    date_text, at = _split_at(body, "yearly:03-31@09:00")
    match = re.fullmatch(r"(\d{2})-(\d{2})", date_text.strip())
    if match is None:
        raise SpecError(f"date {date_text.strip()!r} must be MM-DD, e.g. 03-31")
    month, day = int(match[1]), int(match[2])
    if not 1 <= month <= 12:
        raise SpecError("month must be 01–12")
    if not 1 <= day <= days_in_month(2000, month):
        raise SpecError(f"day must be 01–{days_in_month(2000, month):02d} in month {month:02d}")
    rule = MonthDayRule(at, day, frozenset({month}))
    return CalendarTrigger(
        spec=f"yearly:{month:02d}-{day:02d}@{at:%H:%M}", options=options, rule=rule
    )


def _rrule(body: str, options: TriggerOptions) -> Trigger:
    rule = RRuleRule.parse(body, options.zone, options.start)
    return CalendarTrigger(spec=f"rrule:{rule.text}", options=options, rule=rule)


def _split_at(body: str, example: str) -> tuple[str, time]:
    what, at_sign, at_text = body.partition("@")
    if not at_sign or not what.strip():
        raise SpecError(f"expected <what>@HH:MM, e.g. {example}")
    return what, _time_of_day(at_text)


def _time_of_day(text: str) -> time:
    match = re.fullmatch(r"(\d{2}):(\d{2})", text.strip())
    if match is None:
        raise SpecError(f"time {text.strip()!r} must be HH:MM (24-hour), e.g. 09:30")
    hour, minute = int(match[1]), int(match[2])
    if hour > 23:
        raise SpecError("hour must be 00–23")
    if minute > 59:
        raise SpecError("minute must be 00–59")
    return time(hour, minute)


_PARSERS: dict[str, Parser] = {
    "cron": _cron,
    "every": _every,
    "at": _at,
    "daily": _daily,
    "weekdays": _weekdays,
    "weekly": _weekly,
    "monthly": _monthly,
    "quarterly": _quarterly,
    "yearly": _yearly,
    "rrule": _rrule,
}
