"""The per-item batch helper on a manual clock: concurrency, isolation, retries, resume, chunks."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from duly.clock import ManualClock
from duly.engine.batch import BatchSummary, ItemResult, run_batch
from duly.engine.context import Cancelled, JobContext
from duly.engine.errors import JobError

T0 = datetime(2026, 3, 2, 22, 0, tzinfo=UTC)


def context(clock: ManualClock) -> JobContext:
    return JobContext(
        run_id=1, job_name="batch", scheduled_for=T0, attempt=1, max_attempts=1,
        idempotency_key="k", args={}, clock=clock, fencing_token=1, node="n",
    )  # fmt: skip


async def drive(clock: ManualClock, coro: Any) -> BatchSummary:
    """Run ``coro``; whenever everything waits on the clock, move it to the next deadline."""
    task = asyncio.ensure_future(coro)
    for _ in range(10_000):
        for _ in range(20):
            await asyncio.sleep(0)
        if task.done():
            return task.result()  # type: ignore[no-any-return]
        deadline = clock.next_deadline()
        if deadline is not None:
            clock.set(deadline)
        else:
            await asyncio.sleep(0.001)  # a thread is working
    raise AssertionError("the batch did not finish")


class Recorder:
    def __init__(self) -> None:
        self.chunks: list[list[ItemResult[Any, Any]]] = []

    def __call__(self, chunk: Sequence[ItemResult[Any, Any]]) -> None:
        self.chunks.append(list(chunk))

    @property
    def all(self) -> dict[Any, ItemResult[Any, Any]]:
        return {r.key: r for chunk in self.chunks for r in chunk}


async def test_at_most_concurrency_calls_in_flight() -> None:
    clock = ManualClock(T0)
    in_flight, peak = 0, 0

    async def work(item: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        for _ in range(3):
            await asyncio.sleep(0)
        in_flight -= 1
        return item * 2

    rec = Recorder()
    summary = await drive(
        clock, run_batch(context(clock), list(range(50)), work, key=lambda i: i, record=rec,
                         concurrency=4)
    )  # fmt: skip
    assert peak == 4
    assert summary.processed == summary.succeeded == 50 and summary.failed == 0
    assert {k: r.value for k, r in rec.all.items()} == {i: i * 2 for i in range(50)}


async def test_sync_work_runs_in_a_bounded_thread_pool() -> None:
    clock = ManualClock(T0)
    lock, in_flight, peak = threading.Lock(), 0, 0

    def work(item: int) -> str:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        threading.Event().wait(0.005)
        with lock:
            in_flight -= 1
        return threading.current_thread().name

    rec = Recorder()
    await drive(clock, run_batch(context(clock), list(range(30)), work, key=lambda i: i,
                                 record=rec, concurrency=3))  # fmt: skip
    assert 1 < peak <= 3
    assert all(str(r.value).startswith("duly-batch") for r in rec.all.values())


async def test_retries_wait_5_10_20_seconds_of_the_clock_and_only_for_retryable_errors() -> None:
    clock = ManualClock(T0)
    calls: dict[str, list[datetime]] = {"flaky": [], "down": [], "bad": [], "ok": []}

    async def work(item: str) -> str:
        calls[item].append(clock.now())
        if item == "flaky" and len(calls[item]) < 3:
            raise JobError("TIMEOUT", "slow", retryable=True)
        if item == "down":
            raise JobError("API_ERROR", "503", retryable=True)
        if item == "bad":
            raise JobError("NULL_BALANCE", "null", retryable=False)
        return "fine"

    rec = Recorder()
    summary = await drive(
        clock, run_batch(context(clock), list(calls), work, key=lambda i: i, record=rec,
                         concurrency=2, retry_delays=[5, 10, 20])
    )  # fmt: skip
    gaps = {k: [b - a for a, b in itertools.pairwise(v)] for k, v in calls.items()}
    s = timedelta(seconds=1)
    assert gaps == {"flaky": [5 * s, 10 * s], "down": [5 * s, 10 * s, 20 * s], "bad": [], "ok": []}
    got = rec.all
    assert (got["flaky"].ok, got["flaky"].attempts) == (True, 3)
    assert got["down"].error is not None and got["down"].error.code == "API_ERROR"
    assert got["down"].attempts == 4 and got["down"].finished_at == T0 + 35 * s
    assert got["bad"].error is not None and got["bad"].attempts == 1
    assert (summary.succeeded, summary.failed, summary.retries) == (2, 2, 5)
    assert summary.errors_by_code == {"API_ERROR": 1, "NULL_BALANCE": 1}
    assert summary.to_json()["duration_seconds"] == 35.0


async def test_one_item_failing_never_stops_the_batch() -> None:
    clock = ManualClock(T0)

    def work(item: int) -> int:
        if item == 3:
            raise ZeroDivisionError("bug")
        return item

    rec = Recorder()
    summary = await drive(clock, run_batch(context(clock), list(range(8)), work,
                                           key=lambda i: i, record=rec))  # fmt: skip
    assert summary.succeeded == 7 and summary.failed == 1
    err = rec.all[3].error
    assert err is not None and err.code == "INTERNAL" and not err.retryable
    assert err.trace is not None and "ZeroDivisionError: bug" in err.trace


async def test_done_items_are_skipped_and_results_come_in_chunks() -> None:
    clock = ManualClock(T0)
    seen: list[int] = []

    async def work(item: int) -> int:
        seen.append(item)
        return item

    rec = Recorder()
    ctx = context(clock)
    summary = await drive(
        clock, run_batch(ctx, list(range(10)), work, key=lambda i: i, record=rec,
                         done={0, 1, 2}, flush_every=3, concurrency=1)
    )  # fmt: skip
    assert sorted(seen) == list(range(3, 10))
    assert (summary.skipped, summary.processed) == (3, 7)
    assert [len(c) for c in rec.chunks] == [3, 3, 1]
    assert ctx.progress == (10, 10)


async def test_cancel_stops_between_items_and_keeps_what_was_decided() -> None:
    clock = ManualClock(T0)
    ctx = context(clock)

    async def work(item: int) -> int:
        if item == 4:
            ctx._cancel.set()
        return item

    rec = Recorder()
    with pytest.raises(Cancelled):
        await drive(clock, run_batch(ctx, list(range(100)), work, key=lambda i: i, record=rec,
                                     concurrency=1, flush_every=1000))  # fmt: skip
    assert 5 <= len(rec.all) < 100
    assert all(r.ok for r in rec.all.values())


async def test_a_failing_record_stops_the_batch() -> None:
    clock = ManualClock(T0)

    def record(chunk: Sequence[ItemResult[int, int]]) -> None:
        raise OSError("disk full")

    async def work(item: int) -> int:
        return item

    with pytest.raises(OSError, match="disk full"):
        await drive(clock, run_batch(context(clock), list(range(1000)), work, key=lambda i: i,
                                     record=record, flush_every=10))  # fmt: skip


async def test_bad_concurrency_is_refused() -> None:
    clock = ManualClock(T0)
    with pytest.raises(ValueError, match="concurrency"):
        await run_batch(context(clock), [1], lambda i: i, key=lambda i: i, concurrency=0)
