"""Hypothesis properties of triggers, checked against independent references.

Windows are drawn near real DST transitions (found by :func:`first_transition`), where
the interesting things happen; the references themselves do not use duly's DST code.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from itertools import islice, pairwise, takewhile
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from duly.timing import load_calendar, parse_trigger
from duly.timing.dst import first_transition

DST_ZONES = [
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "America/Santiago",
    "Australia/Sydney",
    "America/Havana",
    "Africa/Casablanca",
    "Europe/Berlin",
    "Pacific/Auckland",
]
ALL_ZONES = [*DST_ZONES, "Asia/Kolkata", "Asia/Tokyo", "UTC"]
MINUTE = timedelta(minutes=1)


@st.composite
def instants_near_transitions(draw: st.DrawFn, zone_name: str) -> datetime:
    """An instant up to 8 days before or 1 day after a DST transition of the zone (or anywhere).

    8 days, so that weekly schedules reach the transition from a quiet week.
    """
    year = draw(st.integers(min_value=2001, max_value=2037))
    start = datetime(year, 1, 1, tzinfo=UTC) + timedelta(days=draw(st.integers(0, 364)))
    zone = ZoneInfo(zone_name)
    change = first_transition(zone, start, start + timedelta(days=366))
    if change is None or draw(st.integers(0, 9)) == 0:
        return start + timedelta(minutes=draw(st.integers(0, 24 * 60)))
    return change + timedelta(minutes=draw(st.integers(-8 * 24 * 60, 24 * 60)))


def at_time(value: time) -> str:
    return f"{value:%H:%M}"


times_of_day = st.one_of(
    st.sampled_from([time(0, 0), time(0, 30), time(1, 30), time(2, 0), time(2, 15), time(2, 30),
                     time(2, 45), time(3, 0), time(23, 30)]),
    st.builds(time, st.integers(0, 23), st.integers(0, 59)),
)

WALL_FORMS = [
    "daily:{t}",
    "weekdays:{t}",
    "weekly:sun,wed@{t}",
    "weekly:sun@{t}",
    "monthly:31@{t}",
    "quarterly:last@{t}",
    "yearly:03-29@{t}",
    "rrule:FREQ=MONTHLY;BYMONTHDAY=-1@{t}",
    "rrule:FREQ=WEEKLY;BYDAY=SU,SA@{t}",
    "cron:{m} {h} * * *",
    "at:2030-10-27T{t}",
]


def wall_spec(form: str, value: time) -> str:
    return form.format(t=at_time(value), m=value.minute, h=value.hour)


# --- ordering and consistency of next_fire --------------------------------------------------


@st.composite
def any_trigger_and_after(draw: st.DrawFn) -> tuple[str, dict[str, str], datetime]:
    zone = draw(st.sampled_from(ALL_ZONES))
    frequent = draw(st.sampled_from(
        [None, "cron:*/20 * * * *", "cron:*/15 1-3 * * *", "cron:10 * * * 0", "every:45m", "every:1d"]))
    options: dict[str, str] = {"tz": zone}
    if frequent is not None:
        spec = frequent
    else:
        spec = wall_spec(draw(st.sampled_from(WALL_FORMS)), draw(times_of_day))
        options["dst_gap"] = draw(st.sampled_from(["shift", "skip", "at_transition"]))
        options["dst_repeat"] = draw(st.sampled_from(["first", "last", "both"]))
        if not spec.startswith("cron:"):
            options["adjust"] = draw(st.sampled_from(
                ["none", "following", "preceding", "modified_following", "modified_preceding"]))
            options["calendar"] = draw(st.sampled_from(["WEEKENDS", "XECB", "GB-ENG"]))
    return spec, options, draw(instants_near_transitions(zone))


@settings(max_examples=150, deadline=None)
@given(case=any_trigger_and_after(), fraction=st.floats(min_value=0.0, max_value=1.0))
def test_fires_strictly_increase_and_next_fire_agrees(
    case: tuple[str, dict[str, str], datetime], fraction: float
) -> None:
    spec, options, after = case
    trigger = parse_trigger(spec, **options)  # type: ignore[arg-type]
    fires = list(islice(trigger.fires(after), 30))
    assert all(f.tzinfo is UTC for f in fires)
    assert all(a < b for a, b in zip([after, *fires], fires, strict=False))
    for earlier, later in pairwise(fires):
        point = earlier + (later - earlier) * fraction
        if point < later:
            assert trigger.next_fire(point) == later, (spec, options, point)


# --- wall time of fixed-time schedules ---------------------------------------------------------


DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: Forms that land on the transition's own date; {t} time, {d} the date.
TRANSITION_DAY_FORMS = [
    "daily:{t}",
    "weekly:{dow}@{t}",
    "monthly:{dom}@{t}",
    "yearly:{mm}-{dom:02d}@{t}",
    "rrule:FREQ=MONTHLY;BYMONTHDAY={dom}@{t}",
    "rrule:FREQ=WEEKLY;BYDAY={dow2}@{t}",
    "cron:{m} {h} {dom} {mm} *",
    "at:{d}T{t}",
]


@st.composite
def schedules_at_a_transition(draw: st.DrawFn) -> tuple[str, str, time, datetime]:
    """A fixed-time schedule that fires on a DST transition's date, at a wall time near the
    transition (often inside its gap or repeat), and a query up to 8 days before it."""
    zone_name = draw(st.sampled_from(DST_ZONES))
    zone = ZoneInfo(zone_name)
    year = draw(st.integers(min_value=2001, max_value=2037))
    change = first_transition(zone, datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC))
    assume(change is not None)
    assert change is not None
    before = (change - timedelta(seconds=1)).astimezone(zone)
    near = before + timedelta(minutes=draw(st.integers(-120, 120)))  # wall times in the old offset
    value = near.time().replace(second=0, microsecond=0) if draw(st.booleans()) else draw(times_of_day)
    day = near.date()
    form = draw(st.sampled_from(TRANSITION_DAY_FORMS))
    spec = form.format(
        t=at_time(value), h=value.hour, m=value.minute, d=day.isoformat(), dom=day.day, mm=f"{day.month:02d}",
        dow=DAY_NAMES[day.weekday()], dow2=DAY_NAMES[day.weekday()][:2].upper(),
    )
    after = change - timedelta(minutes=draw(st.integers(0, 8 * 24 * 60)))
    return zone_name, spec, value, after


def exists(wall: datetime, zone: ZoneInfo) -> bool:
    return wall.replace(tzinfo=zone).astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall


def check_wall_time(fire: datetime, zone: ZoneInfo, value: time) -> None:
    """The fire is at the requested wall time, or at the documented shift in a gap."""
    local = fire.astimezone(zone)
    wall = local.replace(tzinfo=None)
    requested = datetime.combine(wall.date(), value)
    assert local.fold == 0, "a repeated wall time fires at its first occurrence"
    if exists(requested, zone):
        assert wall == requested
    else:  # in a gap: the same wall time shifted by the gap's length
        offset_before = (fire - timedelta(days=1)).astimezone(zone).utcoffset()
        offset_now = local.utcoffset()
        assert offset_before is not None and offset_now is not None
        assert wall == requested + (offset_now - offset_before)


@settings(max_examples=200, deadline=None)
@given(case=schedules_at_a_transition())
def test_fixed_time_at_a_transition_fires_at_wall_time_or_documented_shift(
    case: tuple[str, str, time, datetime],
) -> None:
    zone_name, spec, value, after = case
    zone = ZoneInfo(zone_name)
    trigger = parse_trigger(spec, zone_name)
    fires = list(islice(trigger.fires(after), 3))
    assert fires or spec.startswith("at:"), spec  # an at: wall may precede the query
    for fire in fires:
        check_wall_time(fire, zone, value)
    # and asking again from just before each fire finds it
    for fire in fires:
        assert trigger.next_fire(fire - timedelta(microseconds=1)) == fire


@settings(max_examples=100, deadline=None)
@given(
    zone_name=st.sampled_from(ALL_ZONES),
    form=st.sampled_from(WALL_FORMS),
    value=times_of_day,
    adjust=st.sampled_from(["none", "following", "modified_preceding"]),
    data=st.data(),
)
def test_fixed_time_fires_at_requested_wall_time_or_documented_shift(
    zone_name: str, form: str, value: time, adjust: str, data: st.DataObject
) -> None:
    zone = ZoneInfo(zone_name)
    spec = wall_spec(form, value)
    options = {} if spec.startswith("cron:") else {"adjust": adjust, "calendar": "XECB"}
    trigger = parse_trigger(spec, zone_name, **options)  # type: ignore[arg-type]
    after = data.draw(instants_near_transitions(zone_name))
    calendar = load_calendar("XECB")
    for fire in islice(trigger.fires(after), 12):
        check_wall_time(fire, zone, value)
        if options and adjust != "none":
            assert calendar.is_business_day(fire.astimezone(zone).date())


ONCE_A_DAY_ZONES = [*DST_ZONES[:8], "Asia/Kolkata", "Asia/Tokyo", "America/Sao_Paulo", "Asia/Tehran"]


@pytest.mark.parametrize("zone_name", ONCE_A_DAY_ZONES)
@settings(max_examples=1, deadline=None)
@given(value=times_of_day)
@example(value=time(2, 30))
def test_daily_fires_exactly_once_per_local_date_for_ten_years(zone_name: str, value: time) -> None:
    zone = ZoneInfo(zone_name)
    trigger = parse_trigger(f"daily:{value:%H:%M}", zone_name)
    first, last = date(2016, 1, 1), date(2025, 12, 31)
    start = datetime.combine(first, time(), tzinfo=zone) - timedelta(seconds=1)
    dates = Counter(
        f.astimezone(zone).date()
        for f in takewhile(lambda f: f.astimezone(zone).date() <= last, trigger.fires(start))
    )
    assert len(dates) == (last - first).days + 1
    assert set(dates.values()) == {1}
    assert min(dates) == first and max(dates) == last


# --- sub-hourly schedules against a minute-by-minute reference ---------------------------------

def field_values(text: str, highest: int) -> set[int]:
    """Values of one cron minute/hour field: numbers, a-b, *, with /step, comma lists."""
    values: set[int] = set()
    for item in text.split(","):
        base, _, step = item.partition("/")
        low, high = (0, highest) if base == "*" else (int(base.split("-")[0]), int(base.split("-")[-1]))
        if step and "-" not in base and base != "*":
            high = highest
        values.update(range(low, high + 1, int(step or 1)))
    return values


def reference_match(expression: str, wall: datetime) -> bool:
    """A deliberately separate matcher for the minute and hour fields (the rest are `*`)."""
    minute, hour, *rest = expression.split()
    assert rest == ["*", "*", "*"]
    return wall.minute in field_values(minute, 59) and wall.hour in field_values(hour, 23)


FREQUENT_CRONS = [
    "*/5 * * * *",
    "*/15 * * * *",
    "0,30 * * * *",
    "*/10 0-3 * * *",
    "* 2 * * *",
    "*/7 * * * *",
    "15 * * * *",
    "45 */2 * * *",
    "5/20 * * * *",
    "10-40/10 1-3 * * *",
]


@settings(max_examples=60, deadline=None)
@given(
    expression=st.sampled_from(FREQUENT_CRONS),
    zone_name=st.sampled_from(DST_ZONES),
    data=st.data(),
    length=st.integers(min_value=30, max_value=6 * 60),
)
def test_sub_hourly_cron_matches_every_real_minute_exactly_once(
    expression: str, zone_name: str, data: st.DataObject, length: int
) -> None:
    zone = ZoneInfo(zone_name)
    near = data.draw(instants_near_transitions(zone_name))
    change = first_transition(zone, near - timedelta(days=1), near + timedelta(days=400)) or near
    begin = (change + timedelta(minutes=data.draw(st.integers(-5 * 60, 60)))).replace(second=0, microsecond=0)
    end = begin + length * MINUTE
    reference = [
        begin + k * MINUTE
        for k in range(length + 1)
        if reference_match(expression, (begin + k * MINUTE).astimezone(zone).replace(tzinfo=None))
    ]
    trigger = parse_trigger(f"cron:{expression}", zone_name)
    actual = list(takewhile(lambda f: f <= end, trigger.fires(begin - timedelta(microseconds=1))))
    assert actual == reference


@settings(max_examples=50, deadline=None)
@given(
    count=st.integers(min_value=1, max_value=180),
    unit=st.sampled_from(["s", "m", "h", "d"]),
    zone_name=st.sampled_from(ALL_ZONES),
    after=st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2060, 1, 1), timezones=st.just(UTC)),
)
def test_every_is_a_fixed_utc_grid(count: int, unit: str, zone_name: str, after: datetime) -> None:
    period = timedelta(seconds=count * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit])
    trigger = parse_trigger(f"every:{count}{unit}", zone_name)
    fires = list(islice(trigger.fires(after), 5))
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert after < fires[0] <= after + period
    assert all((f - epoch) % period == timedelta(0) for f in fires)
    assert all(b - a == period for a, b in pairwise(fires))
