"""Retry policies and the run state machine (pure)."""

from __future__ import annotations

import random
from datetime import timedelta
from itertools import product

import pytest
from hypothesis import given
from hypothesis import strategies as st

from duly.engine.retry import RetryPolicy
from duly.engine.states import ACTIVE, CLAIMABLE, FINAL, TRANSITIONS, RunStatus, can_move


def test_fixed_delays_repeat_the_last() -> None:
    policy = RetryPolicy.fixed([5, 10, 20])
    assert policy.max_attempts == 4
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [timedelta(seconds=s) for s in (5, 10, 20, 20)]


@given(base=st.floats(0.1, 100), factor=st.floats(1, 4), cap=st.floats(1, 10_000),
       jitter=st.floats(0, 1), seed=st.integers())
def test_exponential_backoff_grows_and_respects_cap_and_jitter(base, factor, cap, jitter, seed):
    policy = RetryPolicy(max_attempts=10, base=base, factor=factor, cap=cap, jitter=jitter)
    rng = random.Random(seed)
    for attempt in range(1, 10):
        raw = min(cap, base * factor ** (attempt - 1))
        delay = policy.delay(attempt, rng).total_seconds()
        assert raw - 1e-6 <= delay <= raw * (1 + jitter) + 1e-6  # timedelta keeps microseconds


def test_terminal_codes_are_never_retried_even_if_the_job_says_so() -> None:
    policy = RetryPolicy(max_attempts=5)
    assert not policy.should_retry(1, "ACCOUNT_CLOSED", forced=True)
    assert policy.should_retry(1, "TIMEOUT")
    assert not policy.should_retry(5, "TIMEOUT")
    assert not RetryPolicy(max_attempts=5, retry_on=frozenset({"TIMEOUT"})).should_retry(1, "API_ERROR")
    assert not policy.should_retry(1, "TIMEOUT", forced=False)


@pytest.mark.parametrize("bad", [{"max_attempts": 0}, {"delays": [-1]}, {"factor": 0.5},
                                 {"jitter": 2}])
def test_bad_policies_are_refused(bad) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**bad)


def test_state_sets_partition_the_states() -> None:
    assert set(RunStatus) == ACTIVE | FINAL and not ACTIVE & FINAL
    assert CLAIMABLE < ACTIVE


def test_transition_table_exhaustively() -> None:
    allowed = {(a, b) for a, b in product([None, *RunStatus], RunStatus) if can_move(a, b)}
    assert allowed == set(TRANSITIONS)
    # Nothing leaves succeeded or skipped; only a claim enters running.
    assert not any(a in (RunStatus.SUCCEEDED, RunStatus.SKIPPED) for a, _ in TRANSITIONS)
    assert {a for a, b in TRANSITIONS if b is RunStatus.RUNNING} == CLAIMABLE
    # Every final state except succeeded/skipped can be retried by an operator.
    assert {a for a, b in TRANSITIONS if b is RunStatus.QUEUED and a is not None} == {
        RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.MISSED}
