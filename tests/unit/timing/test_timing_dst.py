"""DST table tests: each case is a spec, a zone, a local start and the next fires.

Expected fires are written as local ISO instants with their offset, so a wrong offset
(the right wall time on the wrong side of a transition) fails too.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

import pytest

from duly.timing import parse_trigger


def local_fires(spec: str, tz: str, after: str, count: int, **options: str) -> list[str]:
    zone = ZoneInfo(tz)
    trigger = parse_trigger(spec, tz, **options)  # type: ignore[arg-type]
    start = datetime.fromisoformat(after).replace(tzinfo=zone)
    return [fire.astimezone(zone).isoformat() for fire in islice(trigger.fires(start), count)]


NY = "America/New_York"
LONDON = "Europe/London"
LORD_HOWE = "Australia/Lord_Howe"
CHATHAM = "Pacific/Chatham"
SANTIAGO = "America/Santiago"
SYDNEY = "Australia/Sydney"

WALL_CLOCK_CASES = [
    pytest.param(
        "daily:02:30", NY, "2026-03-07T00:00", {},
        ["2026-03-07T02:30:00-05:00", "2026-03-08T03:30:00-04:00", "2026-03-09T02:30:00-04:00"],
        id="ny-spring-gap-shift",
    ),
    pytest.param(
        "daily:02:30", NY, "2026-03-07T00:00", {"dst_gap": "skip"},
        ["2026-03-07T02:30:00-05:00", "2026-03-09T02:30:00-04:00", "2026-03-10T02:30:00-04:00"],
        id="ny-spring-gap-skip",
    ),
    pytest.param(
        "daily:02:30", NY, "2026-03-07T00:00", {"dst_gap": "at_transition"},
        ["2026-03-07T02:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"],
        id="ny-spring-gap-at-transition",
    ),
    pytest.param(
        "daily:02:00", NY, "2026-03-08T00:00", {},
        ["2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00"],
        id="ny-spring-gap-start-edge",
    ),
    pytest.param(
        "daily:03:00", NY, "2026-03-08T00:00", {},
        ["2026-03-08T03:00:00-04:00", "2026-03-09T03:00:00-04:00"],
        id="ny-spring-first-real-minute",
    ),
    pytest.param(
        "cron:0 2,3 * * *", NY, "2026-03-07T12:00", {},
        ["2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00", "2026-03-09T03:00:00-04:00"],
        id="ny-spring-shifted-02:00-meets-03:00-fires-once",
    ),
    pytest.param(
        "daily:01:30", NY, "2026-10-31T00:00", {},
        ["2026-10-31T01:30:00-04:00", "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"],
        id="ny-fall-repeat-first",
    ),
    pytest.param(
        "daily:01:30", NY, "2026-10-31T00:00", {"dst_repeat": "last"},
        ["2026-10-31T01:30:00-04:00", "2026-11-01T01:30:00-05:00", "2026-11-02T01:30:00-05:00"],
        id="ny-fall-repeat-last",
    ),
    pytest.param(
        "daily:01:30", NY, "2026-10-31T00:00", {"dst_repeat": "both"},
        [
            "2026-10-31T01:30:00-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-01T01:30:00-05:00",
            "2026-11-02T01:30:00-05:00",
        ],
        id="ny-fall-repeat-both",
    ),
    pytest.param(
        "weekly:sun@02:30", NY, "2026-03-01T12:00", {},
        ["2026-03-08T03:30:00-04:00", "2026-03-15T02:30:00-04:00"],
        id="ny-weekly-in-gap",
    ),
    pytest.param(
        "rrule:FREQ=WEEKLY;BYDAY=SU@02:30", NY, "2026-03-01T12:00", {},
        ["2026-03-08T03:30:00-04:00", "2026-03-15T02:30:00-04:00"],
        id="ny-rrule-gap-shifted-not-dropped",
    ),
    pytest.param(
        "at:2026-03-08T02:30", NY, "2026-03-01T00:00", {},
        ["2026-03-08T03:30:00-04:00"],
        id="ny-at-in-gap",
    ),
    pytest.param(
        "daily:01:30", LONDON, "2026-03-28T12:00", {},
        ["2026-03-29T02:30:00+01:00", "2026-03-30T01:30:00+01:00"],
        id="london-spring-gap-shift",
    ),
    pytest.param(
        "daily:01:30", LONDON, "2026-10-24T12:00", {},
        ["2026-10-25T01:30:00+01:00", "2026-10-26T01:30:00+00:00"],
        id="london-fall-repeat-first",
    ),
    pytest.param(
        "daily:02:15", LORD_HOWE, "2026-10-03T12:00", {},
        ["2026-10-04T02:45:00+11:00", "2026-10-05T02:15:00+11:00"],
        id="lord-howe-30min-gap-shift",
    ),
    pytest.param(
        "daily:02:15", LORD_HOWE, "2026-10-03T12:00", {"dst_gap": "at_transition"},
        ["2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"],
        id="lord-howe-30min-gap-at-transition",
    ),
    pytest.param(
        "daily:01:45", LORD_HOWE, "2026-04-04T12:00", {},
        ["2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"],
        id="lord-howe-30min-repeat-first",
    ),
    pytest.param(
        "daily:01:45", LORD_HOWE, "2026-04-04T12:00", {"dst_repeat": "both"},
        ["2026-04-05T01:45:00+11:00", "2026-04-05T01:45:00+10:30", "2026-04-06T01:45:00+10:30"],
        id="lord-howe-30min-repeat-both",
    ),
    pytest.param(
        "daily:03:00", CHATHAM, "2026-09-26T12:00", {},
        ["2026-09-27T04:00:00+13:45", "2026-09-28T03:00:00+13:45"],
        id="chatham-gap-at-02:45-shift",
    ),
    pytest.param(
        "daily:03:00", CHATHAM, "2026-04-04T12:00", {"dst_repeat": "last"},
        ["2026-04-05T03:00:00+12:45", "2026-04-06T03:00:00+12:45"],
        id="chatham-repeat-last",
    ),
    pytest.param(
        "daily:00:30", SANTIAGO, "2026-09-05T12:00", {},
        ["2026-09-06T01:30:00-03:00", "2026-09-07T00:30:00-03:00"],
        id="santiago-midnight-gap-shift",
    ),
    pytest.param(
        "daily:23:30", SANTIAGO, "2026-04-03T12:00", {},
        ["2026-04-03T23:30:00-03:00", "2026-04-04T23:30:00-03:00", "2026-04-05T23:30:00-04:00"],
        id="santiago-repeat-before-midnight-first",
    ),
    pytest.param(
        "daily:02:30", SYDNEY, "2026-10-03T12:00", {},
        ["2026-10-04T03:30:00+11:00", "2026-10-05T02:30:00+11:00"],
        id="sydney-southern-spring-october",
    ),
    pytest.param(
        "weekly:fri@09:00", "Pacific/Apia", "2011-12-28T00:00", {},
        ["2011-12-31T09:00:00+14:00", "2012-01-06T09:00:00+14:00"],
        id="apia-skipped-friday-shifted-a-whole-day",
    ),
    pytest.param(
        "weekly:fri@09:00", "Pacific/Apia", "2011-12-31T08:00", {},
        ["2011-12-31T09:00:00+14:00", "2012-01-06T09:00:00+14:00"],
        id="apia-shifted-friday-found-from-saturday",
    ),
    pytest.param(
        "weekly:fri@09:00", "Pacific/Apia", "2011-12-28T00:00", {"dst_gap": "skip"},
        ["2012-01-06T09:00:00+14:00"],
        id="apia-skipped-friday-skip",
    ),
    pytest.param(
        "monthly:last@18:00", LONDON, "2026-01-01T00:00", {},
        [
            "2026-01-31T18:00:00+00:00",
            "2026-02-28T18:00:00+00:00",
            "2026-03-31T18:00:00+01:00",
            "2026-04-30T18:00:00+01:00",
        ],
        id="london-monthly-keeps-wall-time-across-seasons",
    ),
]


@pytest.mark.parametrize(("spec", "tz", "after", "options", "expected"), WALL_CLOCK_CASES)
def test_wall_clock_dst(spec: str, tz: str, after: str, options: dict[str, str], expected: list[str]) -> None:
    assert local_fires(spec, tz, after, len(expected), **options) == expected


ELAPSED_CASES = [
    pytest.param(
        "cron:*/30 * * * *", NY, "2026-11-01T00:45",
        [
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-01T01:00:00-05:00",
            "2026-11-01T01:30:00-05:00",
            "2026-11-01T02:00:00-05:00",
        ],
        id="ny-fall-both-passes",
    ),
    pytest.param(
        "cron:*/30 * * * *", NY, "2026-03-08T01:15",
        ["2026-03-08T01:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T03:30:00-04:00"],
        id="ny-spring-none-invented",
    ),
    pytest.param(
        "cron:*/15 2 * * *", NY, "2026-03-07T23:00",
        ["2026-03-09T02:00:00-04:00", "2026-03-09T02:15:00-04:00"],
        id="ny-spring-hour-2-does-not-exist",
    ),
    pytest.param(
        "cron:15 * * * *", LONDON, "2026-10-25T00:30",
        [
            "2026-10-25T01:15:00+01:00",
            "2026-10-25T01:15:00+00:00",
            "2026-10-25T02:15:00+00:00",
        ],
        id="london-hourly-at-15-both-passes",
    ),
    pytest.param(
        "cron:*/15 * * * *", LORD_HOWE, "2026-04-05T01:20",
        [
            "2026-04-05T01:30:00+11:00",
            "2026-04-05T01:45:00+11:00",
            "2026-04-05T01:30:00+10:30",
            "2026-04-05T01:45:00+10:30",
            "2026-04-05T02:00:00+10:30",
        ],
        id="lord-howe-half-hour-repeat",
    ),
    pytest.param(
        "cron:*/15 * * * *", LORD_HOWE, "2026-10-04T01:40",
        ["2026-10-04T01:45:00+10:30", "2026-10-04T02:30:00+11:00", "2026-10-04T02:45:00+11:00"],
        id="lord-howe-half-hour-gap",
    ),
    pytest.param(
        "every:1h", NY, "2026-03-08T00:30",
        ["2026-03-08T01:00:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T04:00:00-04:00"],
        id="ny-every-hour-is-elapsed",
    ),
    pytest.param(
        "every:90m", CHATHAM, "2026-09-27T01:00",
        ["2026-09-27T02:15:00+12:45", "2026-09-27T04:45:00+13:45", "2026-09-27T06:15:00+13:45"],
        id="chatham-every-90m-is-elapsed",
    ),
]


@pytest.mark.parametrize(("spec", "tz", "after", "expected"), ELAPSED_CASES)
def test_elapsed_dst(spec: str, tz: str, after: str, expected: list[str]) -> None:
    assert local_fires(spec, tz, after, len(expected)) == expected


def test_every_day_keeps_elapsed_time_not_wall_time() -> None:
    start = datetime(2026, 3, 7, 9, 0, tzinfo=ZoneInfo(NY))
    trigger = parse_trigger("every:1d", NY, start=start)
    fires = list(islice(trigger.fires(start - timedelta(seconds=1)), 3))
    assert [f.astimezone(ZoneInfo(NY)).isoformat() for f in fires] == [
        "2026-03-07T09:00:00-05:00",
        "2026-03-08T10:00:00-04:00",
        "2026-03-09T10:00:00-04:00",
    ]
    assert all(f.tzinfo is UTC for f in fires)
