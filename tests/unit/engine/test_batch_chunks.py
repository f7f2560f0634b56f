"""``run_batch`` with ``work_chunk``: first reads in chunks, failed items retried alone."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from duly.clock import ManualClock
from duly.engine.batch import BatchSummary, ItemResult, run_batch
from duly.engine.context import JobContext
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


S = timedelta(seconds=1)


async def test_first_attempts_go_in_chunks_and_failures_are_retried_alone_5_10_20() -> None:
    clock = ManualClock(T0)
    chunks: list[list[int]] = []
    singles: dict[int, list[datetime]] = {}

    async def many(items: Sequence[int]) -> list[int | BaseException]:
        chunks.append(list(items))
        out: list[int | BaseException] = []
        for i in items:
            if i % 10 == 3:
                out.append(JobError("TIMEOUT", "slow", retryable=True))
            elif i % 10 == 7:
                out.append(JobError("NULL_BALANCE", "null", retryable=False))
            else:
                out.append(i * 2)
        return out

    async def one(item: int) -> int:
        singles.setdefault(item, []).append(clock.now())
        if item == 13:  # still failing: every retry, then given up
            raise JobError("TIMEOUT", "slow", retryable=True)
        return item * 2

    rec = Recorder()
    summary = await drive(
        clock, run_batch(context(clock), list(range(30)), one, key=lambda i: i, record=rec,
                         concurrency=2, retry_delays=[5, 10, 20], work_chunk=many,
                         chunk_size=8)
    )  # fmt: skip
    assert chunks == [list(range(8)), list(range(8, 16)), list(range(16, 24)),
                      list(range(24, 30))]  # fmt: skip
    assert sorted(singles) == [3, 13, 23]  # only the retryable failures, each on its own
    gaps = [b - a for a, b in itertools.pairwise([T0, *singles[13]])]
    assert gaps == [5 * S, 10 * S, 20 * S]
    assert singles[3] == [T0 + 5 * S] and singles[23] == [T0 + 5 * S]
    got = rec.all
    assert len(got) == 30
    assert (got[3].value, got[3].attempts) == (6, 2)
    assert got[13].error is not None and got[13].error.code == "TIMEOUT"
    assert got[13].attempts == 4 and got[13].finished_at == T0 + 35 * S
    assert got[7].error is not None and (got[7].error.code, got[7].attempts) == ("NULL_BALANCE", 1)
    assert (got[0].value, got[0].attempts, got[0].finished_at) == (0, 1, T0)
    assert (summary.processed, summary.succeeded, summary.failed) == (30, 26, 4)
    assert summary.retries == 2 + 3  # 3 and 23 once, 13 three times
    assert summary.errors_by_code == {"TIMEOUT": 1, "NULL_BALANCE": 3}


async def test_a_chunk_call_that_raises_fails_each_of_its_items_and_they_retry_alone() -> None:
    clock = ManualClock(T0)
    calls = 0

    async def many(items: Sequence[str]) -> list[str | BaseException]:
        nonlocal calls
        calls += 1
        raise JobError("API_ERROR", "503", retryable=True)

    async def one(item: str) -> str:
        return item.upper()

    rec = Recorder()
    summary = await drive(
        clock, run_batch(context(clock), ["a", "b", "c"], one, key=lambda i: i, record=rec,
                         retry_delays=[5], work_chunk=many, chunk_size=10, done={"c"})
    )  # fmt: skip
    assert calls == 1
    assert {k: (r.value, r.attempts, r.finished_at) for k, r in rec.all.items()} == {
        "a": ("A", 2, T0 + 5 * S), "b": ("B", 2, T0 + 5 * S)
    }  # fmt: skip
    assert (summary.skipped, summary.retries, summary.succeeded) == (1, 2, 2)


async def test_a_chunk_answer_of_the_wrong_length_is_internal() -> None:
    clock = ManualClock(T0)

    def many(items: Sequence[int]) -> list[int | BaseException]:
        return [1]

    rec = Recorder()
    await drive(
        clock, run_batch(context(clock), [1, 2], lambda i: i, key=lambda i: i, record=rec,
                         work_chunk=many, chunk_size=2)
    )  # fmt: skip
    assert {r.error.code for r in rec.all.values() if r.error} == {"INTERNAL"}


async def test_chunks_respect_concurrency_and_record_at_most_flush_every() -> None:
    clock = ManualClock(T0)
    in_flight, peak = 0, 0

    async def many(items: Sequence[int]) -> list[int | BaseException]:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        for _ in range(3):
            await asyncio.sleep(0)
        in_flight -= 1
        return list(items)

    async def one(item: int) -> int:
        return item

    rec = Recorder()
    summary = await drive(
        clock, run_batch(context(clock), list(range(1000)), one, key=lambda i: i, record=rec,
                         concurrency=3, work_chunk=many, chunk_size=50, flush_every=120)
    )  # fmt: skip
    assert peak == 3 and summary.succeeded == 1000
    assert max(len(c) for c in rec.chunks) <= 120 and len(rec.all) == 1000


async def test_bad_chunk_size_is_refused() -> None:
    clock = ManualClock(T0)
    with pytest.raises(ValueError, match="chunk_size"):
        await run_batch(context(clock), [1], lambda i: i, key=lambda i: i, chunk_size=0)
