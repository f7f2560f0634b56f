"""The API's cache of verified tokens: the bound on revocation elsewhere, expiry, and forgetting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from duly.auth.cache import TokenCache
from duly.auth.roles import Role
from duly.auth.service import Principal
from duly.clock import ManualClock

TOKEN = "duly_abcdefgh_" + "a" * 52
OTHER = "duly_abcdefgh_" + "b" * 52
WHO = Principal(token_id="abcdefgh", name="backend", role=Role.OPERATOR)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))


def test_a_verified_token_is_trusted_for_the_ttl_and_no_longer(clock: ManualClock) -> None:
    cache = TokenCache(timedelta(seconds=5))
    cache.put(TOKEN, WHO, clock.now(), None)
    clock.advance(timedelta(seconds=4.999))
    assert cache.get(f"  {TOKEN} ", clock.now()) == WHO
    clock.advance(timedelta(milliseconds=1))
    # past the bound the store is asked again: a revocation made elsewhere holds from here
    assert cache.get(TOKEN, clock.now()) is None
    assert len(cache) == 0


def test_only_the_same_text_hits(clock: ManualClock) -> None:
    cache = TokenCache()
    cache.put(TOKEN, WHO, clock.now(), None)
    assert cache.get(OTHER, clock.now()) is None
    assert cache.get("duly_abcdefgh_\udcff", clock.now()) is None  # any text, no error


def test_a_token_expiring_within_the_ttl_is_refused_at_its_expiry(clock: ManualClock) -> None:
    cache = TokenCache(timedelta(seconds=5))
    cache.put(TOKEN, WHO, clock.now(), clock.now() + timedelta(seconds=2))
    clock.advance(timedelta(seconds=1))
    assert cache.get(TOKEN, clock.now()) == WHO
    clock.advance(timedelta(seconds=1))
    assert cache.get(TOKEN, clock.now()) is None


def test_forget_drops_the_token_at_once_and_a_clock_gone_back_misses(clock: ManualClock) -> None:
    cache = TokenCache()
    cache.put(TOKEN, WHO, clock.now(), None)
    cache.put(OTHER, Principal("zzzzzzzz", "other", Role.ADMIN), clock.now(), None)
    cache.forget("abcdefgh")
    assert cache.get(TOKEN, clock.now()) is None
    assert cache.get(OTHER, clock.now()) is not None
    assert cache.get(OTHER, clock.now() - timedelta(seconds=1)) is None


def test_a_zero_ttl_caches_nothing_and_the_size_is_bounded(clock: ManualClock) -> None:
    off = TokenCache(timedelta(0))
    off.put(TOKEN, WHO, clock.now(), None)
    assert off.get(TOKEN, clock.now()) is None and len(off) == 0
    small = TokenCache(timedelta(seconds=5), max_entries=2)
    for i in range(5):
        small.put(f"token-{i}", WHO, clock.now(), None)
    assert len(small) <= 2
    with pytest.raises(ValueError):
        TokenCache(timedelta(seconds=-1))
