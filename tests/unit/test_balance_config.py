"""Settings of the nightly balance check: defaults, overrides, clear errors (see test_config.py)."""

from __future__ import annotations

import pytest

from duly.config import ConfigError, load_settings

PREFIX = "DULY_JOBS__DAILY_BALANCE_CHECK__"


def test_defaults_match_the_issue() -> None:
    check = load_settings(environ={}).jobs.daily_balance_check
    assert (check.schedule_time, check.timezone, check.enabled) == ("22:00", "UTC", True)
    assert (check.retry_attempts, check.retry_delay_seconds, check.window_minutes) == (3, 300, 120)
    assert (check.per_call_timeout_seconds, check.call_retry_delays) == (30, [5, 10, 20])
    assert (check.bank, check.account_rule, check.missed_night_lookback_days) == ("ledger", "total", 7)
    assert sum(check.call_retry_delays) == 35  # no more than 35 s of waiting per customer


def test_environment_overrides() -> None:
    check = load_settings(
        environ={
            PREFIX + "CONCURRENCY": "50",
            PREFIX + "PER_CALL_TIMEOUT_SECONDS": "2.5",
            PREFIX + "CALL_RETRY_DELAYS": "[1, 2]",
            PREFIX + "BANK": "http",
            PREFIX + "ACCOUNT_RULE": "each",
        }
    ).jobs.daily_balance_check
    assert (check.concurrency, check.per_call_timeout_seconds) == (50, 2.5)
    assert (check.call_retry_delays, check.bank, check.account_rule) == ([1, 2], "http", "each")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("CONCURRENCY", "0", "jobs.daily_balance_check.concurrency = '0': must be between 1 and 500"),
        ("PER_CALL_TIMEOUT_SECONDS", "0", "per_call_timeout_seconds = '0': must be > 0"),
        ("ACCOUNT_RULE", "any", "account_rule = 'any': expected one of 'total' or 'each'"),
        ("BANK", "", None),  # empty values are ignored: the default stays
        ("CALL_RETRY_DELAYS", "[5, -1]", "call_retry_delays[1] = -1: must be ≥ 0"),
        ("CALL_RETRY_DELAYS", "[3600, 3600, 600]",
         "call_retry_delays = [3600, 3600, 600]: the retry waits add up to 7800 s, which does not "
         "fit in jobs.daily_balance_check.window_minutes (120 min)"),
        ("MISSED_NIGHT_LOOKBACK_DAYS", "400", "missed_night_lookback_days = '400': must be between 0 and 366"),
    ],
)  # fmt: skip
def test_bad_values_stop_start_up_with_one_clear_line(
    key: str, value: str, message: str | None
) -> None:
    if message is None:
        assert load_settings(environ={PREFIX + key: value}).jobs.daily_balance_check.bank == "ledger"
        return
    with pytest.raises(ConfigError) as err:
        load_settings(environ={PREFIX + key: value})
    text = str(err.value)
    assert message in text, text
    assert f"(from {PREFIX}{key})" in text and "\n" not in text


def test_the_window_is_named_as_the_other_source(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "duly.yaml"
    path.write_text(
        "jobs:\n  daily_balance_check:\n    window_minutes: 1\n    call_retry_delays: [30, 40]\n"
    )
    with pytest.raises(ConfigError) as err:
        load_settings(path, environ={})
    assert "call_retry_delays = [30, 40]: the retry waits add up to 70 s" in str(err.value)
    assert f"(from {path})" in str(err.value)
