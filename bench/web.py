"""Server time of every dashboard page with 1,000,000 runs in PostgreSQL (target: ≤ 200 ms each).

Run: ``.venv/bin/python bench/web.py [--runs 1000000] [--repeat 20] [--pg URL] [--keep]``

In a database of its own (``duly_bench_web``, made afresh; dropped at the end unless
``--keep``) it seeds:

* ``--runs`` runs, one every 5 s up to now (about 58 days for a million; the last 24 hours
  hold ~17,000), 90 % succeeded, 7 % failed, 3 % cancelled; half of them belong to one of
  20 schedules (so "last outcome" reads a schedule with 25,000 runs), plus 200 queued;
* 30 nights of the balance check with their summaries, 20,000 error-log entries over
  14 days (a third resolved), 5,000 alerts (20 open), and the demo bank (customers,
  accounts, a scheduled transfer, a recurring payment); then ``ANALYZE``.

It then builds the app ``duly serve`` answers (the API with the dashboard at ``/ui``),
signs in with an admin token, and times each page through the ASGI app in this process
(httpx's ``ASGITransport``: the server's whole work — session check, queries, templates —
without the network): 3 warm-up requests, then ``--repeat`` timed ones, printing the median,
p95 and the slowest. Figures are printed, not asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import time
from collections.abc import Sequence

import benchdb
import httpx
from sqlalchemy import text

from duly.api.app import create_app
from duly.auth.roles import Role
from duly.auth.service import TokenService
from duly.clock import SystemClock
from duly.config import Settings
from duly.engine.client import EngineClient
from duly.engine.store.base import NewSchedule
from duly.engine.store.sql import SqlStore
from duly.operations import operations_registry
from duly.operations.demo import seed_demo_bank
from duly.runtime import job_registry
from duly.web import create_dashboard

DATABASE = "duly_bench_web"
CLOCK = SystemClock()
CHUNK = 200_000
TARGET_MS = 200.0


_RUNS = text("""
    INSERT INTO runs (job_name, schedule_id, scheduled_for, idempotency_key, origin, args, status,
                      queue, attempt, max_attempts, not_before, started_at, finished_at, result,
                      error_code, error_message, created_at, updated_at)
    SELECT (CAST(:jobs AS text[]))[1 + g % cardinality(CAST(:jobs AS text[]))],
           CASE WHEN g % 2 = 0 THEN (CAST(:schedules AS bigint[]))[1 + (g / 2) % cardinality(CAST(:schedules AS bigint[]))] END,
           t, 'seed-' || g, CASE WHEN g % 2 = 0 THEN 'schedule' ELSE 'manual' END, '{}'::json, s,
           'default', 1, 1, t, t + interval '150 ms', t + interval '400 ms',
           CASE WHEN s = 'succeeded' THEN '{"ok": true}'::json END,
           CASE WHEN s = 'failed' THEN 'TIMEOUT' END,
           CASE WHEN s = 'failed' THEN 'the bank did not answer in 30 s' END, t, t
    FROM (SELECT g, now() - make_interval(secs => (CAST(:n AS bigint) - g) * 5.0) AS t,
                 CASE WHEN g % 100 < 90 THEN 'succeeded' WHEN g % 100 < 97 THEN 'failed'
                      ELSE 'cancelled' END AS s
          FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS g) AS x
""")

_NIGHTS = text("""
    INSERT INTO runs (job_name, scheduled_for, idempotency_key, origin, args, status, queue,
                      attempt, max_attempts, not_before, started_at, finished_at, result,
                      created_at, updated_at)
    SELECT 'daily_balance_check', d + interval '22 hours', 'night-' || d::date, 'schedule',
           json_build_object('business_date', d::date::text), 'succeeded', 'default', 1, 3,
           d + interval '22 hours', d + interval '22 hours', d + interval '22 hours 40 minutes',
           json_build_object('business_date', d::date::text, 'customers', 20000,
                             'processed', 20000, 'passed', 19000, 'failed', 800, 'errors', 200,
                             'errors_by_code', json_build_object('TIMEOUT', 150, 'MISSING_DATA', 50),
                             'duration_seconds', 2400 + (extract(day from d)::int * 37) % 900),
           d, d
    FROM generate_series(current_date - 30, current_date - 1, interval '1 day') AS d
""")


def seed(url: str, n_runs: int) -> None:
    started = time.perf_counter()
    store = SqlStore(url)
    registry = job_registry(Settings(database_url=url))
    client = EngineClient(store, registry, CLOCK)
    schedules = [
        client.upsert_schedule(NewSchedule(name=f"bench.{i:02d}", job_name="duly.noop",
                                           spec=f"daily:{i % 24:02d}:{i % 60:02d}",
                                           timezone="Europe/London")).id
        for i in range(20)
    ]  # fmt: skip
    jobs = sorted(j.name for j in registry if j.name != "daily_balance_check")
    with store.engine.begin() as conn:
        for lo in range(1, n_runs + 1, CHUNK):
            conn.execute(_RUNS, {"jobs": jobs, "schedules": schedules, "n": n_runs, "lo": lo,
                                 "hi": min(n_runs, lo + CHUNK - 1)})  # fmt: skip
        conn.execute(text("""
            INSERT INTO runs (job_name, scheduled_for, idempotency_key, origin, args, status, queue,
                              attempt, max_attempts, not_before, created_at, updated_at)
            SELECT 'duly.noop', now() + interval '1 day', 'waiting-' || g, 'manual', '{}'::json,
                   'queued', 'default', 0, 1, now() + interval '1 day', now(), now()
            FROM generate_series(1, 200) AS g"""))  # fmt: skip
        conn.execute(_NIGHTS)
        codes = list(conn.execute(text("SELECT code FROM error_codes ORDER BY code")).scalars())
        conn.execute(text("""
            INSERT INTO error_logs (run_id, job_name, customer_id, error_code, message, retry_count,
                                    logged_at, resolved)
            SELECT g, 'daily_balance_check', NULL,
                   (CAST(:codes AS text[]))[1 + g % cardinality(CAST(:codes AS text[]))],
                   'balance read failed', g % 4, now() - make_interval(secs => g * 60.0), g % 3 = 0
            FROM generate_series(1, 20000) AS g"""), {"codes": codes})  # fmt: skip
        conn.execute(text("""
            INSERT INTO alerts (dedupe_key, rule, severity, status, title, details, occurrences,
                                first_raised_at, last_raised_at)
            SELECT 'bench:' || g, 'run.failed', 'high',
                   CASE WHEN g > 4980 THEN 'open' ELSE 'resolved' END,
                   'run ' || g || ' failed after retries', '{}'::json, 1,
                   now() - make_interval(secs => (5000 - g) * 600.0),
                   now() - make_interval(secs => (5000 - g) * 600.0)
            FROM generate_series(1, 5000) AS g"""))  # fmt: skip
    seed_demo_bank(EngineClient(store, operations_registry, CLOCK))
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    store.dispose()
    print(f"  seeded {n_runs:,} runs, 30 nights, 20,000 errors, 5,000 alerts in "
          f"{time.perf_counter() - started:.1f} s", flush=True)  # fmt: skip


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def time_pages(url: str, repeat: int) -> list[tuple[str, float, float, float]]:
    settings = Settings(database_url=url)
    store = SqlStore(url)
    registry = job_registry(settings)
    app = create_app(settings, store, registry, CLOCK)
    app.mount("/ui", create_dashboard(settings, store, registry, CLOCK))
    token = (
        TokenService(store.engine, CLOCK).create("bench-web", Role.ADMIN, created_by="bench").text
    )
    transport = httpx.ASGITransport(app=app)
    out = []
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as ui:
        form = await ui.get("/ui/signin")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf
        done = await ui.post("/ui/signin", data={"csrf": csrf.group(1), "token": token})
        assert done.status_code == 303, done.text
        error_id = store.engine.connect().execute(text("SELECT max(id) FROM error_logs")).scalar()
        run_id = (
            store.engine.connect()
            .execute(text("SELECT max(id) FROM runs WHERE status = 'failed'"))
            .scalar()
        )
        pages = {
            "operations": "/ui/", "errors (24 h)": "/ui/errors", "errors (7 days)": "/ui/errors?window=7d",
            "error detail": f"/ui/errors/{error_id}", "schedules": "/ui/schedules",
            "schedule preview": "/ui/schedules/preview?kind=weekly&time=07:30&timezone=UTC&days=mon",
            "run detail": f"/ui/runs/{run_id}", "nightly balance check": "/ui/balance-checks",
            "customers": "/ui/money", "customer search": "/ui/money?customer=demo-ada",
            "transfer": "/ui/transfers/1", "recurring payment": "/ui/recurring/1",
            "audit": "/ui/audit", "audit + verify": "/ui/audit?verify=1",
        }  # fmt: skip
        for name, path in pages.items():
            times = []
            for i in range(3 + repeat):
                start = time.perf_counter()
                response = await ui.get(path)
                took = (time.perf_counter() - start) * 1000
                assert response.status_code == 200, (
                    path,
                    response.status_code,
                    response.text[:300],
                )
                if i >= 3:
                    times.append(took)
            out.append((name, pct(times, 0.5), pct(times, 0.95), max(times)))
    store.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--pg", default=os.environ.get(
        "DULY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    print(f"bench/web.py · {benchdb.machine(args.pg)}")
    url = benchdb.fresh_database(args.pg, DATABASE)
    try:
        seed(url, args.runs)
        rows = asyncio.run(time_pages(url, args.repeat))
    finally:
        if not args.keep:
            benchdb.drop_database(args.pg, DATABASE)
    print(
        f"\n  {'page':<24} {'median':>9} {'p95':>9} {'max':>9}   (server time, ms; target ≤ {TARGET_MS:.0f})"
    )
    for name, p50, p95, top in rows:
        mark = "" if p95 <= TARGET_MS else "  OVER"
        print(f"  {name:<24} {p50:>9.1f} {p95:>9.1f} {top:>9.1f}{mark}")
    worst = max(r[2] for r in rows)
    print(
        f"\n  slowest p95: {worst:.1f} ms ({'within' if worst <= TARGET_MS else 'over'} the target)"
    )


if __name__ == "__main__":
    main()
