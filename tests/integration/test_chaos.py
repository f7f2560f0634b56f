"""Chaos on PostgreSQL: three ``duly worker`` processes under kills, freezes and outages.

A mixed load (schedules every second, manual triggers, sync and async jobs, jobs longer than
the lease, jobs hanging past their timeout, each writing its effect through
``ctx.transaction()``) runs while a seeded random plan SIGKILLs and restarts workers, freezes
them (SIGSTOP) for longer than the lease, and cuts the database away from every node for a
few seconds (each node reaches PostgreSQL through its own :class:`~faultproxy.FaultProxy`).
Then the load stops, every run must end, and the database must show that nothing was lost,
doubled or run twice at once (see :func:`_check`).

The plan is printed with its seed; ``DULY_CHAOS_SEED=<seed>`` replays it (the timing of the
processes still varies). Real time: about a minute and a half.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import chaos_jobs
import pytest
from sqlalchemy.engine import make_url

from conftest import FAST_NODE_ENV
from duly.clock import SystemClock
from duly.engine.client import EngineClient
from duly.engine.registry import default_registry
from duly.engine.store.base import NewSchedule
from duly.engine.store.sql import SqlStore
from faultproxy import FaultProxy, fault_proxy

if TYPE_CHECKING:
    import subprocess

    from conftest import StartWorker, WaitFor

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CLOCK = SystemClock()
LEASE = float(FAST_NODE_ENV["DULY_ENGINE__LEASE_SECONDS"])
HEARTBEAT = float(FAST_NODE_ENV["DULY_ENGINE__HEARTBEAT_SECONDS"])
SLOTS = 3
KILLS, STOPS, OUTAGES = 10, 3, 2
OUTAGE_SECONDS = 3.0
STOP_SECONDS = LEASE + 1.5
#: A superseded execution must have stopped this long after its successor started: the
#: next heartbeat tells its node (a beat, a round trip, a job's step), or it is a leak.
STOP_GRACE = timedelta(seconds=HEARTBEAT + 2)
#: A killed node's runs are running elsewhere this long after the kill, at the latest.
TAKEOVER = timedelta(seconds=LEASE + 5)
SCHEDULES = {"chaos-s1": "chaos.quick", "chaos-s2": "chaos.aquick", "chaos-s3": "chaos.quick"}
#: The manual load: a job per trigger, by weight; long and hanging jobs are the minority.
LOAD = {"chaos.quick": 40, "chaos.aquick": 30, "chaos.long": 8, "chaos.along": 8,
        "chaos.hang": 5, "chaos.ahang": 5}  # fmt: skip
TRIGGERS_PER_SECOND = 6
#: Slots per node: few enough that a frozen node's runs often wait for it to thaw (the
#: others are busy), so it claims them again beside its own lost attempts.
CONCURRENCY = 6

TABLES = """
DROP TABLE IF EXISTS chaos_effects, chaos_executions;
CREATE TABLE chaos_effects (run_id BIGINT NOT NULL, attempt INT NOT NULL, node TEXT NOT NULL);
CREATE TABLE chaos_executions (
    id BIGSERIAL PRIMARY KEY, run_id BIGINT NOT NULL, attempt INT NOT NULL,
    fencing_token INT NOT NULL, job TEXT NOT NULL, node TEXT NOT NULL, pid INT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL, held_until TIMESTAMPTZ NOT NULL,
    ended_at TIMESTAMPTZ, outcome TEXT
);
"""


@dataclass
class Fault:
    kind: str  # kill | stop | outage
    start: datetime
    end: datetime
    node: str | None = None  # None: every node (an outage)


@dataclass
class Worker:
    slot: int
    name: str
    proc: subprocess.Popen[bytes]


@dataclass
class Chaos:
    """The workers, their proxies and what was done to them, in order."""

    store: SqlStore
    start_worker: StartWorker
    wait_for: WaitFor
    proxies: list[FaultProxy]
    env: dict[str, str]
    workers: dict[int, Worker] = field(default_factory=dict)
    generations: Counter[int] = field(default_factory=Counter)
    faults: list[Fault] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    stopped: set[int] = field(default_factory=set)  # pids frozen right now

    def start(self, slot: int) -> Worker:
        # A new name per process: the attempt rows then tell a node from its replacement.
        self.generations[slot] += 1
        name = f"w{slot}.{self.generations[slot]}"
        url = make_url(self.env["CHAOS_RECORD_URL"]).set(host="127.0.0.1",
                                                         port=self.proxies[slot].port)  # fmt: skip
        proc = self.start_worker(
            name, "--import", "chaos_jobs", **self.env,
            DULY_DATABASE_URL=url.render_as_string(hide_password=False),
        )  # fmt: skip
        worker = self.workers[slot] = Worker(slot, name, proc)
        self.wait_for(lambda: self._up(worker), 30, f"worker {name} to start")
        return worker

    def _up(self, worker: Worker) -> bool:
        assert worker.proc.poll() is None, f"worker {worker.name} exited: {worker.proc.returncode}"
        return any(
            n.name == worker.name and n.state == "running" and n.pid == worker.proc.pid
            for n in self.store.node_list()
        )

    def kill(self, slot: int) -> None:
        victim = self.workers[slot]
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(timeout=10)
        at = CLOCK.now()
        self.faults.append(Fault("kill", at, at, victim.name))
        self.start(slot)

    def freeze(self, slot: int) -> None:
        victim = self.workers[slot]
        start = CLOCK.now()
        victim.proc.send_signal(signal.SIGSTOP)
        self.stopped.add(victim.proc.pid)
        try:
            CLOCK.sleep_blocking(STOP_SECONDS)
        finally:
            victim.proc.send_signal(signal.SIGCONT)
            self.stopped.discard(victim.proc.pid)
        self.faults.append(Fault("stop", start, CLOCK.now(), victim.name))

    def outage(self) -> None:
        start = CLOCK.now()
        for proxy in self.proxies:
            proxy.cut()
        try:
            CLOCK.sleep_blocking(OUTAGE_SECONDS)
        finally:
            for proxy in self.proxies:
                proxy.restore()
        restored = CLOCK.now()
        self.faults.append(Fault("outage", start, restored))
        # Every node claims and completes runs again once the database is back.
        names = {w.name for w in self.workers.values()}
        try:
            self.wait_for(lambda: not names - self._completed_since(restored), 20,
                          f"every worker to complete a run after the outage at {restored}")  # fmt: skip
        except pytest.fail.Exception as exc:
            missing = names - self._completed_since(restored)
            self.problems.append(f"no run completed after the outage ending {restored} by "
                                 f"{sorted(missing)}: {exc}")  # fmt: skip

    def _completed_since(self, since: datetime) -> set[str]:
        with self.store.engine.connect() as conn:
            return set(conn.exec_driver_sql(
                "SELECT DISTINCT node FROM job_executions"
                " WHERE status = 'succeeded' AND started_at >= %(t)s", {"t": since},
            ).scalars())  # fmt: skip

    def thaw_all(self) -> None:
        """Never leave a process frozen (the fixture's SIGTERM would wait on it)."""
        for worker in self.workers.values():
            if worker.proc.pid in self.stopped:
                worker.proc.send_signal(signal.SIGCONT)


class Load:
    """Manual triggers of a random mix of jobs, from a thread, until stopped."""

    def __init__(self, client: EngineClient, rng: random.Random) -> None:
        self.client, self.rng = client, rng
        self.count = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-load", daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        names, weights = list(LOAD), list(LOAD.values())
        while not self._stop.is_set():
            job = self.rng.choices(names, weights)[0]
            try:
                self.client.trigger(job, idempotency_key=f"chaos-{self.count}")
            except Exception as exc:  # the test's own connection is never cut: report it
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self.count += 1
            CLOCK.sleep_blocking(1 / TRIGGERS_PER_SECOND)


def _plan(rng: random.Random) -> list[tuple[str, int, float]]:
    """The faults in a random order: (kind, slot, pause before it in seconds)."""
    kinds = ["kill"] * KILLS + ["stop"] * STOPS + ["outage"] * OUTAGES
    rng.shuffle(kinds)
    return [(kind, rng.randrange(SLOTS), round(rng.uniform(0.5, 2.0), 2)) for kind in kinds]


@pytest.fixture
def proxies(pg_database: str) -> Iterator[list[FaultProxy]]:
    """A fault proxy per worker slot, in front of the test's PostgreSQL."""
    url = make_url(pg_database)
    with ExitStack() as stack:
        yield [
            stack.enter_context(fault_proxy(url.host or "127.0.0.1", url.port or 5432))
            for _ in range(SLOTS)
        ]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_chaos_every_run_final_and_every_effect_once(
    db_url: str,
    store: SqlStore,
    duly_worker: StartWorker,
    wait_for: WaitFor,
    proxies: list[FaultProxy],
) -> None:
    seed = int(os.environ.get("DULY_CHAOS_SEED") or secrets.randbits(32))
    rng = random.Random(seed)
    plan = _plan(rng)
    print(f"chaos seed {seed} (replay: DULY_CHAOS_SEED={seed}); plan {plan}")
    began = CLOCK.now()
    with store.engine.begin() as conn:
        conn.exec_driver_sql(TABLES)
    jobs_dir = str(Path(chaos_jobs.__file__).parent)
    env = {
        "DULY_ENGINE__WORKER_CONCURRENCY": str(CONCURRENCY),
        "CHAOS_RECORD_URL": db_url,
        "PYTHONPATH": os.pathsep.join(p for p in (jobs_dir, os.environ.get("PYTHONPATH")) if p),
    }
    chaos = Chaos(store, duly_worker, wait_for, proxies, env)
    client = EngineClient(store, default_registry, CLOCK)
    try:
        for slot in range(SLOTS):
            chaos.start(slot)
        for name, job in SCHEDULES.items():
            client.upsert_schedule(NewSchedule(name=name, job_name=job, spec="every:1s"))
        with Load(client, random.Random(seed + 1)) as load:
            CLOCK.sleep_blocking(3)  # every kind of job in flight before the first fault
            for kind, slot, pause in plan:
                CLOCK.sleep_blocking(pause)
                print(f"{CLOCK.now().isoformat()} {kind} {chaos.workers[slot].name}")
                if kind == "kill":
                    chaos.kill(slot)
                elif kind == "stop":
                    chaos.freeze(slot)
                else:
                    chaos.outage()
            CLOCK.sleep_blocking(2)
        for name in SCHEDULES:
            client.pause(name)
        chaos_ended = CLOCK.now()
        wait_for(lambda: _active(store) == 0, 60, "every run to end")
        for worker in chaos.workers.values():
            worker.proc.send_signal(signal.SIGTERM)
        for worker in chaos.workers.values():
            code = worker.proc.wait(timeout=30)
            if code != 0:
                chaos.problems.append(f"worker {worker.name} exited with {code} on SIGTERM")
    finally:
        chaos.thaw_all()
    took = (CLOCK.now() - began).total_seconds()
    drained = (CLOCK.now() - chaos_ended).total_seconds()
    print(f"chaos seed {seed}: {load.count} manual triggers, {len(chaos.faults)} faults, "
          f"{took:.1f} s in all, drained in {drained:.1f} s")  # fmt: skip
    assert not load.errors, load.errors[:5]
    problems = chaos.problems + _check(store, chaos.faults)
    assert not problems, f"seed {seed}:\n" + "\n".join(problems[:40])


def _active(store: SqlStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.exec_driver_sql(
            "SELECT count(*) FROM runs WHERE status IN ('queued', 'running', 'retrying')"
        ).scalar_one())  # fmt: skip


def _check(store: SqlStore, faults: list[Fault]) -> list[str]:
    """Every invariant over what the database recorded; one line per violation."""
    with store.engine.connect() as conn:
        q = conn.exec_driver_sql
        runs = {r.id: r for r in q("SELECT id, status, attempt, job_name, error_code FROM runs")}
        fired_twice = q(
            "SELECT schedule_id, scheduled_for, count(*) FROM runs WHERE schedule_id IS NOT NULL"
            " GROUP BY schedule_id, scheduled_for HAVING count(*) > 1"
        ).all()
        wins = q(
            "SELECT job_id, attempt FROM job_executions WHERE status = 'succeeded'"
        ).all()
        effects = q("SELECT run_id, attempt, node FROM chaos_effects").all()
        attempts = q(
            "SELECT job_id, attempt, node, status, started_at, completed_at FROM job_executions"
        ).all()
        executions = q("SELECT * FROM chaos_executions ORDER BY started_at").all()
    problems: list[str] = []
    statuses = Counter(r.status for r in runs.values())
    print(f"runs by status {dict(statuses)}; {len(attempts)} attempts, "
          f"{len(executions)} executions, {Counter(a.status for a in attempts)}")  # fmt: skip
    assert len(runs) > 100, "the load ran"
    problems += [
        f"run {r.id} ({r.job_name}) ended {r.status} after {r.attempt} attempts: {r.error_code}"
        for r in runs.values()
        if r.status != "succeeded"
    ]
    problems += [f"schedule {s} fired {t} {n} times" for s, t, n in fired_twice]

    # Every effect exactly once: one per succeeded run, by the attempt that succeeded.
    won = Counter(w.job_id for w in wins)
    problems += [f"run {r} has {n} succeeded attempts" for r, n in won.items() if n > 1]
    by_run: dict[int, list[Any]] = defaultdict(list)
    for e in effects:
        by_run[e.run_id].append(e)
    winner = {w.job_id: w.attempt for w in wins}
    for run in runs.values():
        if run.job_name not in chaos_jobs.JOBS:
            continue  # duly's own schedules (the sweep, pruning) fire too: no effect to count
        got = [(e.attempt, e.node) for e in by_run.get(run.id, [])]
        want = [winner[run.id]] if run.status == "succeeded" and run.id in winner else []
        if [a for a, _ in got] != want:
            problems.append(f"run {run.id} ({run.job_name}, {run.status}): effects {got}, "
                            f"expected from attempt(s) {want}")  # fmt: skip

    kills = {f.node: f.end for f in faults if f.kind == "kill"}
    stops = [f for f in faults if f.kind == "stop"]
    outages = [f for f in faults if f.kind == "outage"]

    # A killed node's runs are taken over within the lease and a margin.
    by_attempt = {(a.job_id, a.attempt): a for a in attempts}
    for a in attempts:
        if a.node in kills and a.status == "lost":
            nxt = by_attempt.get((a.job_id, a.attempt + 1))
            if nxt is None:
                problems.append(f"run {a.job_id}: attempt {a.attempt} lost with {a.node}, "
                                "never taken over")  # fmt: skip
            elif nxt.started_at - kills[a.node] > TAKEOVER:
                late = (nxt.started_at - kills[a.node]).total_seconds()
                problems.append(f"run {a.job_id}: taken over {late:.1f} s after {a.node} "
                                f"was killed (at most {TAKEOVER.total_seconds():g})")  # fmt: skip

    # A lease expires only when its node really was away: killed, frozen or cut off.
    for a in attempts:
        if a.status != "lost":
            continue
        begin, end = a.started_at - timedelta(seconds=1), a.completed_at
        explained = (
            (a.node in kills and kills[a.node] >= begin)
            or any(f.node == a.node and f.start <= end and f.end >= begin for f in stops)
            or any(f.start <= end and f.end >= begin for f in outages)
        )
        if not explained:
            problems.append(f"run {a.job_id}: attempt {a.attempt} on {a.node} (started "
                            f"{a.started_at.time()}) lost its lease at {end.time()} with its "
                            "node neither killed, frozen nor cut off")  # fmt: skip

    # No two executions of a run ever held the lease at once, and one that was superseded
    # stopped soon after (a frozen one: soon after it was thawed).
    per_run: dict[int, list[Any]] = defaultdict(list)
    for e in executions:
        per_run[e.run_id].append(e)
    killed_nodes = set(kills)
    for run_id, execs in per_run.items():
        for i, e1 in enumerate(execs):
            if e1.ended_at is None and e1.node not in killed_nodes:
                problems.append(f"run {run_id}: execution {e1.attempt} on {e1.node} never ended")
            for e2 in execs[i + 1 :]:
                if e1.started_at < e2.held_until and e2.started_at < e1.held_until:
                    problems.append(f"run {run_id}: attempts {e1.attempt} ({e1.node}) and "
                                    f"{e2.attempt} ({e2.node}) held the lease at once")  # fmt: skip
            if e1.ended_at is None or e1.outcome == "hung" or i + 1 == len(execs):
                continue  # killed, deaf by design, or the last
            e2 = execs[i + 1]
            told = max([e2.started_at] + [f.end for f in stops if f.node == e1.node
                                         and f.start < e1.ended_at and f.end > e1.started_at])  # fmt: skip
            if e1.ended_at > told + STOP_GRACE:
                over = (e1.ended_at - e2.started_at).total_seconds()
                problems.append(f"run {run_id} ({e1.job}): attempt {e1.attempt} on {e1.node} "
                                f"ran on {over:.1f} s after attempt {e2.attempt} started on "
                                f"{e2.node} (ended {e1.outcome})")  # fmt: skip
    return problems
