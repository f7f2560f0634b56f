"""The balance check's pure rules: classification (checklist 15), business dates, codes, schedule."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from duly.banking.errors import BankingError
from duly.banking.port import Balance
from duly.config import BalanceCheckSettings
from duly.operations.balance_check.jobs import balance_check_registry
from duly.operations.balance_check.models import Result
from duly.operations.balance_check.planning import (
    balance_check_schedule,
    business_date_of,
    classify,
    error_of,
)


def bal(posted: int, pending: int = 0, *, currency: str = "USD", limit: int | None = 0) -> Balance:
    return Balance("ACC-1", currency, posted, pending, limit)


def test_15_equality_passes_and_one_minor_unit_below_fails() -> None:
    assert classify(50_000, "USD", [bal(50_000)]).result is Result.PASS
    assert classify(50_000, "USD", [bal(49_999)]).result is Result.FAIL


def test_15_the_balance_is_posted_minus_pending_debits() -> None:
    assert classify(50_000, "USD", [bal(60_000, pending=10_000)]).result is Result.PASS
    assert classify(50_000, "USD", [bal(60_000, pending=10_001)]).result is Result.FAIL


def test_total_adds_accounts_each_needs_every_one() -> None:
    two = [bal(30_000), bal(20_000)]
    assert classify(50_000, "USD", two, "total") == classify(50_000, "USD", two)
    assert classify(50_000, "USD", two).result is Result.PASS
    assert classify(50_000, "USD", two).accounts_checked == 2
    assert classify(20_000, "USD", two, "each").result is Result.PASS
    assert classify(20_001, "USD", two, "each").result is Result.FAIL


def test_a_zero_minimum_passes_an_empty_account() -> None:
    assert classify(0, "USD", [bal(0)]).result is Result.PASS


def test_an_overdrawn_account_within_its_facility_fails_below_it_is_an_error() -> None:
    assert classify(0, "USD", [bal(-500, limit=1_000)]).result is Result.FAIL
    with pytest.raises(BankingError) as below:
        classify(0, "USD", [bal(-1_001, limit=1_000)])
    assert below.value.code == "NEGATIVE_BALANCE" and not below.value.transient
    assert classify(0, "USD", [bal(-10**9, limit=None)]).result is Result.FAIL  # unlimited


@pytest.mark.parametrize(
    ("balances", "code"),
    [([], "MISSING_DATA"), ([bal(10, currency="EUR")], "INVALID_RESPONSE")],
)
def test_nothing_to_compare_is_an_error(balances: list[Balance], code: str) -> None:
    with pytest.raises(BankingError) as err:
        classify(1, "USD", balances)
    assert err.value.code == code


def test_no_amount_in_any_error_message() -> None:
    for balances in ([bal(-7_654_321, limit=100)], [bal(7_654_321, currency="EUR")]):
        with pytest.raises(BankingError) as err:
            classify(1_234_567, "USD", balances)
        assert not any(s in str(err.value) for s in ("7654321", "76543.21", "1234567", "12345.67"))


def test_business_date_is_the_local_date_of_the_instant() -> None:
    late = datetime(2026, 3, 2, 23, 30, tzinfo=UTC)
    assert business_date_of(late, "UTC") == date(2026, 3, 2)
    assert business_date_of(late, "Asia/Tokyo") == date(2026, 3, 3)
    assert business_date_of(late, "America/New_York") == date(2026, 3, 2)


def test_error_codes_keep_the_taxonomy_and_unknown_errors_are_internal_with_a_trace() -> None:
    timeout = error_of(BankingError("TIMEOUT", "no answer in time"))
    assert (timeout.code, timeout.retryable, timeout.trace) == ("TIMEOUT", True, None)
    null = error_of(BankingError("NULL_BALANCE", "no balance"))
    assert (null.code, null.retryable) == ("NULL_BALANCE", False)
    assert error_of(BankingError("SOMETHING_NEW", "x")).code == "INTERNAL"
    try:
        raise KeyError("posted")
    except KeyError as exc:
        bug = error_of(exc)
    assert bug.code == "INTERNAL" and not bug.retryable
    assert bug.trace is not None and "KeyError" in bug.trace


def test_schedule_and_job_options_follow_the_settings() -> None:
    cfg = BalanceCheckSettings(
        schedule_time="21:15", timezone="Europe/Paris", enabled=False,
        retry_attempts=2, retry_delay_seconds=60, window_minutes=90,
    )  # fmt: skip
    sched = balance_check_schedule(cfg, grace_seconds=30)
    assert (sched.spec, sched.timezone, sched.paused) == ("daily:21:15", "Europe/Paris", True)
    assert (sched.misfire_grace_seconds, sched.source) == (30, "config")
    job = balance_check_registry(cfg).get("daily_balance_check")
    assert job.retry.max_attempts == 3
    assert job.retry.delay(1).total_seconds() == job.retry.delay(2).total_seconds() == 60
    assert job.window is not None and job.window.total_seconds() == 90 * 60
    assert job.timeout == job.window and job.max_concurrency == 1 and job.is_async
