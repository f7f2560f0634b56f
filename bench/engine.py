"""Engine throughput and lateness on SQLite and PostgreSQL.

Run: ``.venv/bin/python bench/engine.py [--runs 50000] [--repeats 3] [--rss-runs 200000]``

Figures (medians of the repeats, printed, not asserted):

* enqueue/s — manual triggers, one transaction each (the API's create path);
* fire/s    — schedule fires turned into runs by the scheduler's batched transaction;
* run/s, 1 process — ``duly.noop`` runs claimed, executed and completed by one node in
  this process, from ``--runs`` queued (claim batch, job in a thread, batched fenced
  completion with the attempt row);
* run/s, 3 processes — the same drained by three ``duly worker`` processes (on SQLite,
  from a tenth of ``--runs``: one writer for all processes is not a way to scale), from
  the first run's start to the last one's finish (not the processes' start-up);
* lateness p50/p99/max — fire-to-start for 1,000 runs due evenly over 30 s on an
  otherwise idle node (the worker sleeps until the next due run);
* RSS — the worker's resident memory before and after ``--rss-runs`` runs, in rounds.

``--only xenq,xbatch,xwake,xnow,xrun1,xrun3`` measures the engine as separate processes see
it, with duly's default settings (see ``bench/crossproc.py``): enqueue one by one and in one
batch from a client process, wake-up lateness in a ``duly worker`` from the due time to
the job's first line, and drains by one and by three ``duly worker`` processes.

``--only audit`` measures what the audit trail costs: the 1-process drain (and, with
``audit3``, the 3-process drain on PostgreSQL) with every run state change recorded
(``store.audit = duly.audit.record``, the node's sealer running) and with nothing recorded
(``store.audit = None``), on and off interleaved in each repeat; it prints the medians and
their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import benchdb
import crossproc
from sqlalchemy import text

import duly
from duly.audit import AuditLog, record
from duly.audit.sealer import AuditSealer
from duly.clock import SystemClock
from duly.config import AuditSettings
from duly.db import upgrade
from duly.engine.builtin import builtin_registry
from duly.engine.client import EngineClient
from duly.engine.node import Node
from duly.engine.options import EngineOptions
from duly.engine.planning import PlannedRun
from duly.engine.states import RunStatus
from duly.engine.store.base import FireDecision, NewSchedule, RunFilter
from duly.engine.store.sql import SqlStore, create_db_engine
from duly.logs import configure_logging

CLOCK = SystemClock()
SRC = Path(duly.__file__).resolve().parents[1]




class Database:
    """A fresh database per measurement."""

    def __init__(self, kind: str, pg_url: str) -> None:
        self.kind, self.pg_url = kind, pg_url
        self.tmp = tempfile.TemporaryDirectory()
        self.name = ""
        self.url = ""

    def create(self) -> SqlStore:
        if self.kind == "sqlite":
            url = f"sqlite:///{Path(self.tmp.name) / f'{uuid.uuid4().hex}.db'}"
        else:
            self.name = f"duly_bench_{uuid.uuid4().hex[:8]}"
            url = benchdb.fresh_database(self.pg_url, self.name, migrate=False)
        self.url = url
        engine = create_db_engine(url, pool_size=20)
        upgrade(engine)
        return SqlStore(engine)

    def drop(self, store: SqlStore) -> None:
        store.dispose()
        if self.kind == "postgres":
            benchdb.drop_database(self.pg_url, self.name)


def bench_enqueue(store: SqlStore, n: int) -> float:
    client = EngineClient(store, builtin_registry, SystemClock())
    start = time.perf_counter()
    for i in range(n):
        client.trigger("duly.noop", idempotency_key=f"bench-{i}")
    return n / (time.perf_counter() - start)


def bench_fire(store: SqlStore, n: int) -> float:
    now = datetime.now(UTC)
    for i in range(200):
        store.schedule_upsert(NewSchedule(name=f"b{i}", job_name="duly.noop", spec="every:1s",
                                          overlap="allow"), now, lambda s: now)
    per = n // 200
    fires = [now + timedelta(seconds=k) for k in range(per)]

    def plan(sched, active):  # stands in for the trigger: `per` fires due at once
        return FireDecision(runs=[PlannedRun(f, RunStatus.QUEUED) for f in fires],
                            next_fire_at=fires[-1] + timedelta(seconds=1))

    start = time.perf_counter()
    total = 0
    while fired := store.schedule_fire_due(fires[-1], 50, plan):
        total += sum(len(f.created_run_ids) for f in fired)
    return total / (time.perf_counter() - start)


def queue_noops(store: SqlStore, n: int, at: datetime) -> None:
    """``n`` no-op runs due at ``at``, created fast through the scheduler's batch path."""
    schedules = 100
    batch = uuid.uuid4().hex[:6]  # new schedules each call: an existing one is not due again
    for i in range(schedules):
        store.schedule_upsert(NewSchedule(name=f"q{batch}-{i}", job_name="duly.noop",
                                          spec="every:1s", overlap="allow"), at, lambda s: at)
    per = -(-n // schedules)
    fires = [at - timedelta(microseconds=k) for k in range(per)]
    made = 0

    def plan(sched, active):
        nonlocal made
        take = min(per, n - made)
        made += take
        return FireDecision(runs=[PlannedRun(f, RunStatus.QUEUED) for f in fires[:take]],
                            next_fire_at=at + timedelta(days=365))

    while store.schedule_fire_due(at, 50, plan):
        pass


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def drain_in_process(store: SqlStore, n: int) -> float:
    """Runs per second for one node in this process draining ``n`` queued runs."""
    queue_noops(store, n, CLOCK.now())
    opts = EngineOptions(node_name="bench", concurrency=32, claim_batch=64, max_idle_seconds=0.5)
    node = Node(store, builtin_registry, CLOCK, opts, roles=("worker",))
    start = time.perf_counter()
    await node.start()
    assert node.worker is not None
    while node.worker.completed < n:  # noqa: ASYNC110 - polling a counter is the measurement
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - start
    await node.stop()
    return n / elapsed


async def drain_audited(store: SqlStore, n: int, audited: bool) -> float:
    """:func:`drain_in_process` with the audit trail on (recorder and sealer) or off."""
    store.audit = record if audited else None
    queue_noops(store, n, CLOCK.now())
    extra = []
    with tempfile.TemporaryDirectory() as keys:
        log = AuditLog(store.engine, CLOCK, AuditSettings(signing_key_file=Path(keys) / "k.pem"))
        if audited:
            log.signing_key()
            extra = [lambda env: AuditSealer(env, log)]
        opts = EngineOptions(node_name="bench", concurrency=32, claim_batch=64,
                             max_idle_seconds=0.5)
        node = Node(store, builtin_registry, CLOCK, opts, roles=("worker",),
                    extra_services=extra)  # fmt: skip
        start = time.perf_counter()
        await node.start()
        assert node.worker is not None
        while node.worker.completed < n:  # noqa: ASYNC110 - polling a counter is the measurement
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - start
        await node.stop()
        if audited:  # every change recorded: n fires (before the clock), n claims, n outcomes
            log.seal()
            changes = count_run_changes(store)
            assert changes >= 3 * n, f"{changes} run changes recorded for {n} runs"
    return n / elapsed


def count_run_changes(store: SqlStore) -> int:
    """The run changes the trail records: one per run's own event, ``count`` per batch event."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT object_id, details FROM audit_events WHERE object_type = 'run'")
        ).all()
    return sum(1 if object_id is not None else json.loads(details)["count"]
               for object_id, details in rows)  # fmt: skip


def count_rows(store: SqlStore, table: str) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def count_succeeded(store: SqlStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM runs WHERE status = 'succeeded'"))
                   .scalar_one())


def first_start_to_last_finish(store: SqlStore) -> float:
    """Seconds from the first run's start to the last run's finish (the processes' own
    start-up, a second or two of imports, is not the engine's throughput)."""
    with store.engine.connect() as conn:
        first, last = conn.execute(text(
            "SELECT min(started_at), max(finished_at) FROM runs WHERE status = 'succeeded'"
        )).one()  # fmt: skip

    def instant(value: datetime | str) -> datetime:
        at = datetime.fromisoformat(value) if isinstance(value, str) else value
        return at.replace(tzinfo=UTC) if at.tzinfo is None else at

    return (instant(last) - instant(first)).total_seconds()


#: The settings of the in-process drains, also given to ``duly worker`` by ``run3``.
TUNED = {"DULY_ENGINE__WORKER_CONCURRENCY": "32", "DULY_ENGINE__CLAIM_BATCH": "64",
         "DULY_ENGINE__MAX_IDLE_SECONDS": "0.2"}  # fmt: skip


def drain_processes(
    store: SqlStore, url: str, n: int, processes: int, audited: bool = True,
    tuned: bool = True,
) -> float:
    """Runs per second for ``processes`` ``duly worker`` processes draining ``n`` queued runs,
    from the first run's start to the last one's finish (``audited``: run events recorded;
    ``tuned``: the settings of :data:`TUNED`, else duly's defaults)."""
    store.audit = record if audited else None
    queue_noops(store, n, CLOCK.now())
    settings = {**(TUNED if tuned else {}),
                "DULY_AUDIT__RUN_EVENTS": "true" if audited else "false"}  # fmt: skip
    with crossproc.workers(url, processes, settings):
        crossproc.wait_for(store, "SELECT count(*) FROM runs WHERE status = 'succeeded'", n)
    return n / first_start_to_last_finish(store)


async def lateness(store: SqlStore, n: int = 1000, over: float = 30.0) -> tuple[float, float, float]:
    """Fire-to-start lateness (ms) of ``n`` runs due evenly over ``over`` seconds."""
    client = EngineClient(store, builtin_registry, CLOCK)
    opts = EngineOptions(node_name="bench", concurrency=32, claim_batch=64, max_idle_seconds=5)
    node = Node(store, builtin_registry, CLOCK, opts, roles=("worker",))
    await node.start()
    first = CLOCK.now() + timedelta(seconds=2)
    for i in range(n):
        client.trigger("duly.noop", idempotency_key=f"late-{i}",
                       scheduled_for=first + timedelta(seconds=over * i / n))
    assert node.worker is not None
    while node.worker.completed < n:  # noqa: ASYNC110 - polling a counter is the measurement
        await asyncio.sleep(0.05)
    await node.stop()
    runs = store.run_list(RunFilter(limit=n + 10))
    lags = sorted((r.started_at - r.scheduled_for).total_seconds() * 1000
                  for r in runs if r.started_at)
    return lags[len(lags) // 2], lags[int(len(lags) * 0.99)], lags[-1]


async def memory(store: SqlStore, total: int, rounds: int = 10) -> list[float]:
    """RSS (MiB) after each round of ``total / rounds`` runs through one node."""
    opts = EngineOptions(node_name="bench", concurrency=32, claim_batch=64, max_idle_seconds=0.5)
    node = Node(store, builtin_registry, CLOCK, opts, roles=("worker",))
    await node.start()
    assert node.worker is not None
    out = [rss_mib()]
    per = total // rounds
    for r in range(rounds):
        await asyncio.to_thread(queue_noops, store, per, CLOCK.now())
        while node.worker.completed < per * (r + 1):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        out.append(rss_mib())
    await node.stop()
    return out


def measure(db: Database, fn, *args):  # type: ignore[no-untyped-def]
    store = db.create()
    try:
        result = fn(store, *args)
        return asyncio.run(result) if asyncio.iscoroutine(result) else result
    finally:
        db.drop(store)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50_000)
    parser.add_argument("--enqueue", type=int, default=5_000)
    parser.add_argument("--batch", type=int, default=50_000,
                        help="runs per trigger_many() call (xbatch)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rss-runs", type=int, default=200_000)
    parser.add_argument("--pg", default=os.environ.get(
        "DULY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--only", default="enq,fire,run1,run3,lat",
                        help="measurements to take (comma-separated): enq, fire, run1, run3, lat; "
                             "audit (audit on/off, 1 process), audit3 (and 3 processes, "
                             "PostgreSQL); xenq, xbatch, xwake, xnow, xrun1, xrun3 (separate "
                             "processes, default settings); RSS is taken when --rss-runs is "
                             "not 0")
    args = parser.parse_args()
    only = set(args.only.split(","))
    configure_logging("warning", "json")
    print(f"machine: {benchdb.machine()}")
    if only & {"audit", "audit3"}:
        audit_cost(args, "audit3" in only)
        return
    if only & set(CROSS):
        cross_process(args, only & set(CROSS))
        return
    print(f"queued runs per drain: {args.runs:,}; enqueue/fire: {args.enqueue:,}; "
          f"medians of {args.repeats}\n")
    print("| store | enqueue/s | fire/s | run/s, 1 process | run/s, 3 processes | "
          "lateness p50 / p99 / max | RSS before → after |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind in args.stores.split(","):
        print(f"{kind}: load average {os.getloadavg()[0]:.2f} at start", file=sys.stderr)
        db = Database(kind, args.pg)
        res: dict[str, list[float]] = {k: [0.0] for k in ("enq", "fire", "run1", "run3")}
        for k in only & set(res):
            res[k] = []
        lat: list[tuple[float, float, float]] = []
        for _ in range(args.repeats):
            if "enq" in only:
                res["enq"].append(measure(db, bench_enqueue, args.enqueue))
            if "fire" in only:
                res["fire"].append(measure(db, bench_fire, args.enqueue))
            if "run1" in only:
                res["run1"].append(measure(db, drain_in_process, args.runs))
            if "run3" in only:
                # SQLite has one writer for all processes: several processes on one file
                # are correct but not a way to scale, so they are measured on fewer runs.
                n3 = args.runs if kind == "postgres" else max(args.runs // 10, 1000)
                store = db.create()
                try:
                    res["run3"].append(drain_processes(store, db.url, n3, 3))
                finally:
                    db.drop(store)
            if "lat" in only:
                lat.append(measure(db, lateness))
        rss = measure(db, memory, args.rss_runs) if args.rss_runs else [0.0, 0.0]
        print(f"{kind} raw: {res} lateness {lat}; load average {os.getloadavg()}", file=sys.stderr)
        med = {k: statistics.median(v) for k, v in res.items()}
        p50, p99, worst = (statistics.median(x[i] for x in lat or [(0.0, 0.0, 0.0)])
                           for i in range(3))
        print(f"| {kind} | {med['enq']:,.0f} | {med['fire']:,.0f} | {med['run1']:,.0f} | "
              f"{med['run3']:,.0f} | {p50:.1f} / {p99:.1f} / {worst:.1f} ms | "
              f"{rss[0]:.0f} → {rss[-1]:.0f} MiB (after each round: "
              f"{', '.join(f'{x:.0f}' for x in rss[1:])}) |")
        sys.stdout.flush()


#: The cross-process measurements: separate client and ``duly worker`` processes, defaults.
CROSS = {
    "xenq": "enqueue/s, one by one",
    "xbatch": "enqueue/s, one batch",
    "xwake": "wake-up, due 250 ms after enqueue: p50 / p99 / max",
    "xnow": "wake-up, due at enqueue: p50 / p99 / max",
    "xrun1": "run/s, 1 worker process",
    "xrun3": "run/s, 3 worker processes",
}


def cross_process(args: argparse.Namespace, only: set[str]) -> None:
    """The figures of :data:`CROSS`, per store: medians of the repeats (see bench/crossproc.py)."""
    print(f"separate processes, duly's default settings; enqueue: {args.enqueue:,} runs "
          f"(batch: {args.batch:,}); drains: {args.runs:,} queued no-op runs; wake-up: "
          f"200 runs over 20 s; medians of {args.repeats}\n")
    wanted = [k for k in CROSS if k in only]
    print("| store | " + " | ".join(CROSS[k] for k in wanted) + " |")
    print("|---|" + "---:|" * len(wanted))
    for kind in args.stores.split(","):
        load = os.getloadavg()[0]
        db = Database(kind, args.pg)
        res: dict[str, list] = defaultdict(list)  # type: ignore[type-arg]
        for _ in range(args.repeats):
            for key in wanted:
                store = db.create()
                try:
                    res[key].append(_cross_one(key, store, db.url, args))
                finally:
                    db.drop(store)
        print(f"{kind} raw: {dict(res)}; load average {load:.2f} at start, "
              f"{os.getloadavg()[0]:.2f} at end", file=sys.stderr)
        cells = []
        for key in wanted:
            if key in ("xwake", "xnow"):
                p50, p99, worst = (statistics.median(x[i] for x in res[key]) for i in range(3))
                cells.append(f"{p50:.1f} / {p99:.1f} / {worst:.1f} ms")
            else:
                cells.append(f"{statistics.median(res[key]):,.0f}")
        print(f"| {kind} | " + " | ".join(cells) + " |")
        sys.stdout.flush()


def _cross_one(key: str, store: SqlStore, url: str, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    if key == "xenq":
        return crossproc.enqueue_rate(url, args.enqueue, batch=False)
    if key == "xbatch":
        return crossproc.enqueue_rate(url, args.batch, batch=True)
    if key in ("xwake", "xnow"):
        return crossproc.wake_lateness(store, url, lead=0.25 if key == "xwake" else 0.0)
    processes = 1 if key == "xrun1" else 3
    n = args.runs if processes == 1 or store.is_postgres else max(args.runs // 10, 1000)
    return drain_processes(store, url, n, processes, tuned=False)


def audit_cost(args: argparse.Namespace, processes: bool) -> None:
    """The drains with the audit trail on and off, interleaved, per store: medians and ratio."""
    print(f"queued runs per drain: {args.runs:,}; on/off interleaved, medians of "
          f"{args.repeats}\n")
    print("| store | drain | runs/s, audit off | runs/s, audit on | on / off |")
    print("|---|---|---:|---:|---:|")
    for kind in args.stores.split(","):
        db = Database(kind, args.pg)
        res: dict[tuple[str, bool], list[float]] = defaultdict(list)
        for r in range(args.repeats):
            for audited in (r % 2 == 0, r % 2 != 0):  # alternate which goes first
                res["1 process", audited].append(measure(db, drain_audited, args.runs, audited))
                if processes and kind == "postgres":
                    store = db.create()
                    try:
                        res["3 processes", audited].append(
                            drain_processes(store, db.url, args.runs, 3, audited))
                    finally:
                        db.drop(store)
        print(f"{kind} raw: {dict(res)}; load average {os.getloadavg()}", file=sys.stderr)
        for drain in dict.fromkeys(k for k, _ in res):
            off, on = (statistics.median(res[drain, a]) for a in (False, True))
            print(f"| {kind} | {drain} | {off:,.0f} | {on:,.0f} | {on / off:.2f} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
