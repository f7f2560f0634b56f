"""The engine end to end on a manual clock: a node (or several) over a real store."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog
from sqlalchemy import Column, Integer, MetaData, String, Table, select
from typer.testing import CliRunner

from duly.cli import app
from duly.clock import ManualClock
from duly.engine.context import JobContext
from duly.engine.errors import JobError
from duly.engine.registry import JobRegistry
from duly.engine.retry import RetryPolicy
from duly.engine.states import RunStatus
from duly.engine.store.base import NewSchedule, RunFilter
from duly.engine.store.sql import SqlStore
from duly.testing import EngineHarness, test_options

T0 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday


def runs_of(store: SqlStore, **kw: Any):
    return sorted(store.run_list(RunFilter(limit=10_000, **kw)), key=lambda r: r.id)


@pytest.fixture
def registry() -> JobRegistry:
    return JobRegistry()


async def test_a_daily_schedule_fires_once_a_day_for_a_week(
    store: SqlStore, clock: ManualClock, registry: JobRegistry
) -> None:
    seen: list[datetime] = []

    @registry.job("nightly")
    def nightly(ctx: JobContext) -> dict[str, Any]:
        seen.append(ctx.scheduled_for)
        return {"ok": True, "attempt": ctx.attempt}

    async with EngineHarness(store, registry, clock) as h:
        h.client.upsert_schedule(
            NewSchedule(name="n", job_name="nightly", spec="daily:22:00", timezone="Europe/London")
        )
        await h.advance(timedelta(days=7))
    assert seen == [T0.replace(hour=22) + timedelta(days=d) for d in range(7)]
    runs = runs_of(store)
    assert [r.status for r in runs] == [RunStatus.SUCCEEDED] * 7
    assert runs[0].result == {"ok": True, "attempt": 1}
    assert all(r.started_at == r.scheduled_for for r in runs)  # on time, to the microsecond


async def test_failures_retry_with_backoff_then_succeed(
    store: SqlStore, clock: ManualClock, registry: JobRegistry
) -> None:
    attempts: list[tuple[int, datetime]] = []

    @registry.job("flaky", retry=RetryPolicy.fixed([10, 20]))
    def flaky(ctx: JobContext) -> str:
        attempts.append((ctx.attempt, ctx.clock.now()))
        if ctx.attempt < 3:
            raise JobError("API_ERROR", "core banking answered 503")
        return "done"

    async with EngineHarness(store, registry, clock) as h:
        run, _ = h.client.trigger("flaky")
        await h.advance(timedelta(minutes=5))
    assert [a for a, _ in attempts] == [1, 2, 3]
    assert [t - T0 for _, t in attempts] == [
        timedelta(0),
        timedelta(seconds=10),
        timedelta(seconds=30),
    ]
    final = store.run_get(run.id)
    assert final is not None and final.status is RunStatus.SUCCEEDED and final.result == "done"
    assert [a.status for a in store.run_attempts(run.id)] == ["failed", "failed", "succeeded"]
    assert store.run_attempts(run.id)[0].error_code == "API_ERROR"


async def test_a_terminal_error_fails_at_once_and_raises_one_alert(
    store: SqlStore, clock: ManualClock, registry: JobRegistry
) -> None:
    @registry.job("closed", retry=5)
    def closed(ctx: JobContext) -> None:
        raise JobError("ACCOUNT_CLOSED", "account closed")

    async with EngineHarness(store, registry, clock) as h:
        run, _ = h.client.trigger("closed")
        await h.advance(timedelta(minutes=1))
    final = store.run_get(run.id)
    assert final is not None and final.status is RunStatus.FAILED and final.attempt == 1
    (alert,) = store.alert_list()
    assert alert.rule == "run.failed" and alert.run_id == run.id and "ACCOUNT_CLOSED" in alert.title


async def test_unexpected_exceptions_are_internal_errors_and_retried(
    store: SqlStore, clock: ManualClock, registry: JobRegistry
) -> None:
    @registry.job("boom", retry=RetryPolicy(max_attempts=2, base=5, jitter=0))
    def boom(ctx: JobContext) -> None:
        raise RuntimeError("kaboom")

    async with EngineHarness(store, registry, clock) as h:
        run, _ = h.client.trigger("boom")
        await h.advance(timedelta(minutes=1))
    final = store.run_get(run.id)
    assert final is not None and final.status is RunStatus.FAILED and final.attempt == 2
    assert final.error_code == "INTERNAL" and "kaboom" in (final.error_message or "")


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_timeouts_stop_the_attempt(
    store: SqlStore, clock: ManualClock, registry: JobRegistry, kind: str
) -> None:
    if kind == "async":

        @registry.job("slow", timeout=60, retry=1)
        async def slow(ctx: JobContext) -> None:
            await ctx.clock.sleep(600)
    else:

        @registry.job("slow", timeout=60, retry=1)
        def slow_sync(ctx: JobContext) -> None:
            ctx.clock.sleep_blocking(600)

    async with EngineHarness(store, registry, clock) as h:
        run, _ = h.client.trigger("slow")
        await h.advance(timedelta(minutes=2))
        final = store.run_get(run.id)
        assert final is not None and final.status is RunStatus.FAILED
        assert final.error_code == "JOB_TIMEOUT"
        assert final.finished_at == T0 + timedelta(seconds=60)
        clock.advance(timedelta(minutes=10))  # release the abandoned sync thread


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("run_once", Counter({RunStatus.MISSED: 4, RunStatus.SUCCEEDED: 1})),
        ("run_all", Counter({RunStatus.SUCCEEDED: 5})),
        ("skip", Counter({RunStatus.MISSED: 5})),
    ],
)
async def test_misfire_policies_after_downtime(
    store: SqlStore,
    clock: ManualClock,
    registry: JobRegistry,
    policy: str,
    expected: Counter[RunStatus],
) -> None:
    registry.job("tick")(lambda ctx: None)
    async with EngineHarness(store, registry, clock) as h:
        h.client.upsert_schedule(
            NewSchedule(name="t", job_name="tick", spec="every:1h", misfire=policy)
        )
        await h.advance(timedelta(minutes=30))
    clock.advance(timedelta(hours=5))  # the node is down: fires at 01:00 … 05:00 pass
    async with EngineHarness(store, registry, clock):
        pass
    got = Counter(r.status for r in runs_of(store) if r.scheduled_for > T0)
    assert got == expected
    (alert,) = store.alert_list()
    assert alert.rule == "schedule.misfired" and alert.details["late_fires"] == 5


async def test_overlap_skip_skips_fires_while_a_run_is_active(
    store: SqlStore, clock: ManualClock, registry: JobRegistry
) -> None:
    @registry.job("long", timeout=3600, retry=1)
    async def long(ctx: JobContext) -> None:
        await ctx.clock.sleep(150)

    async with EngineHarness(store, registry, clock) as h:
        h.client.upsert_schedule(
            NewSchedule(name="l", job_name="long", spec="every:1m", overlap="skip")
        )
        await h.advance(timedelta(minutes=6, seconds=40))
    statuses = [r.status for r in runs_of(store)]
    # Fires from 00:01: 01 runs until 03:30; 02 and 03 are skipped; 04 runs to 06:30; 05, 06
    # skipped.
    assert statuses[:6] == [
        RunStatus.SUCCEEDED,
        RunStatus.SKIPPED,
        RunStatus.SKIPPED,
        RunStatus.SUCCEEDED,
        RunStatus.SKIPPED,
        RunStatus.SKIPPED,
    ]


async def test_overlap_queue_runs_one_at_a_time_in_order(
    store: SqlStore, clock: ManualClock, registry: JobRegistry
) -> None:
    order: list[tuple[str, datetime, datetime]] = []

    @registry.job("long", timeout=3600, retry=1)
    async def long(ctx: JobContext) -> None:
        order.append(("start", ctx.scheduled_for, ctx.clock.now()))
        await ctx.clock.sleep(90)
        order.append(("end", ctx.scheduled_for, ctx.clock.now()))

    async with EngineHarness(store, registry, clock) as h:
        h.client.upsert_schedule(
            NewSchedule(name="l", job_name="long", spec="every:1m", overlap="queue")
        )
        await h.advance(timedelta(minutes=3, seconds=30))
    starts = [t for kind, _, t in order if kind == "start"]
    ends = [t for kind, _, t in order if kind == "end"]
    assert all(s >= e for s, e in zip(starts[1:], ends, strict=False))  # never two at once
    assert [sf for kind, sf, _ in order if kind == "start"] == sorted(
        sf for kind, sf, _ in order if kind == "start"
    )


async def test_manual_trigger_is_idempotent_by_key(
    store: SqlStore, clock: ManualClock, registry: JobRegistry
) -> None:
    calls: list[int] = []
    registry.job("once")(lambda ctx: calls.append(ctx.run_id))
    async with EngineHarness(store, registry, clock) as h:
        first, created = h.client.trigger("once", {"a": 1}, idempotency_key="K")
        await h.advance(timedelta(seconds=1))
        second, created_again = h.client.trigger("once", {"a": 1}, idempotency_key="K")
        await h.advance(timedelta(seconds=1))
    assert created and not created_again and first.id == second.id and calls == [first.id]


effects_md = MetaData()
effects_table = Table(
    "test_effects", effects_md, Column("id", Integer, primary_key=True), Column("note", String(50))
)


async def test_transaction_effects_commit_with_success_and_roll_back_on_failure(
    store: SqlStore, clock: ManualClock, registry: JobRegistry
) -> None:
    effects_md.create_all(store.engine)

    @registry.job("post", retry=RetryPolicy.fixed([1]))
    def post(ctx: JobContext) -> str:
        with ctx.transaction() as conn:
            conn.execute(effects_table.insert().values(note=f"attempt {ctx.attempt}"))
        if ctx.attempt == 1:
            raise JobError("TIMEOUT", "bank did not answer")
        return "posted"

    async with EngineHarness(store, registry, clock) as h:
        run, _ = h.client.trigger("post")
        await h.advance(timedelta(seconds=30))
    with store.engine.connect() as conn:
        notes = conn.execute(select(effects_table.c.note)).scalars().all()
    effects_md.drop_all(store.engine)
    assert notes == ["attempt 2"]
    final = store.run_get(run.id)
    assert final is not None and final.status is RunStatus.SUCCEEDED


async def test_progress_reported_inside_the_jobs_transaction_is_written_and_kept(
    store: SqlStore, clock: ManualClock, registry: JobRegistry
) -> None:
    effects_md.create_all(store.engine)
    progress_seen: list[tuple[int | None, int | None]] = []

    @registry.job("load", timeout=60)
    def load(ctx: JobContext) -> str:
        with ctx.transaction() as conn:
            for i in range(3):
                conn.execute(effects_table.insert().values(note=f"row {i}"))
                ctx.report_progress(i + 1, 3)  # on SQLite the transaction holds the write lock
        return "loaded"

    def after_finish(run: Any, status: str, now: datetime) -> None:
        row = store.run_get(run.id)
        progress_seen.append((row.progress_done, row.progress_total) if row else (None, None))

    opts = test_options(on_run_finished=after_finish)
    async with EngineHarness(store, registry, clock, options=opts) as h:
        run, _ = h.client.trigger("load")
        await h.advance(timedelta(seconds=5))
    with store.engine.connect() as conn:
        notes = conn.execute(select(effects_table.c.note)).scalars().all()
    effects_md.drop_all(store.engine)
    final = store.run_get(run.id)
    assert final is not None and final.status is RunStatus.SUCCEEDED, final
    assert notes == ["row 0", "row 1", "row 2"]
    assert progress_seen == [(3, 3)]


async def test_a_dead_node_with_more_runs_than_one_reaper_batch_is_taken_over_at_once(
    store: SqlStore, registry: JobRegistry
) -> None:
    from duly.clock import SystemClock
    from duly.engine.client import EngineClient
    from duly.engine.node import Node
    from duly.engine.services.reaper import REAP_BATCH
    from duly.engine.store.base import ClaimParams

    count, real = REAP_BATCH + 20, SystemClock()
    registry.job("work", retry=3)(lambda ctx: None)
    client = EngineClient(store, registry, real)
    for i in range(count):
        client.trigger("work", idempotency_key=f"w{i}")
    # A node took them all and died: every lease has run out (as if a minute had passed).
    claim = ClaimParams(node="ghost", queues=["default"], limit=count, now=real.now(),
                        lease_seconds=-60)  # fmt: skip
    assert len(store.run_claim(claim)) == count
    opts = test_options(reaper_interval_seconds=3600, max_idle_seconds=0.1)
    node = Node(store, registry, real, opts, roles=("worker",), listen=False)
    await node.start()
    try:
        for _ in range(100):  # real time: the reaper's next pass would be an hour away
            await asyncio.sleep(0.05)
            ghosts = [r for r in runs_of(store) if r.lease_owner == "ghost"]
            if not ghosts:
                break
    finally:
        await node.stop()
    assert ghosts == []


async def test_a_dead_nodes_run_is_reaped_and_run_again(
    store: SqlStore, clock: ManualClock, registry: JobRegistry
) -> None:
    from duly.engine.store.base import ClaimParams

    done: list[int] = []
    registry.job("work", retry=3)(lambda ctx: done.append(ctx.attempt))
    async with EngineHarness(store, registry, clock, roles=("scheduler",)) as h:
        run, _ = h.client.trigger("work")
    # A node claims the run and dies without a word.
    (ghost,) = store.run_claim(
        ClaimParams(node="ghost", queues=["default"], limit=1, now=clock.now(), lease_seconds=30)
    )
    async with EngineHarness(store, registry, clock) as h:
        await h.advance(timedelta(minutes=2))
    final = store.run_get(run.id)
    assert final is not None and final.status is RunStatus.SUCCEEDED and done == [2]
    assert [(a.node, a.status) for a in store.run_attempts(run.id)] == [
        ("ghost", "lost"),
        ("test-node", "succeeded"),
    ]
    assert ghost.run.id == run.id


async def test_watchdog_alerts_once_for_a_run_not_started(
    store: SqlStore, clock: ManualClock, registry: JobRegistry
) -> None:
    registry.job("late")(lambda ctx: None)
    async with EngineHarness(store, registry, clock, roles=("scheduler",)) as h:
        h.client.trigger("late")
        await h.advance(timedelta(minutes=4))
        assert store.alert_list() == []
        await h.advance(timedelta(minutes=2))
        assert len(store.alert_list()) == 1
        await h.advance(timedelta(minutes=30))  # the watchdog keeps looking, and stays quiet
    (alert,) = store.alert_list()
    assert alert.rule == "run.not_started"


async def test_cancelling_a_running_run_stops_it(
    store: SqlStore, clock: ManualClock, registry: JobRegistry
) -> None:
    from duly.engine.builtin import builtin_registry

    async with EngineHarness(store, builtin_registry, clock) as h:
        run, _ = h.client.trigger("duly.sleep", {"seconds": 100})
        await h.advance(timedelta(seconds=5))
        store.run_cancel(run.id, clock.now())
        await h.advance(timedelta(seconds=30))
    final = store.run_get(run.id)
    assert final is not None and final.status is RunStatus.CANCELLED
    assert final.progress_done is not None and 5 <= final.progress_done < 100


async def test_shutdown_hands_back_unfinished_runs(
    store: SqlStore, clock: ManualClock, registry: JobRegistry
) -> None:
    @registry.job("forever", timeout=86400, retry=1)
    async def forever(ctx: JobContext) -> None:
        await ctx.clock.sleep(86400)

    h = EngineHarness(store, registry, clock, options=test_options(shutdown_grace_seconds=5))
    await h.start()
    run, _ = h.client.trigger("forever")
    await h.advance(timedelta(seconds=1))
    stopping = asyncio.ensure_future(h.stop())
    await asyncio.sleep(0.05)
    clock.advance(timedelta(seconds=6))
    await stopping
    final = store.run_get(run.id)
    assert final is not None and final.status is RunStatus.RETRYING
    assert final.error_code == "SHUTDOWN" and final.max_attempts == 2


async def test_several_nodes_run_each_fire_exactly_once(
    store: SqlStore, clock: ManualClock, registry: JobRegistry
) -> None:
    executed: list[tuple[str, datetime]] = []
    registry.job("tick")(lambda ctx: executed.append((ctx.args["s"], ctx.scheduled_for)))
    async with EngineHarness(store, registry, clock, nodes=3) as h:
        for i in range(20):
            h.client.upsert_schedule(
                NewSchedule(
                    name=f"s{i}",
                    job_name="tick",
                    spec="every:1m",
                    args={"s": f"s{i}"},
                    overlap="allow",
                )
            )
        await h.advance(timedelta(minutes=30))
    assert len(executed) == 20 * 30
    assert len(set(executed)) == len(executed)
    nodes = {a.node for r in runs_of(store) for a in store.run_attempts(r.id)}
    assert len(nodes) >= 2


async def test_pause_stops_fires_and_resume_fires_from_now_without_catch_up(
    store: SqlStore, clock: ManualClock, registry: JobRegistry
) -> None:
    registry.job("tick")(lambda ctx: None)
    async with EngineHarness(store, registry, clock) as h:
        h.client.upsert_schedule(NewSchedule(name="t", job_name="tick", spec="every:1h"))
        await h.advance(timedelta(hours=2, minutes=30))  # fires 01:00, 02:00
        h.client.pause("t")
        await h.advance(timedelta(hours=3))  # 03:00 … 05:00 pass while paused
        h.client.resume("t")
        await h.advance(timedelta(hours=2))  # 06:00, 07:00
    fired = [r.scheduled_for.hour for r in runs_of(store)]
    assert fired == [1, 2, 6, 7]
    assert store.alert_list() == []  # a pause is not a misfire


async def test_prune_deletes_attempt_records_past_retention_and_keeps_the_rest(
    store: SqlStore, clock: ManualClock
) -> None:
    from duly.engine.builtin import builtin_registry

    async with EngineHarness(store, builtin_registry, clock) as h:
        old, _ = h.client.trigger("duly.noop")
        await h.advance(timedelta(days=10))
        recent, _ = h.client.trigger("duly.noop")
        await h.advance(timedelta(days=1))
        pruning, _ = h.client.trigger("duly.prune", {"retention_days": 5})
        await h.advance(timedelta(seconds=1))
    done = store.run_get(pruning.id)
    assert done is not None and done.status is RunStatus.SUCCEEDED
    assert done.result["job_executions_deleted"] == 1
    assert store.run_attempts(old.id) == []  # the attempt record is gone; the run row stays
    assert store.run_get(old.id) is not None
    assert len(store.run_attempts(recent.id)) == 1


async def test_overlap_allow_runs_fires_side_by_side(
    store: SqlStore, clock: ManualClock, registry: JobRegistry
) -> None:
    active: list[int] = []
    peak: list[int] = []

    @registry.job("long", timeout=3600, retry=1)
    async def long(ctx: JobContext) -> None:
        active.append(ctx.run_id)
        peak.append(len(active))
        await ctx.clock.sleep(150)
        active.remove(ctx.run_id)

    async with EngineHarness(store, registry, clock) as h:
        h.client.upsert_schedule(
            NewSchedule(name="l", job_name="long", spec="every:1m", overlap="allow")
        )
        await h.advance(timedelta(minutes=5, seconds=30))
    assert max(peak) == 3  # a 150 s job fired every minute: three at once
    assert [r.status for r in runs_of(store)][:3] == [RunStatus.SUCCEEDED] * 3


async def test_overlap_cancel_previous_stops_the_running_one(
    store: SqlStore, clock: ManualClock, registry: JobRegistry
) -> None:
    @registry.job("long", timeout=3600, retry=1)
    async def long(ctx: JobContext) -> None:
        for _ in range(150):
            ctx.check_cancelled()
            await ctx.clock.sleep(1)

    async with EngineHarness(store, registry, clock) as h:
        h.client.upsert_schedule(
            NewSchedule(name="l", job_name="long", spec="every:1m", overlap="cancel_previous")
        )
        await h.advance(timedelta(minutes=2, seconds=30))
    statuses = [r.status for r in runs_of(store)]
    assert statuses[0] is RunStatus.CANCELLED  # 00:01's run, stopped by the 00:02 fire
    assert statuses[1] in (RunStatus.RUNNING, RunStatus.RETRYING)  # still going, handed back


async def test_a_run_past_its_window_raises_one_alert(
    store: SqlStore, clock: ManualClock, registry: JobRegistry
) -> None:
    @registry.job("batch", timeout=7200, retry=1, window=600)
    async def batch(ctx: JobContext) -> None:
        await ctx.clock.sleep(1800)

    async with EngineHarness(store, registry, clock) as h:
        h.client.trigger("batch")
        await h.advance(timedelta(minutes=9))
        assert store.alert_list() == []
        await h.advance(timedelta(minutes=30))
    (alert,) = store.alert_list()
    assert alert.rule == "run.window_exceeded"


async def test_a_per_job_limit_holds_across_two_nodes(
    store: SqlStore, clock: ManualClock, registry: JobRegistry
) -> None:
    active: list[int] = []
    peak: list[int] = []

    @registry.job("limited", timeout=600, retry=1, max_concurrency=2)
    async def limited(ctx: JobContext) -> None:
        active.append(ctx.run_id)
        peak.append(len(active))
        await ctx.clock.sleep(10)
        active.remove(ctx.run_id)

    async with EngineHarness(store, registry, clock, nodes=2) as h:
        for i in range(6):
            h.client.trigger("limited", idempotency_key=f"l{i}")
        await h.advance(timedelta(seconds=40))
    assert max(peak) == 2
    assert [r.status for r in runs_of(store)] == [RunStatus.SUCCEEDED] * 6


async def test_a_node_that_lost_its_lease_stops_the_job_before_its_side_effect(
    store: SqlStore, clock: ManualClock, registry: JobRegistry
) -> None:
    from duly.engine.errors import LeaseLost
    from duly.engine.store.base import ClaimParams

    seen: list[str] = []

    @registry.job("pay", timeout=600)
    async def pay(ctx: JobContext) -> str:
        await ctx.clock.sleep(60)  # the node is paused longer than the lease, say
        seen.append("cancelled" if ctx.cancelled else "not told")
        try:
            ctx.check_lease()
        except LeaseLost:
            seen.append("stopped")
            raise
        seen.append("paid")  # the bank call a second node is making too
        return "paid"

    opts = test_options(lease_seconds=30, heartbeat_seconds=10, reaper_interval_seconds=3600)
    async with EngineHarness(store, registry, clock, options=opts) as h:
        run, _ = h.client.trigger("pay")
        await h.advance(timedelta(seconds=1))
        # Meanwhile its lease ran out and another node took the run over.
        later = clock.now() + timedelta(seconds=31)
        store.run_reap_expired(later, 10, lambda r: (RunStatus.RETRYING, later))
        (taken,) = store.run_claim(
            ClaimParams(node="n2", queues=("default",), limit=1, now=later, lease_seconds=300)
        )
        await h.advance(timedelta(seconds=90))
    assert seen == ["cancelled", "stopped"]
    row = store.run_get(run.id)
    assert row is not None and row.lease_owner == "n2" and row.status is RunStatus.RUNNING
    assert row.fencing_token == taken.run.fencing_token


async def test_an_abandoned_thread_holds_its_slot_and_its_jobs_limit_until_it_ends(
    store: SqlStore, clock: ManualClock, registry: JobRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = threading.Lock()
    running: list[int] = []
    peak = 0
    starts: list[timedelta] = []

    @registry.job("stuck", timeout=10, max_concurrency=1, retry=1)
    def stuck(ctx: JobContext) -> str:
        nonlocal peak
        with lock:
            running.append(ctx.run_id)
            peak = max(peak, len(running))
            starts.append(ctx.clock.now() - T0)
        try:
            ctx.clock.sleep_blocking(50)  # ignores its timeout: Python cannot stop a thread
        finally:
            with lock:
                running.remove(ctx.run_id)
        return "late"

    async with EngineHarness(store, registry, clock) as h:
        runs = [h.client.trigger("stuck", idempotency_key=f"s{i}")[0] for i in range(3)]
        await h.advance(timedelta(seconds=20))
        first = store.run_get(runs[0].id)
        assert first is not None and first.error_code == "JOB_TIMEOUT"
        assert "abandoned" in (first.error_message or "")
        assert h.node.worker is not None and h.node.worker.abandoned_threads == 1
        assert starts == [timedelta(0)]  # the next run waits for the abandoned thread
        for _ in range(140):  # a second at a time, so a thread's end is seen when it happens
            await h.advance(timedelta(seconds=1))
            await asyncio.sleep(0.005)  # the thread's end is reported from the thread
        ended = [store.run_get(r.id) for r in runs]
        assert [r.status if r else None for r in ended] == [RunStatus.FAILED] * 3
    assert peak == 1
    assert len(starts) == 3
    # each run started only once the abandoned thread before it had ended (50 s each)
    assert all(b - a >= timedelta(seconds=50) for a, b in itertools.pairwise(starts))
    assert starts[-1] <= timedelta(seconds=110)
    # An operator reading the run is told its thread was abandoned.
    monkeypatch.setenv("DULY_DATABASE_URL", store.engine.url.render_as_string(hide_password=False))
    structlog.reset_defaults()
    shown = CliRunner().invoke(app, ["runs", "show", str(runs[0].id)])
    structlog.reset_defaults()
    assert shown.exit_code == 0, shown.output
    assert "JOB_TIMEOUT" in shown.output and "thread was abandoned" in shown.output


async def test_a_run_claimed_again_beside_its_lost_attempt_waits_for_it_and_keeps_its_lease(
    store: SqlStore, clock: ManualClock, registry: JobRegistry
) -> None:
    spans: list[tuple[int, timedelta, timedelta]] = []

    @registry.job("slow", timeout=600)
    async def slow(ctx: JobContext) -> int:
        began = ctx.clock.now() - T0
        await ctx.clock.sleep(60)  # does not look at ctx.cancelled: a job stuck in a call
        spans.append((ctx.attempt, began, ctx.clock.now() - T0))
        return ctx.attempt

    opts = test_options(lease_seconds=30, heartbeat_seconds=10, reaper_interval_seconds=3600)
    async with EngineHarness(store, registry, clock, options=opts) as h:
        run, _ = h.client.trigger("slow")
        await h.advance(timedelta(seconds=1))
        # The node was paused past its lease: the run was reaped; this same node claims it again.
        later = clock.now() + timedelta(seconds=31)
        store.run_reap_expired(later, 10, lambda r: (RunStatus.RETRYING, later))
        await h.advance(timedelta(seconds=70))  # the lost attempt ends at 60 s
        worker = h.node.worker
        assert worker is not None and run.id in worker.in_flight  # the new attempt is still known
        # Its lease is kept: a reaper finds nothing to take back.
        assert store.run_reap_expired(clock.now(), 10, lambda r: (RunStatus.RETRYING, later)) == []
        await h.advance(timedelta(seconds=90))
    row = store.run_get(run.id)
    assert row is not None and row.status is RunStatus.SUCCEEDED and row.attempt == 2
    assert [a for a, _, _ in spans] == [1, 2]
    (_, _, first_end), (_, second_start, _) = spans
    assert second_start >= first_end  # never both at once on one node


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_shutdown_hands_a_run_back_only_once_its_code_stopped(
    store: SqlStore, clock: ManualClock, registry: JobRegistry, kind: str
) -> None:
    seen_while_running: list[tuple[RunStatus, str | None]] = []

    def look(run_id: int) -> None:
        row = store.run_get(run_id)
        assert row is not None
        seen_while_running.append((row.status, row.lease_owner))

    if kind == "sync":

        @registry.job("stubborn", timeout=3600)
        def stubborn_sync(ctx: JobContext) -> None:
            ctx.clock.sleep_blocking(120)  # a call that cannot be interrupted
            look(ctx.run_id)

    else:

        @registry.job("stubborn", timeout=3600)
        async def stubborn(ctx: JobContext) -> None:
            try:
                await ctx.clock.sleep(120)
            except asyncio.CancelledError:
                await ctx.clock.sleep(60)  # a slow clean-up that ignores the cancellation
            look(ctx.run_id)

    opts = test_options(lease_seconds=30, heartbeat_seconds=10, shutdown_grace_seconds=5)
    h = EngineHarness(store, registry, clock, options=opts)
    await h.start()
    run, _ = h.client.trigger("stubborn")
    await h.advance(timedelta(seconds=1))
    await h.stop()  # moves the clock while the job waits on it: past its lease several times
    # While its code ran, the run stayed this node's, its lease extended by the heartbeat.
    assert seen_while_running == [(RunStatus.RUNNING, h.node.options.node_name)]
    row = store.run_get(run.id)
    assert row is not None and row.status is RunStatus.RETRYING and row.lease_owner is None
    assert row.max_attempts == run.max_attempts + 1  # handed back: the attempt does not count


async def test_an_async_jobs_progress_never_blocks_the_event_loop_on_the_database(
    store: SqlStore, registry: JobRegistry
) -> None:
    from sqlalchemy import text

    from duly.clock import SystemClock
    from duly.engine.client import EngineClient
    from duly.engine.node import Node

    loop = asyncio.get_running_loop()
    started, locked, took = asyncio.Event(), asyncio.Event(), []

    @registry.job("count", timeout=60)
    async def count(ctx: JobContext) -> None:
        started.set()
        await locked.wait()
        began = loop.time()
        ctx.report_progress(1, 1)  # the runs table is locked by someone else
        took.append(loop.time() - began)

    real = SystemClock()
    node = Node(store, registry, real, test_options(max_idle_seconds=0.05), roles=("worker",),
                listen=False)  # fmt: skip
    await node.start()
    try:
        run, _ = EngineClient(store, registry, real).trigger("count")
        await asyncio.wait_for(started.wait(), 10)
        with store.engine.connect() as conn:
            if store.is_postgres:
                conn.execute(text("SELECT 1 FROM runs WHERE id = :i FOR UPDATE"), {"i": run.id})
            else:
                conn.execute(text("UPDATE runs SET priority = priority WHERE id = :i"), {"i": run.id})
            locked.set()
            await asyncio.sleep(1.0)  # the loop must be free to get here and let go
            conn.rollback()
        for _ in range(100):
            row = store.run_get(run.id)
            if row is not None and row.status is RunStatus.SUCCEEDED:
                break
            await asyncio.sleep(0.05)
    finally:
        await node.stop()
    assert took and took[0] < 0.5
    assert row is not None and row.status is RunStatus.SUCCEEDED
    assert (row.progress_done, row.progress_total) == (1, 1)  # written before the outcome
