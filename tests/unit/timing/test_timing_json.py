"""The JSON form: every form round-trips, and the reader refuses what it cannot read."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import pytest

from duly.timing import SpecError, parse_trigger, trigger_from_json

START = datetime(2026, 1, 1, tzinfo=UTC)
END = datetime(2027, 1, 1, tzinfo=UTC)

CASES: list[tuple[str, dict[str, Any]]] = [
    ("cron:*/5 * * * *", {"tz": "America/New_York"}),
    ("0 9 * * 1-5", {"tz": "Europe/London", "dst_gap": "skip", "dst_repeat": "last"}),
    ("every:15m", {}),
    ("every:1d", {"start": START, "end": END}),
    ("at:2026-03-08T02:30", {"tz": "America/New_York", "dst_gap": "at_transition"}),
    ("at:2026-03-08T02:30:00+01:00", {"tz": "Europe/Berlin", "calendar": "XECB", "adjust": "following"}),
    ("daily:02:30", {"tz": "Australia/Lord_Howe", "dst_repeat": "both"}),
    ("weekdays:07:30", {"tz": "Europe/London", "calendar": "gb-eng", "adjust": "modified_following"}),
    ("weekly:thu,mon@09:00", {"tz": "Pacific/Chatham", "start": START}),
    ("monthly:31@09:00", {"calendar": "US", "adjust": "preceding", "end": END}),
    ("quarterly:last@18:00", {"calendar": "NYSE", "adjust": "modified_preceding"}),
    ("yearly:02-29@09:00", {"tz": "America/Santiago"}),
    ("rrule:FREQ=MONTHLY;BYMONTHDAY=-1@09:00", {"tz": "Europe/London", "calendar": "DE"}),
    ("rrule:FREQ=DAILY;COUNT=5;BYHOUR=9;BYMINUTE=15", {"start": START}),
]


@pytest.mark.parametrize(("spec", "options"), CASES, ids=[spec for spec, _ in CASES])
def test_round_trip(spec: str, options: dict[str, Any]) -> None:
    trigger = parse_trigger(spec, **options)
    data = trigger.to_json()
    assert data["version"] == 1
    assert {"spec", "tz", "calendar", "adjust", "start", "end", "dst_gap", "dst_repeat", "kind"} <= set(data)
    again = trigger_from_json(json.loads(json.dumps(data)))
    assert again == trigger
    assert again.to_json() == data
    after = datetime(2025, 12, 1, tzinfo=UTC)
    assert list(islice(again.fires(after), 5)) == list(islice(trigger.fires(after), 5))


def test_json_shape() -> None:
    trigger = parse_trigger("daily:09:00", "Europe/London", calendar="gb-eng", adjust="following", start=START)
    assert trigger.to_json() == {
        "version": 1,
        "kind": "daily",
        "spec": "daily:09:00",
        "tz": "Europe/London",
        "calendar": "GB-ENG",
        "adjust": "following",
        "start": "2026-01-01T00:00:00+00:00",
        "end": None,
        "dst_gap": "shift",
        "dst_repeat": "first",
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param({"spec": "daily:09:00"}, "unsupported trigger JSON version None", id="no-version"),
        pytest.param({"version": 2, "spec": "daily:09:00"}, "unsupported trigger JSON version 2", id="version-2"),
        pytest.param({"version": 1}, "needs a string 'spec'", id="no-spec"),
        pytest.param({"version": 1, "spec": "daily:09:00", "calendar": 7}, "unknown calendar 7", id="calendar"),
        pytest.param({"version": 1, "spec": "daily:09:00", "kind": "cron"}, "does not match", id="kind-mismatch"),
        pytest.param({"version": 1, "spec": "daily:09:00", "start": "soon"}, "start 'soon' is not", id="start"),
        pytest.param({"version": 1, "spec": "daily:99:00"}, "hour must be 00–23", id="bad-spec"),
        pytest.param({"version": 1, "spec": "daily:09:00", "tz": "Mars/Base"}, "unknown timezone", id="bad-tz"),
    ],
)
def test_from_json_refuses(data: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        trigger_from_json(data)


def test_from_json_needs_an_object() -> None:
    with pytest.raises(SpecError, match="must be an object"):
        trigger_from_json(["daily:09:00"])  # type: ignore[arg-type]
