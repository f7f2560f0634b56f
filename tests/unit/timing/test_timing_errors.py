"""SpecError: every bad input gives one clear line naming the bad part."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from duly.timing import SpecError, parse_trigger


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param("daily:25:00", "invalid spec 'daily:25:00': hour must be 00–23", id="daily-hour"),
        pytest.param("daily:09:60", "minute must be 00–59", id="daily-minute"),
        pytest.param("daily:9:00", "time '9:00' must be HH:MM", id="daily-format"),
        pytest.param("weekdays:", "time '' must be HH:MM", id="weekdays-empty"),
        pytest.param("weekly:funday@09:00", "unknown day 'funday'", id="weekly-day"),
        pytest.param("weekly:mon", "expected <what>@HH:MM, e.g. weekly:mon,thu@09:00", id="weekly-no-time"),
        pytest.param("monthly:32@09:00", "day '32' must be 1–31 or 'last'", id="monthly-32"),
        pytest.param("monthly:0@09:00", "day '0' must be 1–31 or 'last'", id="monthly-0"),
        pytest.param("quarterly:first@09:00", "day 'first' must be 1–31 or 'last'", id="quarterly-word"),
        pytest.param("yearly:02-30@09:00", "day must be 01–29 in month 02", id="yearly-feb-30"),
        pytest.param("yearly:04-31@09:00", "day must be 01–30 in month 04", id="yearly-apr-31"),
        pytest.param("yearly:13-01@09:00", "month must be 01–12", id="yearly-month"),
        pytest.param("yearly:2-1@09:00", "date '2-1' must be MM-DD", id="yearly-format"),
        pytest.param("every:0m", "interval must be a positive whole number", id="every-zero"),
        pytest.param("every:15x", "interval must be a positive whole number", id="every-unit"),
        pytest.param("every:1.5h", "interval must be a positive whole number", id="every-fraction"),
        pytest.param("at:2026-13-01T09:00", "is not an ISO-8601 date and time", id="at-bad-month"),
        pytest.param("at:2026-03-01", "at: needs a time as well as a date", id="at-date-only"),
        pytest.param("cron:61 * * * *", "bad minute field '61' (allowed: 0–59", id="cron-minute"),
        pytest.param("cron:* 24 * * *", "bad hour field '24'", id="cron-hour"),
        pytest.param("cron:* * * 13 *", "bad month field '13'", id="cron-month"),
        pytest.param("cron:* * * * 8", "bad day-of-week field '8'", id="cron-dow"),
        pytest.param("cron:* * *", "cron needs 5 fields", id="cron-3-fields"),
        pytest.param("cron:0 0 30 2 *", "never matches", id="cron-feb-30"),
        pytest.param("* * * * * *", "unknown form", id="bare-6-fields"),
        pytest.param("hourly:00", "unknown form", id="unknown-form"),
        pytest.param("", "empty spec", id="empty"),
        pytest.param("rrule:FREQ=HOURLY@09:00", "FREQ=HOURLY is sub-daily", id="rrule-hourly"),
        pytest.param("rrule:FREQ=MONTHLY", "rrule needs a time of day", id="rrule-no-time"),
        pytest.param("rrule:FREQ=MONTHLY;BYHOUR=9@09:00", "either as @HH:MM or as BYHOUR", id="rrule-two-times"),
        pytest.param("rrule:BYMONTHDAY=1@09:00", "rrule needs FREQ", id="rrule-no-freq"),
        pytest.param("rrule:FREQ=FORTNIGHTLY@09:00", "bad FREQ 'FORTNIGHTLY'", id="rrule-bad-freq"),
        pytest.param("rrule:FREQ=MONTHLY;FOO=1@09:00", "unknown rrule part 'FOO'", id="rrule-unknown-part"),
        pytest.param("rrule:FREQ=MONTHLY;BYMONTHDAY=32@09:00", "bad BYMONTHDAY value '32'", id="rrule-day-32"),
        pytest.param("rrule:FREQ=WEEKLY;BYDAY=XX@09:00", "bad BYDAY value 'XX'", id="rrule-byday"),
        pytest.param("rrule:FREQ=DAILY;BYHOUR=24", "bad BYHOUR value '24'", id="rrule-byhour"),
        pytest.param("rrule:FREQ=MONTHLY;FREQ=DAILY@09:00", "given twice", id="rrule-duplicate"),
        pytest.param("rrule:FREQ=MONTHLY;INTERVAL=0@09:00", "bad INTERVAL '0'", id="rrule-interval"),
        pytest.param("rrule:FREQ=DAILY;UNTIL=20260230@09:00", "bad UNTIL '20260230'", id="rrule-until-date"),
        pytest.param(
            "rrule:FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30@09:00", "never occurs", id="rrule-never-matches"
        ),
        pytest.param("rrule:FREQ=DAILY;COUNT=3@09:00", "COUNT counts from the schedule's start", id="count-no-start"),
        pytest.param("rrule:FREQ=DAILY;COUNT=3;UNTIL=20260101@09:00", "COUNT and UNTIL", id="count-and-until"),
        pytest.param("rrule:FREQ=MONTHLY@9am", "time '9am' must be HH:MM", id="rrule-at-format"),
        pytest.param("rrule:FREQ@09:00", "is not KEY=VALUE", id="rrule-not-key-value"),
    ],
)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_trigger(spec)
    text = str(caught.value)
    assert text.startswith(f"invalid spec {spec!r}: ")
    assert message in text
    assert "\n" not in text


@pytest.mark.parametrize(
    ("spec", "options", "message"),
    [
        pytest.param("daily:09:00", {"tz": "Mars/Base"}, "unknown timezone 'Mars/Base'", id="tz-unknown"),
        pytest.param("daily:09:00", {"tz": "../etc/passwd"}, "unknown timezone '../etc/passwd'", id="tz-path"),
        pytest.param("daily:09:00", {"tz": ""}, "unknown timezone ''", id="tz-empty"),
        pytest.param("daily:09:00", {"calendar": "ZZ"}, "unknown calendar 'ZZ'", id="calendar"),
        pytest.param("daily:09:00", {"adjust": "sideways"}, "unknown business-day convention", id="convention"),
        pytest.param("daily:09:00", {"dst_gap": "wait"}, "unknown dst_gap 'wait'", id="dst-gap"),
        pytest.param("daily:09:00", {"dst_repeat": "twice"}, "unknown dst_repeat 'twice'", id="dst-repeat"),
        pytest.param("daily:09:00", {"start": datetime(2026, 1, 1)}, "start 2026-01-01T00:00:00 must be", id="naive"),
        pytest.param(
            "daily:09:00",
            {"start": datetime(2026, 2, 1, tzinfo=UTC), "end": datetime(2026, 1, 1, tzinfo=UTC)},
            "is before start",
            id="end-before-start",
        ),
        pytest.param(
            "cron:0 9 * * *", {"adjust": "following"},
            "invalid spec 'cron:0 9 * * *': business-day convention 'following' cannot apply to cron:",
            id="cron-convention",
        ),
        pytest.param("every:1d", {"adjust": "preceding"}, "cannot apply to every:", id="every-convention"),
        pytest.param("every:1h", {"dst_gap": "skip"}, "every: follows elapsed time", id="every-dst"),
    ],
)
def test_bad_options(spec: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_trigger(spec, **options)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_spec_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="hour must be"):
        parse_trigger("daily:24:00")


def test_non_string_spec() -> None:
    with pytest.raises(SpecError, match="a spec must be a string"):
        parse_trigger(42)  # type: ignore[arg-type]
