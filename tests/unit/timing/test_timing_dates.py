"""Month arithmetic and occurrence counts: finance-rules.md checklist items 6, 7 and 9."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime
from itertools import takewhile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from duly.timing import LAST_DAY, clamp_date, nth_occurrence_date, parse_trigger


def fires_in_year(spec: str, year: int, tz: str = "Europe/London") -> list[datetime]:
    trigger = parse_trigger(spec, tz)
    start = datetime(year - 1, 12, 31, 12, tzinfo=UTC)
    return [f for f in takewhile(lambda f: f.year <= year, trigger.fires(start)) if f.year == year]


@pytest.mark.parametrize("spec", ["monthly:31@09:00", "rrule:FREQ=MONTHLY;BYMONTHDAY=28,29,30,31;BYSETPOS=-1@09:00"])
def test_monthly_31st_pays_every_month(spec: str) -> None:
    """Checklist 6: Jan 31, Feb 29, Mar 31, Apr 30 … no month skipped."""
    days = [f.date() for f in fires_in_year(spec, 2024)]
    assert days == [clamp_date(2024, month, 31) for month in range(1, 13)]
    assert days[:4] == [date(2024, 1, 31), date(2024, 2, 29), date(2024, 3, 31), date(2024, 4, 30)]


def test_rrule_bymonthday_31_drops_short_months_as_rfc_says() -> None:
    """The contrast with checklist 6: plain RFC 5545 skips months without a 31st."""
    months = [f.month for f in fires_in_year("rrule:FREQ=MONTHLY;BYMONTHDAY=31@09:00", 2024)]
    assert months == [1, 3, 5, 7, 8, 10, 12]


def test_cron_day_31_keeps_cron_meaning() -> None:
    months = [f.month for f in fires_in_year("cron:0 9 31 * *", 2024, "UTC")]
    assert months == [1, 3, 5, 7, 8, 10, 12]


def test_occurrence_k_depends_only_on_anchor_and_k() -> None:
    """Checklist 7: after the Feb 29 payment the March date is still Mar 31."""
    anchor = date(2024, 1, 31)
    got = [nth_occurrence_date(anchor, k, 1) for k in range(5)]
    assert got == [date(2024, 1, 31), date(2024, 2, 29), date(2024, 3, 31), date(2024, 4, 30), date(2024, 5, 31)]
    assert nth_occurrence_date(anchor, 13, 1) == date(2025, 2, 28)


@pytest.mark.parametrize(
    ("anchor", "step", "day", "expected"),
    [
        pytest.param(date(2023, 11, 30), 3, None, [date(2024, 2, 29), date(2024, 5, 30), date(2024, 8, 30)],
                     id="quarterly-30th"),
        pytest.param(date(2024, 2, 29), 12, None,
                     [date(2025, 2, 28), date(2026, 2, 28), date(2027, 2, 28), date(2028, 2, 29)],
                     id="yearly-leap-day"),
        pytest.param(date(2024, 2, 15), 1, LAST_DAY, [date(2024, 3, 31), date(2024, 4, 30), date(2024, 5, 31)],
                     id="last-day"),
    ],
)
def test_nth_occurrence_date_table(anchor: date, step: int, day: int | None, expected: list[date]) -> None:
    assert [nth_occurrence_date(anchor, k, step, day) for k in range(1, len(expected) + 1)] == expected


@settings(max_examples=200, deadline=None)
@given(
    anchor=st.dates(min_value=date(1990, 1, 1), max_value=date(2090, 12, 31)),
    k=st.integers(min_value=0, max_value=400),
    step=st.sampled_from([1, 3, 6, 12]),
)
def test_nth_occurrence_never_drifts(anchor: date, k: int, step: int) -> None:
    got = nth_occurrence_date(anchor, k, step)
    months = (got.year - anchor.year) * 12 + got.month - anchor.month
    assert months == k * step
    assert got.day == min(anchor.day, clamp_date(got.year, got.month, LAST_DAY).day)


def test_nth_occurrence_date_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="months_step"):
        nth_occurrence_date(date(2024, 1, 1), 1, 0)
    with pytest.raises(ValueError, match="day must be 1–31"):
        nth_occurrence_date(date(2024, 1, 1), 1, 1, 32)


@pytest.mark.parametrize(
    ("spec", "year", "count"),
    [
        pytest.param("weekly:mon@09:00", 2024, 53, id="weekly-53-mondays-2024"),
        pytest.param("weekly:mon@09:00", 2025, 52, id="weekly-52-mondays-2025"),
        pytest.param("rrule:FREQ=WEEKLY;BYDAY=MO@09:00", 2024, 53, id="rrule-weekly-2024"),
        pytest.param("monthly:15@09:00", 2025, 12, id="monthly-12"),
        pytest.param("monthly:last@09:00", 2024, 12, id="monthly-last-12"),
        pytest.param("quarterly:31@09:00", 2025, 4, id="quarterly-4"),
        pytest.param("yearly:02-29@09:00", 2025, 1, id="yearly-1-in-non-leap-year"),
    ],
)
def test_occurrences_per_year(spec: str, year: int, count: int) -> None:
    """Checklist 9: 52/53 weekly, 12 monthly and 4 quarterly occurrences per year."""
    assert len(fires_in_year(spec, year)) == count


def test_quarterly_months_and_clamp() -> None:
    fires = fires_in_year("quarterly:31@09:00", 2025)
    assert [f.date() for f in fires] == [date(2025, 1, 31), date(2025, 4, 30), date(2025, 7, 31), date(2025, 10, 31)]


def test_yearly_feb_29_is_feb_28_in_non_leap_years() -> None:
    trigger = parse_trigger("yearly:02-29@09:00", "UTC")
    fires = list(takewhile(lambda f: f.year <= 2028, trigger.fires(datetime(2024, 1, 1, tzinfo=UTC))))
    assert [f.date() for f in fires] == [date(2024, 2, 29), date(2025, 2, 28), date(2026, 2, 28),
                                         date(2027, 2, 28), date(2028, 2, 29)]


def test_weekly_days_count_per_weekday() -> None:
    fires = fires_in_year("weekly:mon,thu@09:00", 2025)
    assert Counter(f.weekday() for f in fires) == {0: 52, 3: 52}
