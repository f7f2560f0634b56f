"""Several ``duly worker`` processes on one store: every run once, a killed node's run taken back.

These tests start real processes on the real clock, so they wait in real time (through
:class:`SystemClock`, a few seconds each).
"""

from __future__ import annotations

import signal
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from duly.clock import SystemClock
from duly.engine.builtin import builtin_registry
from duly.engine.client import EngineClient
from duly.engine.registry import JobRegistry
from duly.engine.states import RunStatus
from duly.engine.store.base import NewSchedule, RunFilter
from duly.engine.store.sql import SqlStore

if TYPE_CHECKING:
    from conftest import StartWorker, WaitFor

pytestmark = pytest.mark.slow

CLOCK = SystemClock()


def test_two_workers_run_every_run_once_and_fire_each_instant_once(
    store: SqlStore, duly_worker: StartWorker, wait_for: WaitFor
) -> None:
    client = EngineClient(store, builtin_registry, CLOCK)
    total = 1000
    a, b = duly_worker("node-a"), duly_worker("node-b")

    def both_up() -> bool:
        return {n.name for n in store.node_list() if n.state == "running"} == {"node-a", "node-b"}

    wait_for(both_up, 90, "both nodes to start")
    for i in range(total):
        client.trigger("duly.noop", idempotency_key=f"proc-{i}")
    client.upsert_schedule(NewSchedule(name="every-second", job_name="duly.noop", spec="every:1s"))

    def manual_done() -> bool:
        runs = store.run_list(RunFilter(status=RunStatus.SUCCEEDED, limit=total + 1000))
        return sum(r.schedule_id is None for r in runs) >= total

    wait_for(manual_done, 60, f"{total} manual runs to succeed")
    CLOCK.sleep_blocking(3)  # a few more fires of the schedule, both schedulers competing
    a.send_signal(signal.SIGTERM)
    b.send_signal(signal.SIGTERM)
    assert a.wait(timeout=20) == 0 and b.wait(timeout=20) == 0

    runs = store.run_list(RunFilter(limit=5000))
    manual = [r for r in runs if r.schedule_id is None]
    fired = [r for r in runs if r.schedule_id is not None]
    assert len(manual) == total
    assert all(r.status is RunStatus.SUCCEEDED and r.attempt == 1 for r in manual)
    # each run executed exactly once: one attempt record per run
    attempts = Counter(a.node for r in manual for a in store.run_attempts(r.id))
    assert sum(attempts.values()) == total
    assert set(attempts) == {"node-a", "node-b"}, attempts  # both nodes did work
    # both schedulers ran, and no instant was fired twice
    instants = Counter(r.scheduled_for for r in fired)
    assert len(fired) >= 3 and max(instants.values()) == 1


def test_a_killed_workers_run_is_taken_back_by_the_other(
    store: SqlStore, duly_worker: StartWorker, wait_for: WaitFor
) -> None:
    client = EngineClient(store, builtin_registry, CLOCK)
    victim = duly_worker("victim")
    run, _ = client.trigger("duly.sleep", args={"seconds": 2}, idempotency_key="sleepy")

    def running_on_victim() -> bool:
        row = store.run_get(run.id)
        return row is not None and row.status is RunStatus.RUNNING

    wait_for(running_on_victim, 30, "the victim to start the run")
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    duly_worker("survivor")

    def succeeded() -> bool:
        row = store.run_get(run.id)
        return row is not None and row.status is RunStatus.SUCCEEDED

    wait_for(succeeded, 60, "the survivor to finish the run")
    history = [(a.node, a.status) for a in store.run_attempts(run.id)]
    assert history == [("victim", "lost"), ("survivor", "succeeded")]


CRASH_JOBS = """
import duly
from sqlalchemy import text


@duly.job("crash.effect", timeout=60, retry=5)
def effect(ctx):
    ctx.clock.sleep_blocking(0.01)  # some work, so that kills land mid-run
    with ctx.transaction() as conn:
        conn.execute(
            text("INSERT INTO crash_effects (run_id, node) VALUES (:r, :n)"),
            {"r": ctx.run_id, "n": ctx.node},
        )
    return {"ok": True}
"""


def _succeeded(store: SqlStore) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.exec_driver_sql("SELECT count(*) FROM runs WHERE status = 'succeeded'").scalar_one()
        )


@pytest.mark.timeout(600)
@pytest.mark.parametrize("manual", [pytest.param(10_000, id="10000")])
def test_three_workers_two_kills_every_run_and_effect_exactly_once(
    store: SqlStore,
    duly_worker: StartWorker,
    wait_for: WaitFor,
    tmp_path: Path,
    manual: int,
) -> None:
    if not store.is_postgres:
        manual //= 5  # the embedded store: the same checks on fewer runs
    (tmp_path / "crashjobs.py").write_text(CRASH_JOBS)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE crash_effects (run_id BIGINT NOT NULL, node TEXT NOT NULL)")
    registry = builtin_registry.merged(JobRegistry())
    registry.job("crash.effect", retry=5)(lambda ctx: None)  # the client only checks the name
    client = EngineClient(store, registry, CLOCK)
    for i in range(manual):
        client.trigger("crash.effect", idempotency_key=f"m{i}")
    for i in range(20):
        client.upsert_schedule(NewSchedule(name=f"s{i}", job_name="crash.effect", spec="every:1s"))
    # Three processes writing one SQLite file: a process can wait seconds for the file's
    # write lock while the others take turns (SQLite's busy handler polls, it does not
    # queue), beyond the 3 s lease of the other tests. A lease it outlives would make a
    # live node's run look lost: the embedded store gets a longer one.
    lease = 3.0 if store.is_postgres else 10.0
    node = {"PYTHONPATH": str(tmp_path), "DULY_ENGINE__LEASE_SECONDS": str(lease)}
    procs = {n: duly_worker(n, "--import", "crashjobs", **node) for n in ("n1", "n2", "n3")}
    print(f"enqueued {manual} at {CLOCK.now().isoformat()}")
    kills: list[tuple[str, datetime]] = []
    for victim, replacement, after in (("n1", "n1b", manual // 4), ("n2", "n2b", manual // 2)):
        wait_for(lambda a=after: _succeeded(store) >= a, 120, f"{after} runs to succeed")
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait(timeout=10)
        kills.append((victim, CLOCK.now()))
        print(f"killed {victim} at {kills[-1][1].isoformat()}")
        procs[replacement] = duly_worker(replacement, "--import", "crashjobs", **node)

    def manual_done() -> bool:
        runs = store.run_list(RunFilter(status=RunStatus.SUCCEEDED, limit=manual + 100_000))
        return sum(r.schedule_id is None for r in runs) >= manual

    wait_for(manual_done, 240, f"{manual} manual runs to succeed")
    for i in range(20):
        client.pause(f"s{i}")
    wait_for(lambda: not store.run_list(RunFilter(status=RunStatus.RUNNING, limit=1))
             and not store.run_list(RunFilter(status=RunStatus.QUEUED, limit=1))
             and not store.run_list(RunFilter(status=RunStatus.RETRYING, limit=1)),
             60, "every run to end")

    with store.engine.connect() as conn:
        q = conn.exec_driver_sql
        statuses = dict(q("SELECT status, count(*) FROM runs GROUP BY status").all())
        fired_twice = q(
            "SELECT count(*) FROM (SELECT schedule_id, scheduled_for FROM runs "
            "WHERE schedule_id IS NOT NULL GROUP BY schedule_id, scheduled_for "
            "HAVING count(*) > 1) t"
        ).scalar_one()
        wins = dict(q(
            "SELECT r.id, count(e.id) FROM runs r LEFT JOIN job_executions e "
            "ON e.job_id = r.id AND e.status = 'succeeded' GROUP BY r.id"
        ).all())
        effects = dict(q("SELECT run_id, count(*) FROM crash_effects GROUP BY run_id").all())
        lost = q(
            "SELECT l.node, l.job_id, n.started_at FROM job_executions l "
            "JOIN job_executions n ON n.job_id = l.job_id AND n.attempt = l.attempt + 1 "
            "WHERE l.status = 'lost'"
        ).all()
    total = sum(statuses.values())
    assert statuses == {"succeeded": total}, statuses
    assert total > manual  # the schedules fired too
    assert fired_twice == 0
    assert set(wins.values()) == {1}  # one successful attempt per run
    assert effects == dict.fromkeys(wins, 1)  # every effect exactly once, none of a lost attempt
    assert {n for n, _, _ in lost} <= {"n1", "n2"} and lost, "the kills landed mid-run"
    kill_at = dict(kills)
    for victim, _, restarted in lost:
        taken_over = (_aware(restarted) - kill_at[victim]).total_seconds()
        assert taken_over <= lease + 5, (victim, taken_over)


def _aware(value: datetime | str) -> datetime:
    """An instant read by raw SQL: a datetime on PostgreSQL, ISO text on SQLite."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def test_a_sleeping_worker_process_starts_a_run_another_process_enqueued_at_once(
    store: SqlStore, duly_worker: StartWorker, wait_for: WaitFor, poll: dict[str, str]
) -> None:
    # A worker that would re-check the store only once a minute on its own: only the
    # cross-process wake-up (NOTIFY; the SQLite file's change counter) can start the run soon.
    duly_worker("sleeper", "--no-scheduler", DULY_ENGINE__MAX_IDLE_SECONDS="60",
                DULY_ENGINE__REAPER_INTERVAL_SECONDS="60", DULY_ENGINE__LEASE_SECONDS="30",
                DULY_ENGINE__HEARTBEAT_SECONDS="10", **poll)  # nothing else wakes it
    wait_for(lambda: any(n.name == "sleeper" for n in store.node_list()), 90, "the node to start")
    CLOCK.sleep_blocking(1)  # its first passes done: asleep until woken
    client = EngineClient(store, builtin_registry, CLOCK)
    run, _ = client.trigger("duly.noop", idempotency_key="wake-me")

    def done() -> bool:
        row = store.run_get(run.id)
        return row is not None and row.status is RunStatus.SUCCEEDED

    wait_for(done, 5, "the run to succeed within seconds, not the worker's minute of idling")


@pytest.fixture
def poll() -> dict[str, str]:
    """Settings for the sleeping worker (none: the defaults); see the check below."""
    return {}


def test_without_the_file_watch_a_sleeping_sqlite_worker_does_not_notice(
    store: SqlStore, duly_worker: StartWorker, wait_for: WaitFor
) -> None:
    """The check of the test above: on SQLite with polling off, the run waits."""
    if store.is_postgres:
        pytest.skip("PostgreSQL wakes by NOTIFY")
    with pytest.raises(pytest.fail.Exception, match="within seconds"):
        test_a_sleeping_worker_process_starts_a_run_another_process_enqueued_at_once(
            store, duly_worker, wait_for, {"DULY_ENGINE__SQLITE_POLL_SECONDS": "0"})
