"""rrule: duly computes instances a year at a time from a restarted rule; the result must
equal dateutil iterating the whole rule from DTSTART."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from itertools import takewhile

import pytest
from dateutil.rrule import rrulestr
from hypothesis import given, settings
from hypothesis import strategies as st

from duly.timing import SpecError, parse_trigger

RULES = [
    "FREQ=DAILY;INTERVAL=3",
    "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=28,29",
    "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,FR",
    "FREQ=WEEKLY;INTERVAL=3;WKST=SU;BYDAY=SU,SA",
    "FREQ=WEEKLY",
    "FREQ=MONTHLY;INTERVAL=5;BYMONTHDAY=31",
    "FREQ=MONTHLY;BYMONTHDAY=28,29,30,31;BYSETPOS=-1",
    "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1",
    "FREQ=MONTHLY;INTERVAL=2;BYDAY=2TU",
    "FREQ=MONTHLY",
    "FREQ=YEARLY;INTERVAL=2",
    "FREQ=YEARLY;BYWEEKNO=1;BYDAY=MO",
    "FREQ=YEARLY;BYWEEKNO=53;BYDAY=FR",
    "FREQ=YEARLY;BYWEEKNO=52,53;BYDAY=SU",
    "FREQ=YEARLY;BYYEARDAY=-1,100",
    "FREQ=YEARLY;INTERVAL=4;BYMONTH=2;BYMONTHDAY=29",
]


@settings(max_examples=120, deadline=None)
@given(
    rule=st.sampled_from(RULES),
    anchor=st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2030, 12, 31)),
    years_later=st.integers(min_value=0, max_value=30),
)
def test_year_at_a_time_equals_dateutil_from_dtstart(rule: str, anchor: datetime, years_later: int) -> None:
    anchor = anchor.replace(microsecond=0)
    reference = rrulestr(f"RRULE:{rule};BYHOUR=9;BYMINUTE=30;BYSECOND=0", dtstart=anchor)
    spec = f"rrule:{rule};BYHOUR=9;BYMINUTE=30"
    if reference.after(anchor, inc=True) is None:  # e.g. every 4 years on 29 Feb from 1990
        with pytest.raises(SpecError, match="would never fire"):
            parse_trigger(spec, start=anchor.replace(tzinfo=UTC))
        return
    trigger = parse_trigger(spec, start=anchor.replace(tzinfo=UTC))
    window_start = anchor + timedelta(days=365 * years_later)
    window_end = window_start + timedelta(days=500)
    expected = [
        wall.replace(tzinfo=UTC)
        for wall in takewhile(lambda w: w <= window_end, reference.xafter(window_start))
    ]
    after = window_start.replace(tzinfo=UTC)
    actual = list(takewhile(lambda f: f <= window_end.replace(tzinfo=UTC), trigger.fires(after)))
    assert actual == sorted(expected)


def test_iso_week_one_can_start_in_december() -> None:
    trigger = parse_trigger("rrule:FREQ=YEARLY;BYWEEKNO=1;BYDAY=MO@09:00")
    fires = list(takewhile(lambda f: f.year < 2027, trigger.fires(datetime(2024, 12, 1, tzinfo=UTC))))
    assert [f.date() for f in fires] == [date(2024, 12, 30), date(2025, 12, 29)]


def test_rule_that_never_fires_is_refused() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday: every 7 days is always a Monday
    with pytest.raises(SpecError, match="would never fire"):
        parse_trigger("rrule:FREQ=DAILY;INTERVAL=7;BYDAY=TU@09:00", start=start)


def test_week_53_can_end_in_january() -> None:
    trigger = parse_trigger("rrule:FREQ=YEARLY;BYWEEKNO=53;BYDAY=FR@09:00")
    first = trigger.next_fire(datetime(2020, 6, 1, tzinfo=UTC))
    assert first == datetime.combine(date(2021, 1, 1), time(9), tzinfo=UTC)
