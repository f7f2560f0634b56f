"""One test group per spec form: what fires, canonical spec text, start/end, errors on misuse."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

import pytest

from duly.timing import (
    AtTrigger,
    CalendarTrigger,
    CronTrigger,
    EveryTrigger,
    SpecError,
    Trigger,
    parse_trigger,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)  # a Thursday


def utc_fires(trigger: Trigger, after: datetime = T0, count: int = 3) -> list[str]:
    return [f.isoformat() for f in islice(trigger.fires(after), count)]


# --- cron ------------------------------------------------------------------------------


def test_cron_every_five_minutes() -> None:
    trigger = parse_trigger("cron:*/5 * * * *")
    assert isinstance(trigger, CronTrigger)
    assert utc_fires(trigger, T0 + timedelta(minutes=2)) == [
        "2026-01-01T00:05:00+00:00",
        "2026-01-01T00:10:00+00:00",
        "2026-01-01T00:15:00+00:00",
    ]


def test_bare_cron_is_cron_and_canonical() -> None:
    trigger = parse_trigger("  0  22 * *   mon-fri ")
    assert trigger.spec == "cron:0 22 * * mon-fri"
    assert utc_fires(trigger, T0, 2) == ["2026-01-01T22:00:00+00:00", "2026-01-02T22:00:00+00:00"]
    assert trigger.next_fire(datetime(2026, 1, 2, 22, tzinfo=UTC)) == datetime(2026, 1, 5, 22, tzinfo=UTC)


def test_cron_extensions_from_cronsim() -> None:
    last_friday = parse_trigger("cron:0 9 * * 5L", "Europe/Paris")
    assert last_friday.next_fire(T0) == datetime(2026, 1, 30, 8, tzinfo=UTC)
    last_day = parse_trigger("cron:0 9 L 2 *")
    assert last_day.next_fire(T0) == datetime(2026, 2, 28, 9, tzinfo=UTC)


def test_cron_strictly_after() -> None:
    trigger = parse_trigger("cron:0 9 * * *")
    at_fire = datetime(2026, 1, 1, 9, tzinfo=UTC)
    assert trigger.next_fire(at_fire) == datetime(2026, 1, 2, 9, tzinfo=UTC)
    assert trigger.next_fire(at_fire - timedelta(microseconds=1)) == at_fire


@pytest.mark.parametrize(
    ("spec", "frequent"),
    [
        pytest.param("cron:*/5 * * * *", True, id="minute-step"),
        pytest.param("cron:0 * * * *", True, id="hour-wildcard"),
        pytest.param("cron:0 */2 * * *", True, id="hour-step"),
        pytest.param("cron:0-59/10 9 * * *", True, id="minute-range-step"),
        pytest.param("cron:* 9 * * *", True, id="minute-wildcard"),
        pytest.param("cron:0 9 * * *", False, id="fixed"),
        pytest.param("cron:0,30 9-17 * * 1-5", False, id="lists-and-ranges"),
        pytest.param("every:15m", True, id="every-15m"),
        pytest.param("every:23h", True, id="every-23h"),
        pytest.param("every:1d", False, id="every-1d"),
        pytest.param("daily:09:00", False, id="daily"),
        pytest.param("rrule:FREQ=DAILY;BYHOUR=9,10,11", False, id="rrule"),
        pytest.param("at:2026-01-01T09:00", False, id="at"),
    ],
)
def test_fires_more_than_hourly(spec: str, frequent: bool) -> None:
    assert parse_trigger(spec).fires_more_than_hourly is frequent


# --- every ------------------------------------------------------------------------------


def test_every_lands_on_the_epoch_grid() -> None:
    trigger = parse_trigger("every:15m", "Asia/Kolkata")  # +05:30: still :00/:15 UTC
    assert isinstance(trigger, EveryTrigger)
    assert utc_fires(trigger, T0 + timedelta(minutes=7)) == [
        "2026-01-01T00:15:00+00:00",
        "2026-01-01T00:30:00+00:00",
        "2026-01-01T00:45:00+00:00",
    ]


def test_every_anchored_at_start_includes_start() -> None:
    start = datetime(2026, 1, 1, 0, 7, 30, tzinfo=UTC)
    trigger = parse_trigger("every:90s", start=start)
    assert utc_fires(trigger, T0) == [
        "2026-01-01T00:07:30+00:00",
        "2026-01-01T00:09:00+00:00",
        "2026-01-01T00:10:30+00:00",
    ]


@pytest.mark.parametrize(("spec", "seconds"), [("every:45s", 45), ("every:2h", 7200), ("every:3d", 259200)])
def test_every_units(spec: str, seconds: int) -> None:
    trigger = parse_trigger(spec)
    first, second = islice(trigger.fires(T0), 2)
    assert (second - first).total_seconds() == seconds


# --- at ---------------------------------------------------------------------------------


def test_at_fires_once_in_its_zone() -> None:
    trigger = parse_trigger("at:2026-03-08T09:30", "Europe/London")
    assert isinstance(trigger, AtTrigger)
    assert list(trigger.fires(T0)) == [datetime(2026, 3, 8, 9, 30, tzinfo=UTC)]
    assert trigger.next_fire(datetime(2026, 3, 8, 9, 30, tzinfo=UTC)) is None


def test_at_accepts_an_aware_value() -> None:
    trigger = parse_trigger("at:2026-03-08T09:30:00+09:00", "Europe/London")
    assert trigger.spec == "at:2026-03-08T09:30:00+09:00"
    assert list(trigger.fires(T0)) == [datetime(2026, 3, 8, 0, 30, tzinfo=UTC)]


def test_at_in_the_past_never_fires() -> None:
    assert parse_trigger("at:2020-01-01T00:00").next_fire(T0) is None


# --- fixed-time date forms ---------------------------------------------------------------


def test_daily_in_a_zone() -> None:
    trigger = parse_trigger("daily:22:00", "Europe/London")
    assert isinstance(trigger, CalendarTrigger)
    assert utc_fires(trigger, datetime(2026, 3, 28, tzinfo=UTC)) == [
        "2026-03-28T22:00:00+00:00",
        "2026-03-29T21:00:00+00:00",
        "2026-03-30T21:00:00+00:00",
    ]


def test_weekdays_skip_the_weekend() -> None:
    trigger = parse_trigger("weekdays:07:30")
    days = [f.date() for f in islice(trigger.fires(datetime(2026, 1, 2, 8, tzinfo=UTC)), 3)]
    assert days == [date(2026, 1, 5), date(2026, 1, 6), date(2026, 1, 7)]


def test_weekly_is_canonical_and_ordered() -> None:
    trigger = parse_trigger("WEEKLY:Thu,mon,thu@09:00")
    assert trigger.spec == "weekly:mon,thu@09:00"
    days = [f.strftime("%a %d") for f in islice(trigger.fires(T0), 3)]
    assert days == ["Thu 01", "Mon 05", "Thu 08"]


def test_monthly_clamps_and_last() -> None:
    assert parse_trigger("monthly:05@09:00").spec == "monthly:5@09:00"
    clamped = parse_trigger("monthly:30@09:00")
    feb = clamped.next_fire(datetime(2026, 2, 1, tzinfo=UTC))
    assert feb == datetime(2026, 2, 28, 9, tzinfo=UTC)
    last = parse_trigger("monthly:last@09:00")
    assert last.next_fire(datetime(2028, 2, 1, tzinfo=UTC)) == datetime(2028, 2, 29, 9, tzinfo=UTC)


def test_quarterly_months() -> None:
    trigger = parse_trigger("quarterly:1@06:00")
    months = [f.month for f in islice(trigger.fires(datetime(2026, 1, 1, 7, tzinfo=UTC)), 4)]
    assert months == [4, 7, 10, 1]


# --- rrule --------------------------------------------------------------------------------


def test_rrule_last_day_of_month() -> None:
    trigger = parse_trigger("rrule:freq=monthly;bymonthday=-1@09:00", "Europe/London")
    assert trigger.spec == "rrule:FREQ=MONTHLY;BYMONTHDAY=-1@09:00"
    assert utc_fires(trigger) == [
        "2026-01-31T09:00:00+00:00",
        "2026-02-28T09:00:00+00:00",
        "2026-03-31T08:00:00+00:00",
    ]


def test_rrule_time_from_byhour_byminute() -> None:
    trigger = parse_trigger("rrule:FREQ=WEEKLY;BYDAY=MO,TH;BYHOUR=7,19;BYMINUTE=30")
    assert utc_fires(trigger, T0, 4) == [
        "2026-01-01T07:30:00+00:00",
        "2026-01-01T19:30:00+00:00",
        "2026-01-05T07:30:00+00:00",
        "2026-01-05T19:30:00+00:00",
    ]


def test_rrule_interval_counts_from_start() -> None:
    start = datetime(2026, 1, 15, tzinfo=UTC)
    trigger = parse_trigger("rrule:FREQ=MONTHLY;INTERVAL=2@12:00", start=start)
    days = [f.date() for f in islice(trigger.fires(T0), 3)]
    assert days == [date(2026, 1, 15), date(2026, 3, 15), date(2026, 5, 15)]
    # far from the start, the same alignment (odd months)
    assert trigger.next_fire(datetime(2040, 2, 1, tzinfo=UTC)) == datetime(2040, 3, 15, 12, tzinfo=UTC)


def test_rrule_interval_weekly_far_from_start() -> None:
    start = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
    trigger = parse_trigger("rrule:FREQ=WEEKLY;INTERVAL=3;BYDAY=MO,FR@08:00", start=start)
    fires = list(islice(trigger.fires(datetime(2031, 6, 1, tzinfo=UTC)), 4))
    assert all((f.date() - date(2026, 1, 5)).days // 7 % 3 == 0 for f in fires)
    assert [f.weekday() for f in fires] == [0, 4, 0, 4]


def test_rrule_count_and_until() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    counted = parse_trigger("rrule:FREQ=DAILY;COUNT=3@09:00", start=start)
    assert len(list(counted.fires(T0 - timedelta(days=30)))) == 3
    until = parse_trigger("rrule:FREQ=DAILY;UNTIL=20260103@09:00")
    assert [f.day for f in until.fires(T0)] == [1, 2, 3]
    until_utc = parse_trigger("rrule:FREQ=DAILY;UNTIL=20260103T075959Z@09:00", "Europe/Berlin")
    assert [f.day for f in until_utc.fires(T0)] == [1, 2]


def test_rrule_setpos_last_weekday_of_month() -> None:
    trigger = parse_trigger("rrule:FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1@17:00")
    days = [f.date() for f in islice(trigger.fires(T0), 3)]
    assert days == [date(2026, 1, 30), date(2026, 2, 27), date(2026, 3, 31)]


# --- start / end / naive ---------------------------------------------------------------------


def test_start_and_end_bound_the_fires() -> None:
    start = datetime(2026, 1, 3, 9, tzinfo=UTC)
    end = datetime(2026, 1, 5, 9, tzinfo=UTC)
    trigger = parse_trigger("daily:09:00", start=start, end=end)
    assert list(trigger.fires(T0)) == [start, datetime(2026, 1, 4, 9, tzinfo=UTC), end]
    assert trigger.next_fire(end) is None


def test_start_and_end_accept_any_offset() -> None:
    start = datetime(2026, 1, 3, 10, tzinfo=ZoneInfo("Europe/Paris"))
    trigger = parse_trigger("daily:09:00", start=start)
    assert trigger.start == datetime(2026, 1, 3, 9, tzinfo=UTC)


def test_naive_after_is_refused() -> None:
    trigger = parse_trigger("daily:09:00")
    with pytest.raises(ValueError, match="naive"):
        trigger.next_fire(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        trigger.fires(datetime(2026, 1, 1))


def test_results_are_utc() -> None:
    trigger = parse_trigger("daily:09:00", "Asia/Tokyo")
    fire = trigger.next_fire(datetime(2026, 1, 1, tzinfo=ZoneInfo("America/Los_Angeles")))
    assert fire is not None and fire.tzinfo is UTC


def test_end_of_time_is_none_not_an_error() -> None:
    late = datetime(9999, 12, 31, 12, tzinfo=UTC)
    for spec in ("daily:23:00", "cron:*/5 * * * *", "monthly:last@23:00", "every:1d"):
        assert parse_trigger(spec, "Pacific/Kiritimati").next_fire(late) is None


def test_triggers_are_frozen_values() -> None:
    a = parse_trigger("daily:09:00", "Europe/London")
    b = parse_trigger("Daily:09:00", "Europe/London")
    assert a == b and hash(a) == hash(b)
    assert a != parse_trigger("daily:09:00", "Europe/Paris")
    with pytest.raises(AttributeError):
        a.spec = "daily:10:00"  # type: ignore[misc]


def test_trigger_satisfies_protocol() -> None:
    assert isinstance(parse_trigger("every:1m"), Trigger)


def test_cron_wall_clock_accepts_dst_overrides_but_frequent_does_not() -> None:
    parse_trigger("cron:30 2 * * *", "America/New_York", dst_gap="skip")
    with pytest.raises(SpecError, match="follows elapsed time"):
        parse_trigger("cron:*/5 * * * *", "America/New_York", dst_repeat="both")
