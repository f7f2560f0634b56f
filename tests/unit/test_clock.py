"""The manual clock releases waiters when its time passes them, in order."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import pytest

from duly.clock import ManualClock, SystemClock, ensure_utc

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def test_sleepers_wake_in_deadline_order() -> None:
    clock = ManualClock(T0)
    woke: list[int] = []

    async def sleeper(n: int) -> None:
        await clock.sleep(n)
        woke.append(n)

    tasks = [asyncio.create_task(sleeper(n)) for n in (30, 10, 20)]
    await asyncio.sleep(0)
    clock.advance(15)
    await asyncio.sleep(0.01)
    assert woke == [10]
    clock.advance(timedelta(seconds=100))
    await asyncio.gather(*tasks)
    assert woke == [10, 20, 30]


async def test_sleep_until_returns_false_when_woken() -> None:
    clock = ManualClock(T0)
    wake = asyncio.Event()
    task = asyncio.create_task(clock.sleep_until(T0 + timedelta(hours=1), wake))
    await asyncio.sleep(0)
    wake.set()
    assert await task is False
    assert await clock.sleep_until(T0) is True  # already passed


def test_blocking_sleep_returns_when_time_passes() -> None:
    clock = ManualClock(T0)
    done = threading.Event()

    def worker() -> None:
        clock.sleep_blocking(60)
        done.set()

    t = threading.Thread(target=worker)
    t.start()
    while clock.next_deadline() is None:
        pass
    assert not done.is_set()
    clock.advance(61)
    t.join(5)
    assert done.is_set()


def test_time_never_goes_back_and_naive_is_refused() -> None:
    clock = ManualClock(T0)
    with pytest.raises(ValueError):
        clock.set(T0 - timedelta(seconds=1))
    with pytest.raises(ValueError):
        ensure_utc(datetime(2026, 1, 1))


def test_system_clock_is_aware_utc() -> None:
    assert SystemClock().now().tzinfo is UTC
