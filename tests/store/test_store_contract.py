"""The store contract: the same tests on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from duly.engine.errors import LeaseLost, NotFound, RunConflict
from duly.engine.planning import PlannedRun
from duly.engine.states import RunStatus
from duly.engine.store.base import (
    ClaimParams,
    CompleteParams,
    FireDecision,
    NewAlert,
    NewRun,
    NewSchedule,
    RunFilter,
)
from duly.engine.store.sql import SqlStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def new_run(
    key: str,
    *,
    at: datetime = T0,
    job: str = "j",
    queue: str = "default",
    priority: int = 0,
    max_attempts: int = 3,
    window: float | None = None,
) -> NewRun:
    return NewRun(
        job_name=job,
        scheduled_for=at,
        idempotency_key=key,
        queue=queue,
        priority=priority,
        max_attempts=max_attempts,
        window_seconds=window,
    )


def claim(
    store: SqlStore,
    now: datetime = T0,
    *,
    limit: int = 10,
    node: str = "n1",
    queues: tuple[str, ...] = ("default",),
    limits: dict[str, int] | None = None,
    jobs: set[str] | None = None,
    inline: set[str] | None = None,
    slots: int | None = None,
):
    return store.run_claim(
        ClaimParams(
            node=node,
            queues=queues,
            limit=limit,
            now=now,
            lease_seconds=30,
            job_limits=limits or {},
            job_names=frozenset(jobs) if jobs is not None else None,
            inline_jobs=frozenset(inline or ()),
            slot_limit=slots,
        )
    )


def complete(store: SqlStore, claimed, status: RunStatus, now: datetime = T0, **kw):
    run = claimed.run
    return store.run_complete(
        CompleteParams(
            run_id=run.id,
            fencing_token=run.fencing_token,
            attempt=run.attempt,
            status=status,
            now=now,
            started_at=now,
            **kw,
        )
    )


def hourly(name: str = "s", *, overlap: str = "allow") -> NewSchedule:
    return NewSchedule(name=name, job_name="j", spec="every:1h", overlap=overlap)


def every_hour_planner(now: datetime):
    """A planner firing each hour boundary up to ``now`` (stands in for the timing module)."""

    def plan(sched, active):
        fires, t = [], sched.next_fire_at
        while t <= now:
            fires.append(PlannedRun(t, RunStatus.QUEUED))
            t += timedelta(hours=1)
        return FireDecision(runs=fires, next_fire_at=t, max_attempts=2)

    return plan


# -- runs: enqueue, claim, complete ------------------------------------------------------


def test_enqueue_is_idempotent_by_key(store: SqlStore) -> None:
    first, created = store.run_enqueue(new_run("k1"), T0)
    again, created_again = store.run_enqueue(new_run("k1", job="other"), T0)
    assert created and not created_again
    assert again.id == first.id and again.job_name == "j"
    assert first.status is RunStatus.QUEUED and first.attempt == 0


def test_claim_takes_a_lease_with_a_rising_fencing_token(store: SqlStore) -> None:
    store.run_enqueue(new_run("k1"), T0)
    (c1,) = claim(store)
    assert c1.run.status is RunStatus.RUNNING and c1.run.attempt == 1
    assert c1.run.lease_owner == "n1" and c1.run.lease_expires_at == T0 + timedelta(seconds=30)
    complete(store, c1, RunStatus.RETRYING, not_before=T0)
    (c2,) = claim(store)
    assert c2.run.fencing_token == c1.run.fencing_token + 1 and c2.run.attempt == 2
    assert [a.attempt for a in store.run_attempts(c1.run.id)] == [1, 2]


def test_claim_skips_future_runs_other_queues_and_orders_by_priority(store: SqlStore) -> None:
    store.run_enqueue(new_run("later", at=T0 + timedelta(minutes=1)), T0)
    store.run_enqueue(new_run("other-queue", queue="bulk"), T0)
    store.run_enqueue(new_run("low", priority=0), T0)
    store.run_enqueue(new_run("high", priority=5), T0)
    got = claim(store)
    assert [c.run.idempotency_key for c in got] == ["high", "low"]
    assert store.run_next_claimable_at(["default"]) == T0 + timedelta(minutes=1)


def test_next_claimable_for_some_jobs_beside_any(store: SqlStore) -> None:
    store.run_enqueue(new_run("soon", job="a", at=T0 + timedelta(minutes=1)), T0)
    store.run_enqueue(new_run("later", job="b", at=T0 + timedelta(minutes=5)), T0)
    store.run_enqueue(new_run("elsewhere", job="b", queue="bulk"), T0)
    in_a = T0 + timedelta(minutes=1)
    assert store.run_next_claimable_for(["default"], {"b"}) == (in_a, T0 + timedelta(minutes=5))
    assert store.run_next_claimable_for(["default"], {"c"}) == (in_a, None)
    assert store.run_next_claimable_for(["none"], {"a"}) == (None, None)


def queue_mixed_jobs(store: SqlStore) -> None:
    """Runs of three jobs, their claim order spread across jobs by priority and due time."""
    for key, job, priority, minutes in [
        ("a-late", "a", 0, -1), ("b-high", "b", 5, -1), ("c-first", "c", 9, -9),
        ("a-early", "a", 0, -5), ("b-low", "b", 0, -3), ("a-high", "a", 5, -2),
        ("b-future", "b", 9, 5),
    ]:  # fmt: skip
        store.run_enqueue(new_run(key, job=job, priority=priority,
                                  at=T0 + timedelta(minutes=minutes)), T0)  # fmt: skip


@pytest.mark.parametrize("limits", [None, {"b": 5}], ids=["fast", "limited"])
def test_a_claim_of_some_jobs_keeps_the_claim_order_across_them(
    store: SqlStore, limits: dict[str, int] | None
) -> None:
    queue_mixed_jobs(store)
    got = claim(store, jobs={"a", "b"}, limits=limits)
    # priority first, then due time; job c and the future run are not taken
    assert [c.run.idempotency_key for c in got] == ["a-high", "b-high", "a-early", "b-low", "a-late"]
    assert claim(store, jobs={"a", "b"}, limits=limits) == []
    assert [c.run.idempotency_key for c in claim(store, jobs={"c", "x"})] == ["c-first"]


@pytest.mark.parametrize("limits", [None, {"slow": 50}], ids=["fast", "limited"])
def test_runs_of_inline_jobs_fill_a_claim_past_the_free_slots(
    store: SqlStore, limits: dict[str, int] | None
) -> None:
    for i in range(6):  # interleaved in claim order: slow-0, quick-0, slow-1, quick-1, …
        store.run_enqueue(new_run(f"slow-{i}", job="slow", at=T0 - timedelta(seconds=12 - 2 * i)), T0)
        store.run_enqueue(new_run(f"quick-{i}", job="quick", at=T0 - timedelta(seconds=11 - 2 * i)), T0)
    got = claim(store, limit=8, slots=2, inline={"quick"}, limits=limits)
    keys = [c.run.idempotency_key for c in got]
    # in claim order, two slow runs at most; quick ones past them (how far one claim looks
    # ahead differs: PostgreSQL's one-statement claim reads ``limit`` candidates)
    assert keys[:4] == ["slow-0", "quick-0", "slow-1", "quick-1"]
    quick = [k for k in keys if k.startswith("quick")]
    assert len(keys) >= 6 and quick == [f"quick-{i}" for i in range(len(quick))]
    # with no slot free, only inline runs are taken
    more = claim(store, limit=8, slots=0, inline={"quick"}, node="n2")
    assert all(c.run.job_name == "quick" for c in more)
    assert len(quick) + len(more) == 6
    rest = claim(store, limit=8, node="n3")
    assert [c.run.idempotency_key for c in rest] == [f"slow-{i}" for i in range(2, 6)]


def test_a_replayed_enqueue_returns_the_first_run(store: SqlStore) -> None:
    woken: list[str] = []
    store.subscribe(woken.append)
    first, created = store.run_enqueue(new_run("once", at=T0 + timedelta(minutes=5)), T0)
    again, created_again = store.run_enqueue(new_run("once"), T0)
    assert (created, created_again) == (True, False) and woken[0] == "runs"
    assert again == first and first.scheduled_for == T0 + timedelta(minutes=5)
    assert first.args == {} and first.not_before == first.scheduled_for


def test_a_claim_of_some_jobs_takes_at_most_its_limit_in_order(store: SqlStore) -> None:
    queue_mixed_jobs(store)
    first = claim(store, jobs={"a", "b"}, limit=2)
    assert [c.run.idempotency_key for c in first] == ["a-high", "b-high"]
    rest = claim(store, jobs={"a", "b", "c"}, limit=10, node="n2")
    assert [c.run.idempotency_key for c in rest] == ["c-first", "a-early", "b-low", "a-late"]
    assert claim(store, jobs=set()) == []


def test_a_stale_lease_cannot_write_an_outcome(store: SqlStore) -> None:
    store.run_enqueue(new_run("k1"), T0)
    (c1,) = claim(store)
    complete(store, c1, RunStatus.RETRYING, not_before=T0)
    (c2,) = claim(store)
    with pytest.raises(LeaseLost):
        complete(store, c1, RunStatus.SUCCEEDED)
    done = complete(store, c2, RunStatus.SUCCEEDED, result={"n": 1})
    assert done.status is RunStatus.SUCCEEDED and done.result == {"n": 1}
    assert done.lease_owner is None and done.finished_at == T0


def test_effects_commit_with_the_completion(store: SqlStore) -> None:
    store.run_enqueue(new_run("k1"), T0)
    (c1,) = claim(store)
    effects = store.effects_begin()
    effects.connection.execute(text("UPDATE nodes SET pid = 1"))  # any write in the same tx
    effects.connection.execute(
        text(
            "INSERT INTO alerts (dedupe_key, rule, severity, status, title, details, occurrences,"
            " first_raised_at, last_raised_at) VALUES ('fx', 'r', 'low', 'open', 't', '{}', 1,"
            " :t, :t)"
        ),
        {"t": T0 if store.is_postgres else T0.replace(tzinfo=None)},
    )
    store.run_complete(
        CompleteParams(
            run_id=c1.run.id,
            fencing_token=c1.run.fencing_token,
            attempt=1,
            status=RunStatus.SUCCEEDED,
            now=T0,
            started_at=T0,
        ),
        effects,
    )
    assert [a.dedupe_key for a in store.alert_list()] == ["fx"]


def test_effects_are_rolled_back_when_the_lease_was_lost(store: SqlStore) -> None:
    store.run_enqueue(new_run("k1"), T0)
    (c1,) = claim(store)
    reaped = store.run_reap_expired(
        T0 + timedelta(minutes=1), 10, lambda r: (RunStatus.RETRYING, T0)
    )
    assert [r.id for r in reaped] == [c1.run.id]
    effects = store.effects_begin()
    effects.connection.execute(
        text(
            "INSERT INTO alerts (dedupe_key, rule, severity, status, title, details, occurrences,"
            " first_raised_at, last_raised_at) VALUES ('fx', 'r', 'low', 'open', 't', '{}', 1,"
            " :t, :t)"
        ),
        {"t": T0 if store.is_postgres else T0.replace(tzinfo=None)},
    )
    with pytest.raises(LeaseLost):
        store.run_complete(
            CompleteParams(
                run_id=c1.run.id,
                fencing_token=c1.run.fencing_token,
                attempt=1,
                status=RunStatus.SUCCEEDED,
                now=T0,
                started_at=T0,
            ),
            effects,
        )
    assert store.alert_list() == []


def _insert_alert(effects, key: str, store: SqlStore) -> None:
    effects.connection.execute(
        text(
            "INSERT INTO alerts (dedupe_key, rule, severity, status, title, details, occurrences,"
            " first_raised_at, last_raised_at) VALUES (:k, 'r', 'low', 'open', 't', '{}', 1,"
            " :t, :t)"
        ),
        {"k": key, "t": T0 if store.is_postgres else T0.replace(tzinfo=None)},
    )


def _success(claimed, now: datetime = T0) -> CompleteParams:
    run = claimed.run
    return CompleteParams(run_id=run.id, fencing_token=run.fencing_token, attempt=run.attempt,
                          status=RunStatus.SUCCEEDED, now=now, started_at=now)  # fmt: skip


def test_a_batch_completes_with_its_shared_effects(store: SqlStore) -> None:
    for i in range(3):
        store.run_enqueue(new_run(f"b{i}"), T0)
    got = claim(store, limit=3)
    effects = store.effects_begin()
    for c in got:
        _insert_alert(effects, f"fx{c.run.id}", store)
    assert store.run_complete_batch([_success(c) for c in got], effects) == [True] * 3
    assert len(store.alert_list()) == 3
    assert {store.run_get(c.run.id).status for c in got} == {RunStatus.SUCCEEDED}  # type: ignore[union-attr]


def test_a_batch_with_one_lost_lease_writes_nothing(store: SqlStore) -> None:
    for i in range(3):
        store.run_enqueue(new_run(f"b{i}"), T0)
    (lost,) = claim(store, limit=1)
    others = claim(store, T0 + timedelta(seconds=50), limit=2)
    # only the first lease (30 s from T0) has expired at T0+40s
    reaped = store.run_reap_expired(
        T0 + timedelta(seconds=40), 10, lambda r: (RunStatus.RETRYING, T0)
    )
    assert [r.id for r in reaped] == [lost.run.id]
    batch = [lost, *others]
    effects = store.effects_begin()
    for c in batch:
        _insert_alert(effects, f"fx{c.run.id}", store)
    assert store.run_complete_batch([_success(c) for c in batch], effects) == [False, True, True]
    assert store.alert_list() == []  # the shared effects were rolled back
    assert {store.run_get(c.run.id).status for c in others} == {RunStatus.RUNNING}  # type: ignore[union-attr]
    assert not effects.opened


def test_concurrent_claimers_never_share_a_run(store: SqlStore) -> None:
    for i in range(120):
        store.run_enqueue(new_run(f"k{i}"), T0)
    seen: list[int] = []
    lock = threading.Lock()

    def worker(node: str) -> None:
        while True:
            got = claim(store, node=node, limit=7)
            if not got:
                return
            with lock:
                seen.extend(c.run.id for c in got)

    threads = [threading.Thread(target=worker, args=(f"n{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 120 and len(set(seen)) == 120


def test_job_limit_holds_across_claimers(store: SqlStore) -> None:
    for i in range(6):
        store.run_enqueue(new_run(f"lim{i}", job="limited"), T0)
    store.run_enqueue(new_run("free"), T0)
    got = claim(store, limits={"limited": 2}) + claim(store, node="n2", limits={"limited": 2})
    names = Counter(c.run.job_name for c in got)
    assert names == {"limited": 2, "j": 1}
    complete(store, next(c for c in got if c.run.job_name == "limited"), RunStatus.SUCCEEDED)
    assert [c.run.job_name for c in claim(store, limits={"limited": 2})] == ["limited"]


def test_serial_runs_go_one_at_a_time_in_order(store: SqlStore) -> None:
    store.schedule_upsert(hourly(overlap="queue"), T0, lambda s: T0)
    store.schedule_fire_due(
        T0 + timedelta(hours=2), 10, every_hour_planner(T0 + timedelta(hours=2))
    )
    (first,) = claim(store, T0 + timedelta(hours=2))
    assert first.run.scheduled_for == T0
    assert claim(store, T0 + timedelta(hours=2)) == []
    complete(store, first, RunStatus.RETRYING, not_before=T0 + timedelta(hours=3))
    assert claim(store, T0 + timedelta(hours=2)) == []  # the retrying run keeps its place
    (again,) = claim(store, T0 + timedelta(hours=3))
    assert again.run.id == first.run.id
    complete(store, again, RunStatus.SUCCEEDED)
    (second,) = claim(store, T0 + timedelta(hours=3))
    assert second.run.scheduled_for == T0 + timedelta(hours=1)


def test_runs_held_back_by_a_saturated_job_do_not_starve_other_jobs(store: SqlStore) -> None:
    # Far more runs of a job at its limit than one look-ahead window holds, all due first.
    store.run_enqueue_many([new_run(f"busy-{i}", job="busy") for i in range(90)], T0)
    others = [new_run(f"other-{i}", job="other", at=T0 + timedelta(seconds=1)) for i in range(3)]
    store.run_enqueue_many(others, T0)
    now = T0 + timedelta(seconds=2)
    (running,) = claim(store, now, limit=1, limits={"busy": 1})
    assert running.run.job_name == "busy"
    got = claim(store, now, limit=4, limits={"busy": 1})
    assert sorted(c.run.idempotency_key for c in got) == ["other-0", "other-1", "other-2"]


def test_runs_held_back_by_a_serial_key_do_not_starve_other_runs(store: SqlStore) -> None:
    store.schedule_upsert(hourly(overlap="queue"), T0, lambda s: T0)
    late = T0 + timedelta(hours=100)
    store.schedule_fire_due(late, 200, every_hour_planner(late))  # 101 runs of one serial key
    store.run_enqueue(new_run("free", job="other", at=late), T0)
    got = claim(store, late, limit=4)
    assert sorted(c.run.job_name for c in got) == ["j", "other"]  # the key's first, and the free one


# -- schedules and firing ----------------------------------------------------------------


def test_firing_inserts_each_fire_once_and_advances(store: SqlStore) -> None:
    store.schedule_upsert(hourly(), T0, lambda s: T0)
    now = T0 + timedelta(hours=2, minutes=30)
    fired = store.schedule_fire_due(now, 10, every_hour_planner(now))
    assert len(fired) == 1 and len(fired[0].created_run_ids) == 3
    assert store.schedule_get("s").next_fire_at == T0 + timedelta(hours=3)  # type: ignore[union-attr]
    assert store.schedule_fire_due(now, 10, every_hour_planner(now)) == []
    runs = store.run_list(RunFilter())
    assert sorted(r.scheduled_for for r in runs) == [T0 + timedelta(hours=h) for h in range(3)]
    assert {r.max_attempts for r in runs} == {2}


def test_two_nodes_firing_at_once_insert_one_run_per_fire(store: SqlStore) -> None:
    for i in range(20):
        store.schedule_upsert(hourly(f"s{i}"), T0, lambda s: T0)
    now = T0 + timedelta(hours=5, minutes=1)
    barrier = threading.Barrier(3)

    def fire() -> None:
        barrier.wait()
        while store.schedule_fire_due(now, 3, every_hour_planner(now)):
            pass

    threads = [threading.Thread(target=fire) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    runs = store.run_list(RunFilter(limit=1000))
    assert len(runs) == 20 * 6
    assert len({(r.schedule_id, r.scheduled_for) for r in runs}) == 120


def test_a_rerun_fire_for_an_existing_instant_is_ignored(store: SqlStore) -> None:
    store.schedule_upsert(hourly(), T0, lambda s: T0)
    store.schedule_fire_due(T0, 10, every_hour_planner(T0))
    # Someone moved next_fire_at back (e.g. an edit): the same instant must not run twice.
    store.schedule_set_paused("s", False, T0, T0)
    fired = store.schedule_fire_due(T0, 10, every_hour_planner(T0))
    assert fired[0].created_run_ids == ()
    assert len(store.run_list(RunFilter())) == 1


def test_nodes_starting_together_create_each_schedule_once(store: SqlStore) -> None:
    # Every node upserts the configured schedules as it starts; two starting at once
    # must neither fail on the unique name nor create the schedule twice.
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def start_node() -> None:
        barrier.wait()
        try:
            for i in range(15):
                store.schedule_upsert(hourly(f"cfg{i}"), T0, lambda s: T0)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start_node) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(s.name for s in store.schedule_list()) == sorted(f"cfg{i}" for i in range(15))
    assert {s.version for s in store.schedule_list()} == {1}


def test_upsert_moves_next_fire_only_when_the_definition_changes(store: SqlStore) -> None:
    row = store.schedule_upsert(hourly(), T0, lambda s: T0)
    same = store.schedule_upsert(hourly(), T0, lambda s: T0 + timedelta(days=9))
    assert same.next_fire_at == T0 and same.version == row.version
    changed = store.schedule_upsert(
        NewSchedule(name="s", job_name="j", spec="every:2h", overlap="allow"),
        T0,
        lambda s: T0 + timedelta(hours=2),
    )
    assert changed.next_fire_at == T0 + timedelta(hours=2) and changed.version == row.version + 1


def test_paused_schedules_do_not_fire(store: SqlStore) -> None:
    store.schedule_upsert(hourly(), T0, lambda s: T0)
    store.schedule_set_paused("s", True, T0, None)
    assert store.schedule_fire_due(T0, 10, every_hour_planner(T0)) == []
    assert store.schedule_next_due() is None
    with pytest.raises(NotFound):
        store.schedule_set_paused("nope", True, T0, None)


def test_cancel_previous_cancels_queued_and_flags_running(store: SqlStore) -> None:
    store.schedule_upsert(hourly(overlap="cancel_previous"), T0, lambda s: T0)
    store.schedule_fire_due(T0, 10, every_hour_planner(T0))
    (running,) = claim(store)
    t1 = T0 + timedelta(hours=1)

    def plan(sched, active):
        assert active
        return FireDecision(
            runs=[PlannedRun(t1, RunStatus.QUEUED)],
            next_fire_at=t1 + timedelta(hours=1),
            cancel_previous=True,
        )

    store.schedule_fire_due(t1, 10, plan)
    renewal = store.lease_extend(
        "n1", {running.run.id: running.run.fencing_token}, t1 + timedelta(minutes=1), t1
    )
    assert renewal.cancel == {running.run.id} and not renewal.lost


def test_a_lease_is_extended_only_under_its_own_token(store: SqlStore) -> None:
    store.run_enqueue(new_run("k1"), T0)
    store.run_enqueue(new_run("k2"), T0)
    c1, c2 = claim(store)
    later = T0 + timedelta(minutes=5)
    # k1 was reaped and claimed again (a node paused longer than its lease): a new token
    store.run_reap_expired(T0 + timedelta(seconds=31), 10, lambda r: (RunStatus.RETRYING, T0))
    taken = claim(store, T0 + timedelta(seconds=31), node="n2")
    assert c1.run.id in {c.run.id for c in taken}
    stale = {c1.run.id: c1.run.fencing_token, c2.run.id: c2.run.fencing_token}
    renewal = store.lease_extend("n1", stale, later, T0 + timedelta(seconds=32))
    assert renewal.lost == {c1.run.id, c2.run.id}  # both reaped and now n2's
    assert store.run_get(c1.run.id).lease_owner == "n2"
    assert store.run_get(c1.run.id).lease_expires_at != later
    # the same node claiming its own reaped run again: the old execution's token is stale
    store.run_reap_expired(later, 10, lambda r: (RunStatus.RETRYING, T0))
    (mine,) = [c for c in claim(store, later, node="n1") if c.run.id == c1.run.id]
    renewal = store.lease_extend("n1", {c1.run.id: c1.run.fencing_token}, later, later)
    assert renewal.lost == {c1.run.id}
    assert store.run_get(c1.run.id).lease_expires_at == later + timedelta(seconds=30)
    renewal = store.lease_extend("n1", {mine.run.id: mine.run.fencing_token}, later, later)
    assert not renewal.lost and store.run_get(mine.run.id).lease_expires_at == later


def test_heartbeats_and_completions_of_the_same_runs_never_deadlock(store: SqlStore) -> None:
    # A heartbeat extends every lease of the node while completions of those runs are
    # written, in batches, in another order: neither may wait on the other in a cycle.
    for i in range(200):
        store.run_enqueue(new_run(f"d{i}"), T0)
    got = claim(store, limit=200)
    leases = {c.run.id: c.run.fencing_token for c in got}
    errors: list[BaseException] = []
    done = threading.Event()

    def beat() -> None:
        try:
            while not done.is_set():
                store.lease_extend("n1", leases, T0 + timedelta(minutes=5), T0)
        except BaseException as exc:
            errors.append(exc)

    def complete() -> None:
        try:
            backwards = list(reversed(got))
            for start in range(0, len(backwards), 10):
                store.run_complete_many([_success(c) for c in backwards[start : start + 10]])
        except BaseException as exc:
            errors.append(exc)

    beaters = [threading.Thread(target=beat) for _ in range(2)]
    completer = threading.Thread(target=complete)
    for t in [*beaters, completer]:
        t.start()
    completer.join(timeout=60)
    done.set()
    for t in beaters:
        t.join(timeout=60)
    assert errors == []
    assert {store.run_get(c.run.id).status for c in got} == {RunStatus.SUCCEEDED}  # type: ignore[union-attr]


def test_lease_held_checks_owner_token_and_expiry(store: SqlStore) -> None:
    store.run_enqueue(new_run("k1"), T0)
    (c1,) = claim(store)
    run_id, token = c1.run.id, c1.run.fencing_token
    assert store.lease_held("n1", run_id, token, T0 + timedelta(seconds=29))
    assert not store.lease_held("n1", run_id, token, T0 + timedelta(seconds=30))  # expired
    assert not store.lease_held("n2", run_id, token, T0)
    assert not store.lease_held("n1", run_id, token + 1, T0)
    assert not store.lease_held("n1", run_id + 999, token, T0)
    complete(store, c1, RunStatus.SUCCEEDED)
    assert not store.lease_held("n1", run_id, token, T0)


# -- retries, cancels, reaper, watchdog marks --------------------------------------------


def test_operator_retry_and_cancel_follow_the_state_machine(store: SqlStore) -> None:
    run, _ = store.run_enqueue(new_run("k1", max_attempts=1), T0)
    with pytest.raises(RunConflict):
        store.run_retry(run.id, T0)
    cancelled = store.run_cancel(run.id, T0)
    assert cancelled.status is RunStatus.CANCELLED
    with pytest.raises(RunConflict):
        store.run_cancel(run.id, T0)
    again = store.run_retry(run.id, T0)
    assert again.status is RunStatus.QUEUED
    (c,) = claim(store)
    assert store.run_cancel(run.id, T0).cancel_requested
    with pytest.raises(NotFound):
        store.run_cancel(999_999, T0)
    assert c.run.id == run.id


def test_reaper_returns_expired_leases_or_fails_the_last_attempt(store: SqlStore) -> None:
    a, _ = store.run_enqueue(new_run("a", max_attempts=2), T0)
    b, _ = store.run_enqueue(new_run("b", max_attempts=1), T0)
    claim(store)
    assert (
        store.run_reap_expired(T0 + timedelta(seconds=29), 10, lambda r: (RunStatus.FAILED, T0))
        == []
    )
    later = T0 + timedelta(seconds=31)
    reaped = store.run_reap_expired(
        later,
        10,
        lambda r: (
            (RunStatus.RETRYING, later) if r.attempt < r.max_attempts else (RunStatus.FAILED, later)
        ),
    )
    by_key = {r.idempotency_key: r for r in reaped}
    assert by_key["a"].status is RunStatus.RETRYING and by_key["a"].error_code == "LEASE_EXPIRED"
    assert by_key["b"].status is RunStatus.FAILED
    assert store.run_attempts(a.id)[0].status == "lost"
    assert b.id in {r.id for r in reaped}


def test_hand_back_does_not_spend_an_attempt(store: SqlStore) -> None:
    store.run_enqueue(new_run("a", max_attempts=1), T0)
    (c,) = claim(store)
    assert store.run_hand_back(c.run.id, c.run.fencing_token, 1, T0)
    (again,) = claim(store)
    assert again.run.attempt == 2 and again.run.max_attempts == 2


def test_late_starts_and_window_overruns_are_marked_once(store: SqlStore) -> None:
    store.run_enqueue(new_run("late", window=600), T0)
    assert store.run_mark_late_starts(T0, 10) == []
    assert [
        r.idempotency_key for r in store.run_mark_late_starts(T0 + timedelta(minutes=5), 10)
    ] == ["late"]
    assert store.run_mark_late_starts(T0 + timedelta(minutes=6), 10) == []
    over = store.run_mark_window_overruns(T0 + timedelta(minutes=11), 10)
    assert [r.idempotency_key for r in over] == ["late"]
    assert store.run_mark_window_overruns(T0 + timedelta(minutes=12), 10) == []


def test_progress_needs_the_current_lease(store: SqlStore) -> None:
    store.run_enqueue(new_run("a"), T0)
    (c,) = claim(store)
    assert store.run_progress(c.run.id, c.run.fencing_token, 5, 10, T0)
    assert not store.run_progress(c.run.id, c.run.fencing_token + 1, 6, 10, T0)
    run = store.run_get(c.run.id)
    assert run is not None and (run.progress_done, run.progress_total) == (5, 10)


# -- alerts, nodes, retention -----------------------------------------------------------


def test_alerts_are_deduplicated_while_open(store: SqlStore) -> None:
    alert = NewAlert(dedupe_key="k", rule="r", severity="high", title="t", now=T0)
    first, new = store.alert_raise(alert)
    second, new2 = store.alert_raise(alert)
    assert new and not new2 and second.id == first.id and second.occurrences == 2
    acked = store.alert_set_status(first.id, "acked", "alice", T0)
    assert acked.status == "acked" and acked.acked_by == "alice"
    store.alert_set_status(first.id, "resolved", "bob", T0)
    third, new3 = store.alert_raise(alert)
    assert new3 and third.id != first.id
    with pytest.raises(RunConflict):
        store.alert_set_status(first.id, "acked", "x", T0)


def test_alerts_one_by_id_and_pages_of_a_status(store: SqlStore) -> None:
    ids = [store.alert_raise(NewAlert(dedupe_key=f"k{i}", rule="r", severity="low", title=f"t{i}",
                                      now=T0))[0].id for i in range(5)]  # fmt: skip
    store.alert_set_status(ids[2], "resolved", "bob", T0)
    got = store.alert_get(ids[2])
    assert got is not None and (got.id, got.status, got.resolved_by) == (ids[2], "resolved", "bob")
    assert store.alert_get(ids[-1] + 100) is None
    first = store.alert_list("open", 2)
    assert [a.id for a in first] == [ids[4], ids[3]]
    assert [a.id for a in store.alert_list("open", 2, before_id=first[-1].id)] == [ids[1], ids[0]]
    assert store.alert_list("open", 2, before_id=ids[0]) == []


def test_prune_deletes_only_old_attempts(store: SqlStore) -> None:
    for i, age in enumerate([100, 10]):
        t = T0 - timedelta(days=age)
        store.run_enqueue(new_run(f"k{i}", at=t), t)
        (c,) = claim(store, t)
        complete(store, c, RunStatus.SUCCEEDED, now=t)
    assert store.execution_prune(T0 - timedelta(days=90), batch=1, now=T0) == 1
    remaining = [a for r in store.run_list(RunFilter()) for a in store.run_attempts(r.id)]
    assert len(remaining) == 1 and remaining[0].started_at == T0 - timedelta(days=10)


def test_times_round_trip_as_aware_utc(store: SqlStore) -> None:
    odd = datetime(2026, 3, 29, 1, 30, 0, 123456, tzinfo=UTC)
    run, _ = store.run_enqueue(new_run("t", at=odd), odd)
    got = store.run_get(run.id)
    assert got is not None and got.scheduled_for == odd and got.scheduled_for.tzinfo is not None


# -- the client's batch trigger --------------------------------------------------------------


def test_trigger_many_enqueues_in_order_once_per_key(store: SqlStore) -> None:
    from duly.clock import ManualClock
    from duly.engine.builtin import builtin_registry
    from duly.engine.client import EngineClient

    client = EngineClient(store, builtin_registry, ManualClock(T0))
    keys = [f"many-{i}" for i in range(3)]
    ids = client.trigger_many("duly.noop", [{"n": i} for i in range(3)], idempotency_keys=keys)
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert [store.run_get(i).args for i in ids] == [{"n": 0}, {"n": 1}, {"n": 2}]  # type: ignore[union-attr]
    assert client.trigger_many("duly.noop", [{}] * 3, idempotency_keys=keys) == ids
    with pytest.raises(ValueError, match="one distinct key per run"):
        client.trigger_many("duly.noop", [{}, {}], idempotency_keys=["x", "x"])
    assert len(store.run_list(RunFilter(limit=10))) == 3
