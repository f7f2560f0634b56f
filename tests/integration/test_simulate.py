"""``duly simulate``: a week of the configured schedules in seconds, on a throw-away store."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from duly.cli import app


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.chdir(tmp_path)  # no duly.yaml here: defaults plus the environment
    for key in ("DULY_CONFIG", "DULY_DATABASE_URL"):
        monkeypatch.delenv(key, raising=False)
    return CliRunner()


def nightly_lines(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if re.match(r"\s+\S+ → .* daily_balance_check$", ln)]


def test_a_week_shows_seven_nightly_checks_at_22_each_once(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", "--days", "7", "--start", "2026-03-02T00:00:00+00:00", "--show", "1000"])
    assert result.exit_code == 0, result.output
    nights = nightly_lines(result.output)
    assert len(nights) == 7
    assert all(re.match(r"\s+2026-03-0\dT22:00:00\+00:00 → 2026-03-0\dT22:00:", ln) for ln in nights)
    assert all(" succeeded " in ln for ln in nights)
    assert not list(tmp_path.glob("*.db")), "the simulation must not touch the configured store"


def test_the_configured_time_and_zone_move_the_simulated_runs(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DULY_JOBS__DAILY_BALANCE_CHECK__SCHEDULE_TIME", "23:30")
    monkeypatch.setenv("DULY_JOBS__DAILY_BALANCE_CHECK__TIMEZONE", "America/New_York")
    result = runner.invoke(app, ["simulate", "--days", "3", "--start", "2026-03-07T00:00:00+00:00", "--show", "1000"])
    assert result.exit_code == 0, result.output
    # 23:30 in New York is 04:30 UTC before clocks go forward (8 March), 03:30 after.
    nights = [ln.split()[0] for ln in nightly_lines(result.output)]
    assert nights == [
        "2026-03-07T04:30:00+00:00",
        "2026-03-08T04:30:00+00:00",
        "2026-03-09T03:30:00+00:00",
    ]


def test_a_bad_start_is_refused_with_one_line(runner: CliRunner) -> None:
    result = runner.invoke(app, ["simulate", "--start", "yesterday"])
    assert result.exit_code == 2
    assert "--start 'yesterday'" in result.output
