"""Batch jobs end to end on a manual clock: runs claimed together, one call, one commit."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, select

from duly.clock import ManualClock
from duly.engine.context import JobContext
from duly.engine.errors import JobError
from duly.engine.registry import JobRegistry
from duly.engine.retry import RetryPolicy
from duly.engine.states import RunStatus
from duly.engine.store.base import RunFilter
from duly.engine.store.sql import SqlStore
from duly.testing import EngineHarness

T0 = datetime(2026, 3, 2, tzinfo=UTC)

effects_md = MetaData()
posted = Table(
    "test_batch_posted",
    effects_md,
    Column("id", Integer, primary_key=True),
    Column("run_key", String(100), nullable=False),
)


@pytest.fixture
def effects(store: SqlStore) -> Iterator[Table]:
    effects_md.create_all(store.engine)
    yield posted
    effects_md.drop_all(store.engine)


def posted_keys(store: SqlStore) -> Counter[str]:
    with store.engine.connect() as conn:
        return Counter(conn.execute(select(posted.c.run_key)).scalars())


class Calls:
    """The batch sizes a job was called with (from worker threads)."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.sizes.append(n)


def post_all(ctxs: Sequence[JobContext], skip: set[str] = frozenset()) -> list[Any]:  # type: ignore[assignment]
    """Write one row per context (except ``skip``) on the shared transaction."""
    out: list[Any] = []
    with ctxs[0].transaction() as conn:
        for ctx in ctxs:
            if ctx.idempotency_key in skip:
                out.append(JobError("API_ERROR", "bank busy"))
                continue
            conn.execute(posted.insert().values(run_key=ctx.idempotency_key))
            out.append({"posted": ctx.idempotency_key})
    return out


async def test_runs_queued_together_execute_in_batches_once_each(
    store: SqlStore, clock: ManualClock, effects: Table
) -> None:
    registry, calls = JobRegistry(), Calls()

    @registry.batch_job("post", size=20)
    def post(ctxs: Sequence[JobContext]) -> list[Any]:
        calls.add(len(ctxs))
        return post_all(ctxs)

    harness = EngineHarness(store, registry, clock, nodes=2)
    for i in range(150):  # queued first, so claims are not paced by the triggers
        harness.client.trigger("post", idempotency_key=f"p{i}")
    async with harness as h:
        await h.advance(timedelta(seconds=10))
    assert sum(calls.sizes) == 150 and max(calls.sizes) > 1
    assert max(calls.sizes) <= 20
    assert posted_keys(store) == Counter({f"p{i}": 1 for i in range(150)})
    runs = store.run_list(RunFilter(limit=1000))
    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}
    assert {r.idempotency_key: r.result for r in runs}["p7"] == {"posted": "p7"}
    assert all(len(store.run_attempts(r.id)) == 1 for r in runs)


async def test_a_run_failed_by_its_batch_is_retried_and_the_others_are_kept(
    store: SqlStore, clock: ManualClock, effects: Table
) -> None:
    registry = JobRegistry()

    @registry.batch_job("post", size=10, retry=RetryPolicy.fixed([5]))
    def post(ctxs: Sequence[JobContext]) -> list[Any]:
        first_try = {c.idempotency_key for c in ctxs if c.attempt == 1}
        return post_all(ctxs, skip={"p3"} & first_try)

    async with EngineHarness(store, registry, clock) as h:
        for i in range(6):
            h.client.trigger("post", idempotency_key=f"p{i}")
        await h.advance(timedelta(seconds=1))
        assert posted_keys(store) == Counter({f"p{i}": 1 for i in range(6) if i != 3})
        (waiting,) = store.run_list(RunFilter(status=RunStatus.RETRYING))
        assert waiting.idempotency_key == "p3" and waiting.error_code == "API_ERROR"
        await h.advance(timedelta(seconds=10))
    assert posted_keys(store) == Counter({f"p{i}": 1 for i in range(6)})
    done = {r.idempotency_key: r for r in store.run_list(RunFilter(limit=100))}
    assert done["p3"].status is RunStatus.SUCCEEDED and done["p3"].attempt == 2
    assert done["p0"].attempt == 1


async def test_a_batch_that_raises_keeps_no_effect_and_retries_every_run(
    store: SqlStore, clock: ManualClock, effects: Table
) -> None:
    registry = JobRegistry()

    @registry.batch_job("post", size=10, retry=RetryPolicy.fixed([5]))
    def post(ctxs: Sequence[JobContext]) -> list[Any]:
        out = post_all(ctxs)  # writes first, then fails: nothing may be kept
        if any(c.attempt == 1 for c in ctxs):
            raise RuntimeError("lost the database mid-batch")
        return out

    async with EngineHarness(store, registry, clock) as h:
        for i in range(4):
            h.client.trigger("post", idempotency_key=f"p{i}")
        await h.advance(timedelta(seconds=1))
        assert posted_keys(store) == Counter()
        retrying = store.run_list(RunFilter(status=RunStatus.RETRYING))
        assert len(retrying) == 4 and {r.error_code for r in retrying} == {"INTERNAL"}
        await h.advance(timedelta(seconds=10))
    assert posted_keys(store) == Counter({f"p{i}": 1 for i in range(4)})


async def test_a_single_run_of_a_batch_job_runs_alone(
    store: SqlStore, clock: ManualClock, effects: Table
) -> None:
    registry, calls = JobRegistry(), Calls()

    @registry.batch_job("post", size=50)
    def post(ctxs: Sequence[JobContext]) -> list[Any]:
        calls.add(len(ctxs))
        return post_all(ctxs)

    async with EngineHarness(store, registry, clock) as h:
        run, _ = h.client.trigger("post", idempotency_key="solo")
        await h.advance(timedelta(seconds=1))
    assert calls.sizes == [1]
    final = store.run_get(run.id)
    assert final is not None and final.result == {"posted": "solo"}
    # and the job can be called for one context directly (the registry's single form)
    ctx_job = registry.get("post")
    assert ctx_job.batch is post and ctx_job.batch_size == 50


async def test_the_node_option_caps_the_batch_size(
    store: SqlStore, clock: ManualClock, effects: Table
) -> None:
    from duly.testing import test_options

    registry, calls = JobRegistry(), Calls()

    @registry.batch_job("post", size=100)
    def post(ctxs: Sequence[JobContext]) -> list[Any]:
        calls.add(len(ctxs))
        return post_all(ctxs)

    harness = EngineHarness(store, registry, clock, test_options(max_batch_size=7))
    for i in range(40):  # queued first, so claims are not paced by the triggers
        harness.client.trigger("post", idempotency_key=f"p{i}")
    async with harness as h:
        await h.advance(timedelta(seconds=5))
    assert sum(calls.sizes) == 40 and max(calls.sizes) == 7
    assert posted_keys(store) == Counter({f"p{i}": 1 for i in range(40)})


async def test_batches_leave_half_the_slots_to_other_jobs(
    store: SqlStore, clock: ManualClock, effects: Table
) -> None:
    from duly.testing import test_options

    registry, ran = JobRegistry(), []

    @registry.batch_job("slow", size=2)
    def slow(ctxs: Sequence[JobContext]) -> list[Any]:
        ctxs[0].clock.sleep_blocking(60)  # holds its slot for a minute
        return [None] * len(ctxs)

    registry.job("quick")(lambda ctx: ran.append(ctx.run_id))
    harness = EngineHarness(store, registry, clock, test_options(concurrency=4))
    # Queued before the node starts: a node started first may claim the first trigger alone
    # (a batch of one), which takes a batch slot with one run.
    for i in range(40):
        harness.client.trigger("slow", idempotency_key=f"s{i}")
    async with harness as h:
        await h.settle()
        running = store.run_list(RunFilter(status=RunStatus.RUNNING, limit=100))
        assert len(running) == 4  # two batches of two: half of the four slots
        quick, _ = h.client.trigger("quick")
        await h.settle()
        assert ran == [quick.id]  # at once, not after the slow batches
        await h.advance(timedelta(minutes=30))
    assert len(store.run_list(RunFilter(status=RunStatus.SUCCEEDED, limit=100))) == 41
