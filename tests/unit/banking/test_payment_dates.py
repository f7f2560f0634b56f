"""Payment dates (finance-rules.md checklist 1–9): rails' calendars, conventions, recurrence."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest

from duly.banking.rails import rail_calendar
from duly.operations.localtime import execution_date, execution_instant
from duly.operations.policy import FailurePolicy, ach_reinitiation
from duly.operations.recurring.planning import PaymentPlan
from duly.operations.recurring.recurrence import Recurrence


def dates(rec: Recurrence, n: int) -> list[date]:
    return [d for _, (_, d) in zip(range(n), rec.dates(), strict=False)]


@pytest.mark.parametrize("convention", ["none", "following", "modified_following", "preceding",
                                        "modified_preceding"])  # fmt: skip
def test_1_a_business_day_is_never_moved(convention: str) -> None:
    day = date(2024, 6, 3)
    for rail in ("US-FED", "GB-BACS", "TARGET", None):
        assert execution_date(day, convention, rail) == day


def test_2_3_weekend_conventions() -> None:
    assert execution_date(date(2024, 6, 1), "following", None) == date(2024, 6, 3)
    assert execution_date(date(2024, 6, 1), "preceding", None) == date(2024, 5, 31)
    assert execution_date(date(2024, 8, 31), "modified_following", None) == date(2024, 8, 30)
    assert execution_date(date(2024, 9, 1), "modified_preceding", None) == date(2024, 9, 2)


def test_4_target_good_friday_rolls_over_easter_monday() -> None:
    assert execution_date(date(2024, 3, 29), "following", "TARGET") == date(2024, 4, 2)


def test_5_the_rail_decides_not_the_country() -> None:
    may_day = date(2024, 5, 1)  # TARGET closed; the Fed and Bacs open
    assert not rail_calendar("TARGET").is_business_day(may_day)
    assert rail_calendar("US-FED").is_business_day(may_day)
    assert rail_calendar("GB-BACS").is_business_day(may_day)
    assert execution_date(may_day, "following", "TARGET") == date(2024, 5, 2)
    spring = date(2024, 5, 27)  # UK spring bank holiday and US Memorial Day; TARGET open
    assert rail_calendar("TARGET").is_business_day(spring)
    assert not rail_calendar("GB-BACS").is_business_day(spring)
    assert not rail_calendar("US-FED").is_business_day(spring)


def test_6_monthly_on_the_31st_pays_every_month() -> None:
    got = dates(Recurrence("monthly", date(2024, 1, 31)), 12)
    assert [d.month for d in got] == list(range(1, 13))
    assert got[:4] == [date(2024, 1, 31), date(2024, 2, 29), date(2024, 3, 31), date(2024, 4, 30)]
    assert dates(Recurrence("monthly", date(2023, 1, 31)), 2)[1] == date(2023, 2, 28)


def test_7_occurrence_k_depends_only_on_the_anchor() -> None:
    rec = Recurrence("monthly", date(2024, 1, 31))
    assert rec.date_of(2) == date(2024, 3, 31)  # after Feb 29, still the 31st: no drift
    assert [rec.date_of(k) for k in range(12)] == dates(rec, 12)
    last = Recurrence("monthly", date(2024, 1, 15), day_of_month=-1)
    assert dates(last, 3) == [date(2024, 1, 31), date(2024, 2, 29), date(2024, 3, 31)]
    quarterly = Recurrence("quarterly", date(2023, 11, 30))
    assert dates(quarterly, 3) == [date(2023, 11, 30), date(2024, 2, 29), date(2024, 5, 30)]
    leap = Recurrence("yearly", date(2024, 2, 29))
    assert dates(leap, 5)[1:] == [date(2025, 2, 28), date(2026, 2, 28), date(2027, 2, 28),
                                  date(2028, 2, 29)]  # fmt: skip


def test_7_a_day_before_the_start_begins_next_period() -> None:
    rec = Recurrence("monthly", date(2024, 1, 15), day_of_month=10)
    assert dates(rec, 2) == [date(2024, 2, 10), date(2024, 3, 10)]


def test_8_occurrences_keep_both_dates() -> None:
    plan = PaymentPlan(Recurrence("monthly", date(2024, 6, 1)), "09:00", "Europe/London",
                       "following", "GB-BACS")  # fmt: skip
    first = plan.occurrence(0)
    assert first is not None
    assert (first.unadjusted_date, first.execution_date) == (date(2024, 6, 1), date(2024, 6, 3))
    assert first.execute_at == datetime(2024, 6, 3, 8, 0, tzinfo=UTC)  # 09:00 BST


@pytest.mark.parametrize(
    ("frequency", "start", "per_year"),
    [
        ("weekly", date(2024, 1, 1), {52, 53}),
        ("weekly", date(2026, 1, 1), {52, 53}),
        ("monthly", date(2024, 1, 31), {12}),
        ("quarterly", date(2024, 1, 31), {4}),
        ("yearly", date(2024, 2, 29), {1}),
    ],
)
def test_9_occurrences_per_year(frequency: str, start: date, per_year: set[int]) -> None:
    rec = Recurrence(frequency, start, end=date(start.year + 3, 12, 31))
    by_year = Counter(d.year for _, d in rec.dates())
    assert set(by_year.values()) <= per_year
    assert by_year[start.year + 1] in per_year


def test_rrule_payments() -> None:
    last = Recurrence("rrule", date(2024, 1, 1), rrule="FREQ=MONTHLY;BYMONTHDAY=-1")
    assert dates(last, 3) == [date(2024, 1, 31), date(2024, 2, 29), date(2024, 3, 31)]
    clamp = Recurrence(
        "rrule", date(2023, 12, 30), rrule="FREQ=MONTHLY;BYMONTHDAY=28,29,30;BYSETPOS=-1"
    )
    assert dates(clamp, 3) == [date(2023, 12, 30), date(2024, 1, 30), date(2024, 2, 29)]
    counted = Recurrence("rrule", date(2024, 1, 1), rrule="FREQ=WEEKLY;BYDAY=MO,TH;COUNT=3")
    assert dates(counted, 10) == [date(2024, 1, 1), date(2024, 1, 4), date(2024, 1, 8)]
    raw = Recurrence(
        "rrule", date(2014, 12, 31), rrule="FREQ=MONTHLY"
    )  # RFC 5545 drops invalid dates
    assert dates(raw, 3) == [date(2014, 12, 31), date(2015, 1, 31), date(2015, 3, 31)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"frequency": "daily"},
        {"frequency": "monthly", "day_of_month": 32},
        {"frequency": "monthly", "interval": 0},
        {"frequency": "weekly", "weekday": 7},
        {"frequency": "rrule", "rrule": "FREQ=HOURLY"},
        {"frequency": "rrule", "rrule": "FREQ=DAILY;BYHOUR=9"},
        {"frequency": "rrule", "rrule": "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"},
        {"frequency": "rrule", "rrule": "FREQ=DAILY;INTERVAL=0"},
        {"frequency": "rrule", "rrule": "FREQ=DAILY;INTERVAL=-1"},
        {"frequency": "rrule", "rrule": "FREQ=DAILY;INTERVAL=x"},
        {"frequency": "rrule"},
        {"frequency": "monthly", "count": 0},
    ],
)
def test_bad_recurrences_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Recurrence(start=date(2024, 1, 1), **kwargs)  # type: ignore[arg-type]


def test_count_and_end_limit_the_occurrences() -> None:
    assert len(list(Recurrence("weekly", date(2024, 1, 1), count=5).dates())) == 5
    until = Recurrence("monthly", date(2024, 1, 31), end=date(2024, 4, 29))
    assert [d for _, d in until.dates()] == [
        date(2024, 1, 31),
        date(2024, 2, 29),
        date(2024, 3, 31),
    ]
    assert until.date_of(3) is None


def test_the_recurrence_ends_with_the_calendar() -> None:
    yearly = Recurrence("yearly", date(2026, 1, 1), interval=1000)
    assert [d for _, d in yearly.dates()] == [
        date(2026, 1, 1), date(3026, 1, 1), date(4026, 1, 1), date(5026, 1, 1),
        date(6026, 1, 1), date(7026, 1, 1), date(8026, 1, 1), date(9026, 1, 1),
    ]  # fmt: skip
    assert yearly.date_of(8) is None
    weekly = Recurrence("weekly", date(9999, 12, 20))
    assert [d for _, d in weekly.dates()] == [date(9999, 12, 20), date(9999, 12, 27)]
    # 23:59 twelve hours behind UTC on 31 Dec 9999 is in year 10000: the plan ends before it
    plan = PaymentPlan(Recurrence("weekly", date(9999, 12, 24)), "23:59", "Etc/GMT+12")
    assert [o.unadjusted_date for o in plan.occurrences()] == [date(9999, 12, 24)]
    assert plan.occurrence(1) is None


def test_local_times_follow_the_dst_rules() -> None:
    # 02:30 on the spring-forward day in New York does not exist: shifted to 03:30 EDT.
    assert execution_instant(date(2026, 3, 8), "02:30", "America/New_York") == datetime(
        2026, 3, 8, 7, 30, tzinfo=UTC
    )
    # 01:30 on the fall-back day happens twice: the first one (EDT).
    assert execution_instant(date(2026, 11, 1), "01:30", "America/New_York") == datetime(
        2026, 11, 1, 5, 30, tzinfo=UTC
    )


def test_preview_lists_the_next_occurrences_after_an_instant() -> None:
    plan = PaymentPlan(Recurrence("monthly", date(2024, 1, 31)), "10:00", "UTC")
    got = plan.preview(datetime(2024, 3, 1, tzinfo=UTC), 3)
    assert [o.unadjusted_date for o in got] == [
        date(2024, 3, 31),
        date(2024, 4, 30),
        date(2024, 5, 31),
    ]
    assert [o.seq for o in got] == [2, 3, 4]
    assert [o.execution_date for o in got] == [
        date(2024, 4, 1),
        date(2024, 4, 30),
        date(2024, 5, 31),
    ]


# -- failure policy (checklist 20–21) ----------------------------------------------------

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)


def test_20_only_transient_failures_are_retried() -> None:
    policy = FailurePolicy(
        max_attempts=5, retry_every=timedelta(hours=4), retry_window=timedelta(days=2)
    )
    kw = {"attempts_made": 1, "failed_at": T0, "scheduled_at": T0}
    assert policy.next_attempt(code="INSUFFICIENT_FUNDS", transient=None, **kw) == T0 + timedelta(
        hours=4
    )
    for terminal in (
        "ACCOUNT_CLOSED",
        "AUTHORIZATION_REVOKED",
        "CANCELLED",
        "IDEMPOTENCY_CONFLICT",
    ):
        assert policy.next_attempt(code=terminal, transient=None, **kw) is None
    assert policy.next_attempt(code="API_ERROR", transient=False, **kw) is None


def test_21_retries_respect_max_attempts_and_the_window() -> None:
    policy = FailurePolicy(
        max_attempts=3, retry_every=timedelta(hours=8), retry_window=timedelta(hours=20)
    )
    attempts, at = 1, T0
    times = [at]
    while (nxt := policy.next_attempt(code="INSUFFICIENT_FUNDS", transient=None,
                                      attempts_made=attempts, failed_at=at, scheduled_at=T0)):  # fmt: skip
        attempts, at = attempts + 1, nxt
        times.append(at)
    assert times == [T0, T0 + timedelta(hours=8), T0 + timedelta(hours=16)]
    narrow = FailurePolicy(
        max_attempts=10, retry_every=timedelta(hours=8), retry_window=timedelta(hours=20)
    )
    assert narrow.next_attempt(code="TIMEOUT", transient=None, attempts_made=2,
                               failed_at=T0 + timedelta(hours=16), scheduled_at=T0) is None  # fmt: skip


@pytest.mark.parametrize(
    ("code", "made", "days", "new_auth", "allowed"),
    [
        ("R01", 0, 3, False, True),
        ("R09", 1, 179, False, True),  # the second reinitiation, inside 180 days
        ("R01", 2, 10, False, False),  # a third reinitiation (4th presentment): never
        ("R01", 0, 181, False, False),  # past 180 days of the original settlement
        ("R01", 1, 180, False, True),  # the 180th day itself is inside
        ("R08", 0, 3, False, False),  # stop payment: not without a new authorisation
        ("R08", 0, 3, True, True),
        ("R07", 0, 3, True, False),  # authorisation revoked: never
        ("R02", 0, 3, False, False),  # account closed: only once the cause is fixed
        ("R03", 0, 3, False, False),
        ("r01", 0, 3, False, True),
    ],
)
def test_21_ach_debits_get_at_most_two_reinitiations_within_180_days_for_r01_r09(
    code: str, made: int, days: int, new_auth: bool, allowed: bool
) -> None:
    settled = T0
    assert ach_reinitiation(code, reinitiations_made=made, original_settlement=settled,
                            now=settled + timedelta(days=days),
                            new_authorization=new_auth) is allowed  # fmt: skip


def test_21_ach_presentments_of_an_r01_debit_stop_at_three() -> None:
    presentments, made, at = 1, 0, T0
    while ach_reinitiation("R01", reinitiations_made=made, original_settlement=T0, now=at):
        presentments, made, at = presentments + 1, made + 1, at + timedelta(days=5)
    assert presentments == 3


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ValueError):
        FailurePolicy(max_attempts=0)
    with pytest.raises(ValueError):
        FailurePolicy(retry_every=timedelta(0))
