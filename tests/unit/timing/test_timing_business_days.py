"""Business-day conventions and calendars, with finance-rules.md checklist items 1–5."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import islice, takewhile
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from duly.timing import (
    BusinessCalendar,
    Convention,
    SpecError,
    adjust,
    financial_calendar_codes,
    load_calendar,
    parse_trigger,
)

WEEKENDS = load_calendar(None)
TARGET = load_calendar("XECB")

# --- conventions (checklist 1–4) -------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    day=st.dates(min_value=date(2000, 1, 1), max_value=date(2040, 12, 31)),
    convention=st.sampled_from(list(Convention)),
    code=st.sampled_from([None, "XECB", "GB-ENG", "US", "NYSE"]),
)
def test_business_day_is_never_moved(day: date, convention: Convention, code: str | None) -> None:
    """Checklist 1: an unadjusted business day is never moved, under any convention."""
    calendar = load_calendar(code)
    moved = adjust(day, convention, calendar)
    if calendar.is_business_day(day):
        assert moved == day
    else:
        assert calendar.is_business_day(moved) or convention is Convention.NONE


@pytest.mark.parametrize(
    ("day", "convention", "calendar", "expected"),
    [
        pytest.param(date(2024, 6, 1), "following", WEEKENDS, date(2024, 6, 3), id="2-sat-following-mon"),
        pytest.param(date(2024, 6, 1), "preceding", WEEKENDS, date(2024, 5, 31), id="2-sat-preceding-fri"),
        pytest.param(date(2024, 6, 1), "none", WEEKENDS, date(2024, 6, 1), id="none-never-moves"),
        pytest.param(
            date(2024, 8, 31), "modified_following", WEEKENDS, date(2024, 8, 30), id="3-mf-stays-in-month"
        ),
        pytest.param(
            date(2024, 9, 1), "modified_preceding", WEEKENDS, date(2024, 9, 2), id="3-mp-stays-in-month"
        ),
        pytest.param(
            date(2024, 6, 1), "modified_following", WEEKENDS, date(2024, 6, 3), id="mf-like-following"
        ),
        pytest.param(
            date(2024, 6, 2), "modified_preceding", WEEKENDS, date(2024, 6, 3), id="mp-not-back-into-may"
        ),
        pytest.param(date(2024, 3, 29), "following", TARGET, date(2024, 4, 2), id="4-target-good-friday"),
        pytest.param(date(2024, 3, 29), "preceding", TARGET, date(2024, 3, 28), id="target-gf-preceding"),
        pytest.param(date(2024, 4, 1), "preceding", TARGET, date(2024, 3, 28), id="target-easter-mon-back"),
        pytest.param(
            date(2024, 3, 31), "modified_following", TARGET, date(2024, 3, 28), id="target-mf-easter-sunday"
        ),
        pytest.param(
            date(2024, 12, 25), "following", TARGET, date(2024, 12, 27), id="target-christmas-run"
        ),
        pytest.param(
            date(2022, 12, 31), "modified_following", TARGET, date(2022, 12, 30), id="target-mf-year-end"
        ),
        pytest.param(date(2025, 1, 1), "following", TARGET, date(2025, 1, 2), id="sepa-1-jan-to-2-jan"),
    ],
)
def test_conventions(day: date, convention: str, calendar: BusinessCalendar, expected: date) -> None:
    assert adjust(day, convention, calendar) == expected


def test_convention_names_are_forgiving_but_checked() -> None:
    assert adjust(date(2024, 6, 1), "Modified-Following", WEEKENDS) == date(2024, 6, 3)
    with pytest.raises(SpecError, match="unknown business-day convention 'sideways'"):
        adjust(date(2024, 6, 1), "sideways", WEEKENDS)


@settings(max_examples=100, deadline=None)
@given(
    first=st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 12, 31)),
    gap=st.integers(min_value=0, max_value=60),
    convention=st.sampled_from(list(Convention)),
)
def test_conventions_are_monotone(first: date, gap: int, convention: Convention) -> None:
    """Schedules rely on it to keep adjusted fires in order."""
    later = first + timedelta(days=gap)
    assert adjust(first, convention, TARGET) <= adjust(later, convention, TARGET)


# --- calendars (checklist 5) -----------------------------------------------------------


def test_rail_calendar_differs_from_country_holidays() -> None:
    """Checklist 5: German Unity Day closes Germany but not TARGET; 1 May the reverse for England."""
    unity_day, labour_day = date(2024, 10, 3), date(2024, 5, 1)
    assert not load_calendar("DE").is_business_day(unity_day)
    assert TARGET.is_business_day(unity_day)
    assert not TARGET.is_business_day(labour_day)
    assert load_calendar("GB-ENG").is_business_day(labour_day)


@pytest.mark.parametrize(
    ("code", "closed", "open_"),
    [
        pytest.param("GB-ENG", date(2024, 8, 26), date(2024, 8, 5), id="england-late-summer"),
        pytest.param("GB-SCT", date(2024, 8, 5), date(2024, 8, 26), id="scotland-summer"),
        pytest.param("US", date(2024, 7, 4), date(2024, 7, 5), id="us-independence"),
        pytest.param("us-ny", date(2024, 2, 12), date(2024, 2, 13), id="us-ny-lincoln-lowercase"),
        pytest.param("DE", date(2024, 12, 26), date(2024, 12, 27), id="de-boxing-day"),
        pytest.param("NYSE", date(2024, 3, 29), date(2024, 4, 1), id="nyse-good-friday"),
        pytest.param("XECB", date(2024, 12, 26), date(2024, 12, 24), id="target-26-dec"),
        pytest.param("WEEKENDS", date(2024, 6, 1), date(2024, 12, 25), id="weekends-only"),
    ],
)
def test_calendar_codes(code: str, closed: date, open_: date) -> None:
    calendar = load_calendar(code)
    assert not calendar.is_business_day(closed)
    assert calendar.is_business_day(open_)


def test_financial_codes_include_target_and_nyse() -> None:
    assert {"XECB", "NYSE"} <= financial_calendar_codes()


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("ZZ", "unknown calendar 'ZZ'"),
        ("GB-XXX", "unknown calendar 'GB-XXX': subdivisions of GB are"),
        ("Mars", "unknown calendar 'Mars'"),
    ],
)
def test_unknown_calendar(code: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_calendar(code)


def test_manual_overrides() -> None:
    calendar = BusinessCalendar(
        "BACS-TEST",
        lambda year: [date(year, 12, 25)],
        extra_holidays=[date(2024, 12, 24)],
        extra_business_days=[date(2024, 12, 25)],
    )
    assert not calendar.is_business_day(date(2024, 12, 24))
    assert calendar.is_business_day(date(2024, 12, 25))
    assert not calendar.is_business_day(date(2025, 12, 25))
    assert calendar.next_business_day(date(2024, 12, 23)) == date(2024, 12, 25)


def test_calendar_without_business_days_says_so() -> None:
    closed = BusinessCalendar("CLOSED", weekend=range(7))
    with pytest.raises(ValueError, match="no business day within"):
        adjust(date(2024, 1, 1), "following", closed)


# --- conventions inside triggers ---------------------------------------------------------

BERLIN = ZoneInfo("Europe/Berlin")


def berlin_fires(spec: str, after: datetime, count: int, **options: str) -> list[str]:
    trigger = parse_trigger(spec, "Europe/Berlin", **options)  # type: ignore[arg-type]
    return [f.astimezone(BERLIN).isoformat() for f in islice(trigger.fires(after), count)]


def test_daily_following_over_easter_fires_once_per_business_day() -> None:
    fires = berlin_fires(
        "daily:09:00", datetime(2024, 3, 27, 12, tzinfo=BERLIN), 4, calendar="XECB", adjust="following"
    )
    assert fires == [
        "2024-03-28T09:00:00+01:00",
        "2024-04-02T09:00:00+02:00",  # Fri, Sat, Sun, Mon (Easter Monday) and Tue: once
        "2024-04-03T09:00:00+02:00",
        "2024-04-04T09:00:00+02:00",
    ]


def test_daily_preceding_over_easter_fires_once() -> None:
    fires = berlin_fires(
        "daily:09:00", datetime(2024, 3, 27, 12, tzinfo=BERLIN), 3, calendar="XECB", adjust="preceding"
    )
    assert fires == ["2024-03-28T09:00:00+01:00", "2024-04-02T09:00:00+02:00", "2024-04-03T09:00:00+02:00"]


def test_preceding_can_fire_before_the_unadjusted_date() -> None:
    """Saturday's occurrence moves back to Friday, which is still after the query."""
    fires = berlin_fires(
        "weekly:sat@09:00", datetime(2024, 5, 31, 8, tzinfo=BERLIN), 2, adjust="preceding"
    )
    assert fires == ["2024-05-31T09:00:00+02:00", "2024-06-07T09:00:00+02:00"]


def test_following_from_a_query_on_the_moved_day() -> None:
    """Sunday's occurrence moved to Monday still fires when asked from Monday morning."""
    fires = berlin_fires("weekly:sun@09:00", datetime(2024, 6, 3, 8, tzinfo=BERLIN), 1, adjust="following")
    assert fires == ["2024-06-03T09:00:00+02:00"]


def test_monthly_modified_following_target() -> None:
    fires = berlin_fires(
        "monthly:last@17:00",
        datetime(2024, 1, 1, tzinfo=BERLIN),
        4,
        calendar="XECB",
        adjust="modified_following",
    )
    assert fires == [
        "2024-01-31T17:00:00+01:00",
        "2024-02-29T17:00:00+01:00",
        "2024-03-28T17:00:00+01:00",  # Sun 31 Mar → Tue 2 Apr is next month → Thu 28 Mar
        "2024-04-30T17:00:00+02:00",
    ]


def test_at_following() -> None:
    fires = berlin_fires(
        "at:2024-03-29T09:00", datetime(2024, 3, 1, tzinfo=BERLIN), 2, calendar="XECB", adjust="following"
    )
    assert fires == ["2024-04-02T09:00:00+02:00"]


def test_aware_at_on_business_day_keeps_its_instant() -> None:
    trigger = parse_trigger("at:2024-04-03T07:00:00+00:00", "Europe/Berlin", adjust="following")
    assert trigger.next_fire(datetime(2024, 1, 1, tzinfo=UTC)) == datetime(2024, 4, 3, 7, tzinfo=UTC)


def test_rrule_following_emits_each_date_once() -> None:
    after = datetime(2024, 3, 27, tzinfo=BERLIN)
    fires = berlin_fires(
        "rrule:FREQ=DAILY;BYHOUR=9,15", after, 4, calendar="XECB", adjust="following"
    )
    assert fires == [
        "2024-03-27T09:00:00+01:00",
        "2024-03-27T15:00:00+01:00",
        "2024-03-28T09:00:00+01:00",
        "2024-03-28T15:00:00+01:00",
    ]
    later = berlin_fires("rrule:FREQ=DAILY;BYHOUR=9,15", after + timedelta(days=1, hours=16), 2,
                         calendar="XECB", adjust="following")
    assert later == ["2024-04-02T09:00:00+02:00", "2024-04-02T15:00:00+02:00"]


def test_weekdays_with_holiday_fires_on_next_business_day_once() -> None:
    fires = berlin_fires(
        "weekdays:09:00", datetime(2024, 12, 23, 12, tzinfo=BERLIN), 3, calendar="XECB", adjust="following"
    )
    assert fires == ["2024-12-24T09:00:00+01:00", "2024-12-27T09:00:00+01:00", "2024-12-30T09:00:00+01:00"]


def test_convention_over_a_year_is_strictly_increasing_and_business_only() -> None:
    for convention in ("following", "modified_following", "preceding", "modified_preceding"):
        trigger = parse_trigger("daily:10:00", "Europe/Berlin", calendar="XECB", adjust=convention)
        start = datetime(2024, 1, 1, tzinfo=UTC)
        fires = list(takewhile(lambda f: f.year < 2025, trigger.fires(start)))
        assert fires == sorted(set(fires))
        assert all(TARGET.is_business_day(f.astimezone(BERLIN).date()) for f in fires)
        assert len(fires) == 256  # 366 days − 104 weekend days − 6 TARGET holidays
