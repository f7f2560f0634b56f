"""HTTP API latency under open-loop load, and the highest rate of transfer creations it sustains.

Run: ``.venv/bin/python bench/api.py [--runs 1000000] [--transfers 100000] [--rate 300]
[--seconds 60] [--steps 50,100,200,400,800,1200,1600] [--step-seconds 10] [--clients 2]
[--pg URL] [--keep]``

On PostgreSQL, in a database of its own (``duly_bench_api``, made afresh; dropped at the
end unless ``--keep``):

1. Seeds ``--runs`` finished runs of the registered jobs (one ``INSERT … SELECT`` from
   ``generate_series`` per 200,000), 1,000 funded debit and 1,000 credit accounts,
   ``--transfers`` transfers due in 60 days (``ScheduledTransfers.create_many``, so each has
   its run and event, as through the API) and 50,000 error-log entries; then ``ANALYZE``.
2. Starts ``duly serve --port 0`` (scheduler, worker and API in one process, rate limit
   raised through ``DULY_API__RATE_LIMIT_*``) and waits until ``/health/ready`` is 200.
3. Phase 1, the mix: ``--rate`` requests/s for ``--seconds`` — create a transfer with an
   ``Idempotency-Key`` (20 %), read a transfer (30 %), list runs of one job in one status
   (20 %), trigger ``duly.noop`` (10 %), list errors (20 %). Routes this build lacks (their
   router still a placeholder: not in ``/openapi.json``) are left out and named.
4. Phase 2: transfer creations only, at each of ``--steps`` for ``--step-seconds``, until
   the p95 reaches 100 ms or more than 1 % fail; the last step under both is the figure.

The load is open-loop: request *i* is due at ``start + i / rate`` and is sent then, whether
or not earlier ones have answered, and its latency runs from that instant (a slow answer
delays no later request, so it cannot hide). ``--clients`` processes share the schedule,
each with an ``httpx.AsyncClient`` pool; how late the generator itself sent (send instant
− due instant) is printed beside each phase, so a generator that cannot keep up shows.
Each phase is preceded by 3 s at its rate, not counted (connections, caches). Figures are
printed, not asserted, with the machine, PostgreSQL's version, the load average and the
server process's CPU use over the phase.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import multiprocessing
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import benchdb
import httpx
from sqlalchemy import text

import duly
from duly.auth.roles import Role
from duly.auth.service import TokenService
from duly.banking.customers import Customers, NewAccount, NewCustomer
from duly.banking.ledger import LedgerBank
from duly.clock import SystemClock
from duly.config import Settings
from duly.engine.client import EngineClient
from duly.engine.store.sql import SqlStore, create_db_engine
from duly.logs import configure_logging
from duly.operations import NewTransfer, ScheduledTransfers, operations_registry
from duly.runtime import job_registry
from duly.version import __version__

CLOCK = SystemClock()
DATABASE = "duly_bench_api"
ACCOUNTS = 1000
SEED_CHUNK = 200_000
ERRORS = 50_000
WARMUP_SECONDS = 3.0
P95_LIMIT = 0.100
POOLS = 32  # client connection pools per generator process
STARTUP = re.compile(r"API on (http://127\.0\.0\.1:\d+)")

#: (name, weight, method, path template in the OpenAPI document)
MIX = [
    ("create transfer", 20, "POST", "/api/v1/transfers"),
    ("get transfer", 30, "GET", "/api/v1/transfers/{transfer_id}"),
    ("list runs (job, status)", 20, "GET", "/api/v1/runs"),
    ("trigger duly.noop", 10, "POST", "/api/v1/jobs/{name}/runs"),
    ("list errors", 20, "GET", "/api/v1/errors"),
]


@dataclass
class Seeded:
    jobs: list[str]
    transfer_ids: tuple[int, int]
    local_date: date
    seconds: float


def seed(url: str, n_runs: int, n_transfers: int) -> Seeded:
    started = time.perf_counter()
    store = SqlStore(url)
    jobs = sorted(j.name for j in job_registry(Settings(database_url=url)))
    # Finished runs only: a queued one would be claimed by the node under test.
    runs_sql = text("""
        INSERT INTO runs (job_name, scheduled_for, idempotency_key, origin, args, status, queue,
                          attempt, max_attempts, not_before, started_at, finished_at, result,
                          error_code, error_message, created_at, updated_at)
        SELECT (CAST(:jobs AS text[]))[1 + g % cardinality(CAST(:jobs AS text[]))], t, 'seed-' || g, 'schedule', '{}'::json,
               s, 'default', 1, 1, t, t, t + interval '20 ms',
               CASE WHEN s = 'succeeded' THEN '{"ok": true}'::json END,
               CASE WHEN s = 'failed' THEN 'TIMEOUT' END,
               CASE WHEN s = 'failed' THEN 'the bank did not answer in 30 s' END, t, t
        FROM (SELECT g, now() - make_interval(secs => (CAST(:n AS bigint) - g) * 5.0) AS t,
                     CASE WHEN g % 100 < 90 THEN 'succeeded'
                          WHEN g % 100 < 97 THEN 'failed' ELSE 'cancelled' END AS s
              FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS g) AS x
    """)
    with store.engine.begin() as conn:
        for lo in range(1, n_runs + 1, SEED_CHUNK):
            hi = min(n_runs, lo + SEED_CHUNK - 1)
            conn.execute(runs_sql, {"jobs": jobs, "n": n_runs, "lo": lo, "hi": hi})
    print(f"  {n_runs:,} runs of {len(jobs)} jobs in {time.perf_counter() - started:.1f} s",
          flush=True)  # fmt: skip

    mark = time.perf_counter()
    people = Customers(store.engine, CLOCK)
    owner = people.add(NewCustomer("bench-api"))
    ledger = LedgerBank(store.engine, CLOCK)
    for i in range(ACCOUNTS):
        people.open_account(NewAccount(f"DEBIT-{i:04d}", "EUR", owner.id))
        people.open_account(NewAccount(f"CREDIT-{i:04d}", "EUR", None))
        ledger.fund(f"DEBIT-{i:04d}", 10**12, "EUR", f"fund-{i}")
    when = CLOCK.now().date() + timedelta(days=60)
    transfers = ScheduledTransfers(EngineClient(store, operations_registry, CLOCK))
    ids: list[int] = []
    for lo in range(0, n_transfers, 5000):
        made = transfers.create_many([
            NewTransfer(request_key=f"seed-{i}", from_account=f"DEBIT-{i % ACCOUNTS:04d}",
                        to_account=f"CREDIT-{7 * i % ACCOUNTS:04d}", amount=f"{1 + i % 90}.{i % 100:02d}",
                        currency="EUR", local_date=when, local_time="09:00", timezone="UTC")
            for i in range(lo, min(n_transfers, lo + 5000))
        ])  # fmt: skip
        ids += [transfer_id for transfer_id, _ in made]
    print(f"  {ACCOUNTS * 2:,} accounts and {n_transfers:,} transfers (each with its run) in "
          f"{time.perf_counter() - mark:.1f} s", flush=True)  # fmt: skip

    mark = time.perf_counter()
    with store.engine.begin() as conn:
        codes = list(conn.execute(text("SELECT code FROM error_codes ORDER BY code")).scalars())
        conn.execute(text("""
            INSERT INTO error_logs (run_id, job_name, error_code, message, retry_count, logged_at,
                                    resolved)
            SELECT g, 'daily_balance_check',
                   (CAST(:codes AS text[]))[1 + g % cardinality(CAST(:codes AS text[]))],
                   'balance read failed', g % 4, now() - make_interval(secs => (CAST(:n AS bigint) - g) * 60.0),
                   g % 3 = 0
            FROM generate_series(1, CAST(:n AS bigint)) AS g
        """), {"codes": codes, "n": ERRORS})  # fmt: skip
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    print(f"  {ERRORS:,} error-log entries and ANALYZE in {time.perf_counter() - mark:.1f} s",
          flush=True)  # fmt: skip
    store.dispose()
    return Seeded(jobs, (min(ids), max(ids)) if ids else (1, 1), when,
                  time.perf_counter() - started)


# -- the server ------------------------------------------------------------------------


class Server:
    """``duly serve`` on the bench database, in a process of its own."""

    def __init__(self, url: str) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.log = Path(self.tmp.name) / "serve.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DULY_")}
        # The server runs in a temporary directory: a relative PYTHONPATH (``PYTHONPATH=src``)
        # would find nothing there and the server would import whichever duly is installed.
        if env.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.pathsep.join(
                str(Path(p).resolve()) for p in env["PYTHONPATH"].split(os.pathsep) if p
            )
        env.update(DULY_DATABASE_URL=url, DULY_LOGGING__LEVEL="warning",
                   DULY_API__RATE_LIMIT_PER_SECOND="1000000", DULY_API__RATE_LIMIT_BURST="1000000",
                   DULY_NODE_NAME="bench-api")  # fmt: skip
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "duly", "serve", "--port", "0"],
                                         env=env, cwd=self.tmp.name, stdout=out,
                                         stderr=subprocess.STDOUT)  # fmt: skip
        self.url = self._wait_ready()

    def _wait_ready(self) -> str:
        deadline = time.monotonic() + 120
        url = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"duly serve exited:\n{self.log.read_text()}")
            found = STARTUP.search(self.log.read_text(errors="replace"))
            if found:
                url = found.group(1)
                try:
                    if httpx.get(f"{url}/health/ready", timeout=5).status_code == 200:
                        return url
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"duly serve not ready in 120 s:\n{self.log.read_text()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self.tmp.cleanup()


# -- the load --------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What every client process needs to send its share of one phase."""

    url: str
    tokens: list[str]
    routes: list[tuple[str, int]]  # (name, weight) of the routes sent
    rate: float
    seconds: float
    start_at: float  # time.monotonic() of request 0 (CLOCK_MONOTONIC is machine-wide)
    tag: str  # makes this phase's Idempotency-Keys its own
    jobs: list[str]
    transfer_ids: tuple[int, int]
    local_date: str
    connections: int


#: (route name, status (0: no answer), latency from the due instant, send lateness)
Record = tuple[str, int, float, float]


def _request(plan: Plan, name: str, i: int, rng: random.Random) -> tuple[str, str, dict[str, Any]]:
    token = plan.tokens[i % len(plan.tokens)]
    headers = {"Authorization": f"Bearer {token}"}
    if name == "create transfer":
        body = {"from_account": f"DEBIT-{i % ACCOUNTS:04d}",
                "to_account": f"CREDIT-{7 * i % ACCOUNTS:04d}", "amount": f"{1 + i % 90}.50",
                "currency": "EUR", "local_date": plan.local_date, "local_time": "09:00",
                "timezone": "UTC"}  # fmt: skip
        headers["Idempotency-Key"] = f"bench-{plan.tag}-{i}"
        return "POST", "/api/v1/transfers", {"json": body, "headers": headers}
    if name == "get transfer":
        return "GET", f"/api/v1/transfers/{rng.randint(*plan.transfer_ids)}", {"headers": headers}
    if name == "list runs (job, status)":
        params = {"job": rng.choice(plan.jobs), "status": rng.choice(["succeeded", "failed"]),
                  "limit": 50}  # fmt: skip
        return "GET", "/api/v1/runs", {"params": params, "headers": headers}
    if name == "trigger duly.noop":
        return "POST", "/api/v1/jobs/duly.noop/runs", {"json": {"args": {}}, "headers": headers}
    return "GET", "/api/v1/errors", {"params": {"limit": 50}, "headers": headers}


async def _send_share(plan: Plan, index: int, count: int) -> list[Record]:
    rng = random.Random(f"{plan.tag}-{index}")
    names = [n for n, _ in plan.routes]
    weights = [w for _, w in plan.routes]
    # Several small pools, not one of ``connections``: httpcore matches every queued request
    # against every connection on each event, so one pool with a backlog of thousands spends
    # the generator's CPU on that (quadratic) and the server sits idle while latency grows.
    pools = max(1, min(plan.connections, POOLS))
    each = -(-plan.connections // pools)
    limits = httpx.Limits(max_connections=each, max_keepalive_connections=each)
    records: list[Record] = []
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(
                       httpx.AsyncClient(base_url=plan.url, limits=limits, timeout=60))
                   for _ in range(pools)]  # fmt: skip
        turn = itertools.count()

        async def one(name: str, method: str, path: str, kwargs: dict[str, Any], due: float) -> None:
            sent = time.monotonic()
            http = clients[next(turn) % pools]
            try:
                status = (await http.request(method, path, **kwargs)).status_code
            except httpx.HTTPError:
                status = 0
            records.append((name, status, time.monotonic() - due, sent - due))

        tasks = []
        for i in range(index, int(plan.rate * plan.seconds), count):
            due = plan.start_at + i / plan.rate
            pause = due - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            name = rng.choices(names, weights)[0]
            tasks.append(asyncio.create_task(one(name, *_request(plan, name, i, rng), due)))
        await asyncio.gather(*tasks)
    return records


def _client_process(args: tuple[Plan, int, int]) -> list[Record]:
    plan, index, count = args
    return asyncio.run(_send_share(plan, index, count))


def run_load(pool: Any, plan: Plan, clients: int) -> list[Record]:
    return [r for share in pool.map(_client_process, [(plan, k, clients) for k in range(clients)])
            for r in share]  # fmt: skip


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def report(records: list[Record], seconds: float, cpu: float) -> None:
    by_route: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_route[r[0]].append(r)
    print(f"  {'route':<26}{'requests':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}"
          "  statuses")  # fmt: skip
    for name, rows in [*sorted(by_route.items()), ("all", records)]:
        lat = [r[2] for r in rows]
        statuses = Counter(r[1] for r in rows)
        shown = ", ".join(f"{s or 'no answer'}: {n:,}" for s, n in sorted(statuses.items()))
        print(f"  {name:<26}{len(rows):>9,}{ms(pct(lat, .5)):>9}{ms(pct(lat, .95)):>9}"
              f"{ms(pct(lat, .99)):>9}{ms(max(lat)):>9}  {shown}")  # fmt: skip
    lag = [r[3] for r in records]
    errors = sum(1 for r in records if r[1] == 0 or r[1] >= 400)
    print(f"  sent {len(records) / seconds:,.0f}/s; errors (4xx, 5xx, no answer) {errors:,}; "
          f"generator lateness p50 {ms(pct(lag, .5))} / p99 {ms(pct(lag, .99))} / max "
          f"{ms(max(lag))} ms; server CPU {cpu / seconds:.2f} cores; load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip


def phase(pool: Any, server: Server, plan: Plan, clients: int) -> tuple[list[Record], float]:
    """Warm up, then the measured phase: its records and the server's CPU seconds."""
    warm = replace(plan, seconds=WARMUP_SECONDS, tag=f"{plan.tag}-warm",
                   start_at=time.monotonic() + 0.5)
    run_load(pool, warm, clients)
    cpu = server.cpu_seconds()
    measured = replace(plan, start_at=time.monotonic() + 0.5)
    records = run_load(pool, measured, clients)
    return records, server.cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--transfers", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=300.0, help="phase 1 requests/s")
    parser.add_argument("--seconds", type=float, default=60.0, help="phase 1 length")
    parser.add_argument("--steps", default="50,100,200,400,800,1200,1600",
                        help="phase 2 transfer creations/s")  # fmt: skip
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=2, help="load generator processes")
    parser.add_argument("--connections", type=int, default=128, help="per client process")
    parser.add_argument("--tokens", type=int, default=4, help="operator tokens, round robin")
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    parser.add_argument("--pg", default=os.environ.get(
        "DULY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    configure_logging("warning", "console")
    print(f"API benchmark · {benchdb.machine(args.pg)}")
    print(f"duly {__version__} from {Path(duly.__file__).parent}; load average at the start "
          f"{os.getloadavg()[0]:.1f}")  # fmt: skip
    url = benchdb.fresh_database(args.pg, DATABASE)
    print(f"seeding {DATABASE}:", flush=True)
    seeded = seed(url, args.runs, args.transfers)
    server: Server | None = None
    try:
        server = Server(url)
        engine = create_db_engine(url)
        service = TokenService(engine, CLOCK)
        tokens = [service.create(f"bench-{k}", Role.OPERATOR, created_by="bench").text
                  for k in range(args.tokens)]  # fmt: skip
        engine.dispose()
        paths = httpx.get(f"{server.url}/openapi.json", timeout=10).json()["paths"]
        present = [(n, w) for n, w, method, path in MIX if method.lower() in paths.get(path, {})]
        missing = [n for n, _, method, path in MIX if method.lower() not in paths.get(path, {})]
        print(f"serving at {server.url}; routes of the mix absent from this build: "
              f"{', '.join(missing) or 'none'}", flush=True)  # fmt: skip
        base = Plan(url=server.url, tokens=tokens, routes=present, rate=args.rate,
                    seconds=args.seconds, start_at=0.0, tag="mix", jobs=seeded.jobs,
                    transfer_ids=seeded.transfer_ids, local_date=seeded.local_date.isoformat(),
                    connections=args.connections)  # fmt: skip
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(args.clients) as pool:
            print(f"\nphase 1 · the mix at {args.rate:g} requests/s for {args.seconds:g} s, "
                  f"{args.clients} client process(es):", flush=True)  # fmt: skip
            records, cpu = phase(pool, server, base, args.clients)
            report(records, args.seconds, cpu)

            if ("create transfer", 20) not in present:
                print("\nphase 2 skipped: POST /api/v1/transfers is not in this build")
                return
            print(f"\nphase 2 · transfer creations only, {args.step_seconds:g} s a step:")
            best = 0.0
            for step in [float(s) for s in args.steps.split(",") if s.strip()]:
                plan = replace(base, routes=[("create transfer", 1)], rate=step,
                               seconds=args.step_seconds, tag=f"step{step:g}")
                records, cpu = phase(pool, server, plan, args.clients)
                lat = [r[2] for r in records]
                failed = sum(1 for r in records if r[1] != 201)
                lag = [r[3] for r in records]
                ok = pct(lat, 0.95) < P95_LIMIT and failed <= 0.01 * len(records)
                print(f"  {step:>6g}/s: p50 {ms(pct(lat, .5))} · p95 {ms(pct(lat, .95))} · p99 "
                      f"{ms(pct(lat, .99))} ms; not 201: {failed:,} of {len(records):,}; generator "
                      f"lateness p99 {ms(pct(lag, .99))} ms; server CPU {cpu / args.step_seconds:.2f} "
                      f"cores; load average {os.getloadavg()[0]:.1f}"
                      f"{'' if ok else '  ← over the limit'}", flush=True)  # fmt: skip
                if not ok:
                    break
                best = step
            print(f"  highest step with p95 < {P95_LIMIT * 1000:.0f} ms and ≤ 1 % failed: "
                  f"{best:g} transfer creations/s")  # fmt: skip
    finally:
        if server is not None:
            code = server.stop()
            print(f"\nduly serve stopped by SIGTERM: exit code {code}")
        if not args.keep:
            benchdb.drop_database(args.pg, DATABASE)


if __name__ == "__main__":
    main()
