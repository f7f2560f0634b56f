"""`duly schedule preview` run as a real process: output, exit codes, error lines."""

from __future__ import annotations

import subprocess
import sys

import pytest


def preview(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "duly.cli", "schedule", "preview", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_new_york_gap_day() -> None:
    result = preview("daily:02:30", "--tz", "America/New_York", "--after", "2026-03-07T00:00", "--count", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["2026-03-07T02:30:00-05:00", "2026-03-08T03:30:00-04:00"]
    assert result.stderr == ""


def test_calendar_and_convention() -> None:
    result = preview(
        "daily:09:00", "--tz", "Europe/Berlin", "--after", "2024-03-28T10:00",
        "--count", "2", "--calendar", "XECB", "--adjust", "following",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["2024-04-02T09:00:00+02:00", "2024-04-03T09:00:00+02:00"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["daily:25:00", "--tz", "America/New_York", "--after", "2026-03-07T00:00"],
            "error: invalid spec 'daily:25:00': hour must be 00–23",
            id="bad-spec",
        ),
        pytest.param(["daily:02:30", "--tz", "Mars/Base"], "error: unknown timezone 'Mars/Base'", id="bad-tz"),
        pytest.param(["cron:*/5 * * * *", "--adjust", "following"], "cannot apply to cron:", id="cron-adjust"),
        pytest.param(["daily:09:00", "--calendar", "ZZ"], "error: unknown calendar 'ZZ'", id="bad-calendar"),
        pytest.param(["daily:09:00", "--after", "yesterday"], "--after 'yesterday' is not", id="bad-after"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], message: str) -> None:
    result = preview(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
