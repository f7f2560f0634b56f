"""A customer's execution history at 10 million records: pages, CSV and PDF exports.

Run: ``.venv/bin/python bench/history.py [--pg URL] [--repeat 50] [--keep]``

On PostgreSQL, in a database of its own (``duly_bench_history``, made afresh; dropped at
the end unless ``--keep``):

1. Seeds, with ``INSERT … SELECT generate_series`` (not timed), 10,000 customers and
   10,001,000 history records: 7,001,000 scheduled transfers, 2,000,000 recurring
   occurrences (of 1,000 payments), 900,000 balance-check results and 100,000 reminders
   sent (with their deliveries). Customer 1 has 100,000 of them — 70,000 transfers (two
   at each instant, every 20th failed), 20,000 occurrences of 5 payments, 5,000 checks,
   5,000 reminders — and attempt rows for its payments; customer 2 has exactly 1,000
   transfers. Then ``ANALYZE``.
2. Times, for customer 1: the first page (50 entries) and a 1,000-entry page at depths
   spread over its whole history (cursors gathered by walking it once), through
   ``history()`` and through the HTTP API in process (``httpx`` on the ASGI app, JSON
   included); ``--repeat`` times each, p50/p95.
3. Exports, each in a fresh process so its peak memory (max RSS above the process's
   baseline after imports and connecting) is its own: CSV of customer 2 (1,000 records)
   and of customer 1 (100,000), and the PDF statement of customer 2 (1,000).

Figures are printed, not asserted, with the machine and PostgreSQL's version. Targets on
this machine: 1,000-record page ≤ 100 ms p95, CSV of 1,000 ≤ 0.2 s and 100,000 ≤ 5 s with
flat memory, PDF of 1,000 ≤ 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import resource
import statistics
import time
from typing import Any

import benchdb
import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from duly.api.app import create_app
from duly.auth.roles import Role
from duly.auth.service import TokenService
from duly.clock import SystemClock
from duly.config import Settings
from duly.engine.store.sql import SqlStore, create_db_engine
from duly.logs import configure_logging
from duly.runtime import job_registry

DATABASE = "duly_bench_history"
CLOCK = SystemClock()
BIG, SMALL = 1, 2

# -- the machine and the database ------------------------------------------------------------


# -- seeding ---------------------------------------------------------------------------------

_CUSTOMERS = """
INSERT INTO customers (id, external_id, tier, timezone, locale, notification_prefs, created_at, updated_at)
SELECT c, 'bench-' || c, 'standard', 'Europe/Berlin', 'de', '{}'::json, now(), now()
FROM generate_series(1, 10000) c;
SELECT setval(pg_get_serial_sequence('customers', 'id'), 10000);
INSERT INTO customer_pii (customer_id, name, updated_at) VALUES
  (1, 'Zoë Ångström-Müller', now()), (2, 'Łukasz Nowak-Şahin', now());
"""

# {customer}, {at} and {status} are SQL over i; ids follow insertion order, so customer 1's
# transfers are ids 1–70,000 and its attempts can be written by id.
_TRANSFERS = """
INSERT INTO scheduled_transfers (request_key, request_hash, customer_id, bank, from_account,
  to_account, amount_minor, currency, memo, local_date, local_time, timezone, convention,
  execution_date, max_attempts, retry_every_seconds, retry_window_seconds, transfer_key,
  execute_at, status, attempts, error_code, error_message, executed_at, created_at, updated_at)
SELECT 'b-{tag}-' || i, repeat('0', 64), c, 'ledger', 'DE-C' || lpad(c::text, 10, '0'),
  'DE-P' || lpad((i % 5000)::text, 10, '0'), 100 + (i * 37) % 500000, 'EUR', 'invoice ' || i,
  at::date, '09:00', 'Europe/Berlin', 'following', at::date, 3, 3600, 86400,
  'st-{tag}-' || i, at, st, 1, CASE WHEN st = 'failed' THEN 'INSUFFICIENT_FUNDS' END,
  CASE WHEN st = 'failed' THEN 'insufficient funds' END,
  CASE WHEN st = 'executed' THEN at + interval '2 seconds' END, at - interval '3 days', at
FROM (SELECT i, {customer} AS c, {at} AS at, {status} AS st
      FROM generate_series(CAST(:lo AS integer), CAST(:hi AS integer)) i) s;
"""

_PAYMENTS = """
INSERT INTO recurring_payments (id, request_key, request_hash, customer_id, bank, from_account,
  to_account, amount_minor, currency, memo, frequency, start_date, time_of_day, timezone,
  convention, max_attempts, retry_every_seconds, retry_window_seconds, status, created_at,
  updated_at)
SELECT k, 'b-rp-' || k, repeat('0', 64), CASE WHEN k <= 5 THEN 1 ELSE k - 3 END, 'ledger',
  'DE-C' || lpad((CASE WHEN k <= 5 THEN 1 ELSE k - 3 END)::text, 10, '0'),
  'DE-R' || lpad(k::text, 10, '0'), 1000 + k, 'EUR', 'subscription ' || k, 'monthly',
  date '2019-01-01', '07:00', 'Europe/Berlin', 'following', 3, 3600, 86400, 'active', now(), now()
FROM generate_series(1, 1000) k;
SELECT setval(pg_get_serial_sequence('recurring_payments', 'id'), 1000);
"""

_OCCURRENCES = """
INSERT INTO recurring_occurrences (payment_id, customer_id, seq, unadjusted_date, execution_date,
  transfer_key, execute_at, status, attempts, executed_at, created_at, updated_at)
SELECT p, CASE WHEN p <= 5 THEN 1 ELSE p - 3 END, i, date '2000-01-01' + i, at::date,
  'ro-' || i, at, 'executed', 1, at + interval '1 second', at, at
FROM (SELECT i, {payment} AS p, {at} AS at FROM generate_series(CAST(:lo AS integer), CAST(:hi AS integer)) i) s;
"""

_CHECKS = """
INSERT INTO balance_check_results (run_id, business_date, customer_id, result, error_code,
  attempts, accounts_checked, checked_at)
SELECT 1, d, c, CASE WHEN i % 50 = 0 THEN 'ERROR' WHEN i % 17 = 0 THEN 'FAIL' ELSE 'PASS' END,
  CASE WHEN i % 50 = 0 THEN 'TIMEOUT' END, 1, 1, d + interval '22 hours'
FROM (SELECT i, {customer} AS c, {day} AS d FROM generate_series(CAST(:lo AS integer), CAST(:hi AS integer)) i) s;
"""

_REMINDERS = """
INSERT INTO deliveries (id, dedupe_key, source, source_ref, channel, recipient_ref,
  recipient_masked, template, context, status, attempts, created_at, updated_at, sent_at)
SELECT i, 'b-d-' || i, 'reminder', i::text, 'email', 'customer:' || c, 'c***@example.com',
  'reminder', '{{}}'::json, 'sent', 1, at, at, at + interval '3 seconds'
FROM (SELECT i, {customer} AS c, {at} AS at FROM generate_series(CAST(:lo AS integer), CAST(:hi AS integer)) i) s;
INSERT INTO reminders (reminder_key, kind, ref_id, occurrence_key, version, customer_id, "offset",
  channel, execute_at, send_at, status, delivery_id, created_at, updated_at)
SELECT 'b-r-' || i, 'transfer', CASE WHEN c = 1 THEN i ELSE 80000 + i END, 'st-' || i, 1, c, '1d',
  'email', at + interval '1 day', at, 'planned', i, at, at
FROM (SELECT i, {customer} AS c, {at} AS at FROM generate_series(CAST(:lo AS integer), CAST(:hi AS integer)) i) s;
"""

_ATTEMPTS = """
INSERT INTO payment_attempts (kind, ref_id, attempt, started_at, finished_at, status, error_code)
SELECT '{kind}', t.id, 1, t.execute_at, t.execute_at + interval '1 second',
  CASE WHEN t.status = 'executed' THEN 'succeeded' ELSE 'failed' END, t.error_code
FROM {table} t WHERE t.customer_id = 1;
"""

CHUNK = 1_000_000


def _run(engine: Any, sql: str, lo: int | None = None, hi: int | None = None) -> None:
    with engine.begin() as conn:
        for statement in [s for s in sql.split(";\n") if s.strip()]:
            conn.execute(text(statement), {"lo": lo, "hi": hi} if lo is not None else {})


def _chunked(engine: Any, sql: str, total: int, what: str) -> None:
    started = time.perf_counter()
    for lo in range(1, total + 1, CHUNK):
        _run(engine, sql, lo, min(lo + CHUNK - 1, total))
    print(f"  {total:>10,} {what} ({time.perf_counter() - started:.0f} s)", flush=True)


def seed(url: str, scale: float = 1.0) -> None:
    """Seed the records; ``scale`` shrinks the other customers' share (a quick dry run)."""
    # a plain engine: a million-row INSERT outlasts duly's default statement timeout
    engine = create_engine(url)

    def others(n: int) -> int:
        return max(1, int(n * scale))

    _run(engine, _CUSTOMERS)
    big_at = "timestamptz '2019-01-01 08:00+00' + (i / 2) * interval '1 hour'"
    failed_every_20th = "CASE WHEN i % 20 = 0 THEN 'failed' ELSE 'executed' END"
    _chunked(engine, _TRANSFERS.format(tag="a", customer="1", at=big_at, status=failed_every_20th),
             70_000, "transfers of customer 1")  # fmt: skip
    _chunked(engine, _TRANSFERS.format(
        tag="b", customer="2", at="timestamptz '2025-01-01 08:00+00' + i * interval '7 hours'",
        status="'executed'"), 1_000, "transfers of customer 2")  # fmt: skip
    _chunked(engine, _TRANSFERS.format(
        tag="c", customer="3 + i % 9998",
        at="timestamptz '2019-01-01 08:00+00' + (i % 61000) * interval '1 hour'",
        status="'executed'"), others(6_930_000), "transfers of 9,998 other customers")  # fmt: skip
    _run(engine, _PAYMENTS)
    _chunked(engine, _OCCURRENCES.format(
        payment="1 + i % 5", at="timestamptz '2019-01-01 06:00+00' + i * interval '2 hours'"),
        20_000, "occurrences of customer 1")  # fmt: skip
    _chunked(engine, _OCCURRENCES.replace(":lo", "(:lo + 20000)").replace(":hi", "(:hi + 20000)")
             .format(payment="6 + i % 995",
                     at="timestamptz '2019-01-01 06:00+00' + (i % 60000) * interval '1 hour'"),
             others(1_980_000), "occurrences of 995 other customers' payments")  # fmt: skip
    _chunked(engine, _CHECKS.format(customer="1", day="date '2010-01-01' + i"),
             5_000, "balance checks of customer 1")  # fmt: skip
    _chunked(engine, _CHECKS.format(customer="3 + i % 9998", day="date '2010-01-01' + i / 9998"),
             others(895_000), "balance checks of other customers")  # fmt: skip
    big_send = "timestamptz '2019-01-02 07:00+00' + i * interval '1 day' / 3"
    _chunked(engine, _REMINDERS.format(customer="1", at=big_send), 5_000,
             "reminders of customer 1")  # fmt: skip
    _chunked(engine, _REMINDERS.replace(":lo", "(:lo + 5000)").replace(":hi", "(:hi + 5000)")
             .format(customer="3 + i % 9998",
                     at="timestamptz '2019-01-02 07:00+00' + (i % 20000) * interval '3 hours'"),
             others(95_000), "reminders of other customers")  # fmt: skip
    _run(engine, _ATTEMPTS.format(kind="transfer", table="scheduled_transfers"))
    _run(engine, _ATTEMPTS.format(kind="occurrence", table="recurring_occurrences"))
    for table in ("customers", "deliveries"):
        seq = f"pg_get_serial_sequence('{table}', 'id')"
        _run(engine, f"SELECT setval({seq}, (SELECT max(id) FROM {table}))")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()


# -- measuring ---------------------------------------------------------------------------------


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered) * 1000:7.1f} ms · p95 {p95 * 1000:7.1f} ms"


def timed(call: Any, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        out.append(time.perf_counter() - started)
    return out


def pages(url: str, repeat: int) -> None:
    from duly.operations.history.models import HistoryFilter
    from duly.operations.history.service import history

    engine = create_db_engine(url)
    flt = HistoryFilter(customer_id=BIG)
    cursors: list[str | None] = [None]
    cursor = history(engine, flt, limit=1000).next_cursor
    walked = 1000
    while cursor is not None:
        cursors.append(cursor)
        page = history(engine, flt, limit=1000, cursor=cursor)
        walked += len(page.entries)
        cursor = page.next_cursor
    print(f"customer {BIG}: {walked:,} entries, {len(cursors)} pages of 1,000", flush=True)
    rng = random.Random(7)
    first = timed(lambda: history(engine, flt, limit=50), repeat)
    deep = timed(lambda: history(engine, flt, limit=1000, cursor=rng.choice(cursors)), repeat)
    print(f"| first page (50), history() | {ms(first)} |")
    print(f"| 1,000-record page at a random depth, history() | {ms(deep)} |")
    asyncio.run(_api_pages(url, engine, cursors, repeat, rng))
    engine.dispose()


async def _api_pages(url: str, engine: Any, cursors: list[str | None], repeat: int,
                     rng: random.Random) -> None:  # fmt: skip
    settings = Settings(database_url=url)
    store = SqlStore(engine)
    app = create_app(settings, store, job_registry(settings), CLOCK)
    token = TokenService(engine, CLOCK).create(
        f"bench-{os.getpid()}", Role.AUDITOR, created_by="bench"
    )
    headers = {"Authorization": f"Bearer {token.text}"}
    path = f"/api/v1/customers/{BIG}/history"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as c:
        for limit, label in (
            (50, "first page (50)"),
            (1000, "1,000-record page at a random depth"),
        ):
            times = []
            for _ in range(repeat):
                cursor = rng.choice(cursors) if limit == 1000 else None
                params: dict[str, Any] = {"limit": limit} | ({"cursor": cursor} if cursor else {})
                started = time.perf_counter()
                answer = await c.get(path, params=params, headers=headers)
                times.append(time.perf_counter() - started)
                assert answer.status_code == 200, answer.text
            print(f"| {label}, GET …/history (JSON) | {ms(times)} |")


def _export(url: str, customer_id: int, fmt: str, queue: Any) -> None:
    """In a fresh process: export, and report seconds, rows and peak RSS above the baseline."""
    from duly.config.history import DEJAVU_SANS
    from duly.operations.history.export import csv_chunks
    from duly.operations.history.models import HistoryFilter
    from duly.operations.history.service import customer_info, entries
    from duly.operations.history.statement import Statement, StatementStyle, render_statement

    engine = create_db_engine(url)
    who = customer_info(engine, customer_id)  # connects and warms the imports
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    flt = HistoryFilter(customer_id=customer_id)
    size = 0
    if fmt == "csv":
        with open(os.devnull, "w", encoding="utf-8") as sink:
            for chunk in csv_chunks(entries(engine, flt)):
                size += len(chunk.encode())
                sink.write(chunk)
    else:
        statement = Statement(who, None, None, CLOCK.now())
        size = len(render_statement(statement, entries(engine, flt),
                                    StatementStyle("duly bank", DEJAVU_SANS)))  # fmt: skip
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put((seconds, size, (peak - baseline) / 1024, peak / 1024))


def exports(url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    for label, customer_id, fmt in (("CSV of 1,000 records", SMALL, "csv"),
                                    ("CSV of 100,000 records", BIG, "csv"),
                                    ("PDF of 1,000 records", SMALL, "pdf")):  # fmt: skip
        queue = ctx.Queue()
        child = ctx.Process(target=_export, args=(url, customer_id, fmt, queue))
        child.start()
        seconds, size, grown, peak = queue.get()
        child.join()
        print(f"| {label} | {seconds:.2f} s · {size / 1e6:.1f} MB · peak RSS +{grown:.0f} MiB "
              f"(process {peak:.0f} MiB) |", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default=os.environ.get(
        "DULY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))  # fmt: skip
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="the other customers' records × this (a dry run: 0.001)",
    )
    parser.add_argument("--reuse", action="store_true", help="measure an existing, seeded database")
    args = parser.parse_args()
    configure_logging("warning", "console")
    print(f"history benchmark · {benchdb.machine(args.pg)}")
    print(f"load average at the start {os.getloadavg()[0]:.1f}", flush=True)
    if args.reuse:
        url = make_url(args.pg).set(database=DATABASE).render_as_string(hide_password=False)
    else:
        url = benchdb.fresh_database(args.pg, DATABASE)
        print(f"seeding {DATABASE}:", flush=True)
        started = time.perf_counter()
        seed(url, args.scale)
        print(f"seeded in {time.perf_counter() - started:.0f} s", flush=True)
    try:
        print("| measure | figure |\n| --- | --- |")
        pages(url, args.repeat)
        exports(url)
    finally:
        if not args.keep:
            benchdb.drop_database(args.pg, DATABASE)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
