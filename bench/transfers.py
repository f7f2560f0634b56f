"""Scheduled transfers executed per second: ledger on SQLite and PostgreSQL, bank-sim over HTTP.

Run: ``.venv/bin/python bench/transfers.py [--transfers 75000] [--workers 2] [--pg URL]
[--only sqlite-ledger,postgres-ledger,postgres-sim] [--latency-ms 20]``

Each row (printed, not asserted) uses a fresh, migrated database:

1. 1,000 funded debit accounts and 1,000 credit accounts (in the ledger, or in a
   ``bank-sim`` thread of this process answering after ``--latency-ms``); transfer *i*
   goes from debit *i mod 1000* to credit *7i mod 1000*. (``--hot`` sends every transfer
   to one credit account instead: a single hot row, locked from posting until the run's
   completion commits, which serialises the whole batch);
2. ``--transfers`` scheduled transfers due at the same instant, created with
   ``ScheduledTransfers.create_many`` (not timed);
3. ``--workers`` ``duly worker`` processes start; the clock runs from their start until
   every transfer is ``executed``. Figures: transfers/s, total seconds, the time 75,000
   take at that rate (the measured time when ``--transfers 75000``), and whether that
   meets the target (75,000 within 60 s on PostgreSQL with the ledger, 120 s through
   bank-sim). The ledger's invariants are checked after each row (and, for bank-sim, that
   no key was applied twice).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from duly.banking.customers import Customers, NewAccount, NewCustomer
from duly.banking.http import HttpBank
from duly.banking.ledger import LedgerBank
from duly.banking.simulator import BankSimulator
from duly.clock import ManualClock, SystemClock
from duly.db import upgrade
from duly.engine.client import EngineClient
from duly.engine.store.sql import SqlStore, create_db_engine
from duly.logs import configure_logging
from duly.operations import FailurePolicy, NewTransfer, ScheduledTransfers, operations_registry
from duly.operations.banks import BankDirectory

ACCOUNTS = 1000  # debit accounts, and as many credit accounts: few transfers share a row lock
FUNDS = 10**12
TARGETS = {"postgres-ledger": 60.0, "postgres-sim": 120.0}  # seconds for FULL transfers
FULL = 75_000
CLOCK = SystemClock()


def machine() -> str:
    return (
        f"{platform.node()} · {platform.system()} {platform.machine()} · "
        f"{os.cpu_count()} CPUs · Python {platform.python_version()}"
    )


def fresh_url(kind: str, pg_url: str, tmp: Path) -> tuple[str, str | None]:
    if kind == "sqlite":
        return f"sqlite:///{tmp / f'{uuid.uuid4().hex}.db'}", None
    name = f"duly_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(pg_url).set(database=name).render_as_string(hide_password=False), name


def drop(pg_url: str, name: str | None) -> None:
    if name is None:
        return
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def count(store: SqlStore, status: str) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM scheduled_transfers WHERE status = :s"),
                                {"s": status}).scalar_one())  # fmt: skip


def one_row(
    kind: str,
    bank: str,
    n: int,
    workers: int,
    pg_url: str,
    latency_ms: float,
    profile: str | None,
    hot: bool,
    notify: bool,
) -> dict[str, float]:
    tmp = tempfile.TemporaryDirectory()
    url, dbname = fresh_url(kind, pg_url, Path(tmp.name))
    engine = create_db_engine(url)
    upgrade(engine)
    engine.dispose()
    store = SqlStore(url)
    sim: BankSimulator | None = None
    try:
        people = Customers(store.engine, CLOCK)
        owner = people.add(NewCustomer("bench"))
        banks = BankDirectory()
        if bank == "ledger":
            ledger = LedgerBank(store.engine, CLOCK)
            for i in range(ACCOUNTS):
                people.open_account(NewAccount(f"DEBIT-{i:04d}", "USD", owner.id))
                people.open_account(NewAccount(f"CREDIT-{i:04d}", "USD", None))
                ledger.fund(f"DEBIT-{i:04d}", FUNDS, "USD", f"fund-{i}")
        else:
            sim = BankSimulator(latency_ms=latency_ms).start()
            for i in range(ACCOUNTS):
                sim.add_account(f"DEBIT-{i:04d}", "USD", FUNDS)
                sim.add_account(f"CREDIT-{i:04d}", "USD", 0)
            banks.register("http", HttpBank(sim.url))
        due = CLOCK.now().replace(second=0, microsecond=0)
        client = EngineClient(store, operations_registry, ManualClock(due - timedelta(minutes=5)))
        transfers = ScheduledTransfers(client, banks)
        t0 = time.perf_counter()
        for start in range(0, n, 5000):
            transfers.create_many([
                NewTransfer(request_key=f"b-{i}", from_account=f"DEBIT-{i % ACCOUNTS:04d}",
                            to_account="CREDIT-0000" if hot else f"CREDIT-{7 * i % ACCOUNTS:04d}",
                            amount=f"{1 + i % 9}.{i % 100:02d}",
                            currency="USD", local_date=due.date(), local_time=due.strftime("%H:%M"),
                            timezone="UTC", convention="none", bank="http" if sim else "ledger",
                            policy=FailurePolicy(max_attempts=1))
                for i in range(start, min(n, start + 5000))
            ])  # fmt: skip
        created_s = time.perf_counter() - t0
        env = {k: v for k, v in os.environ.items() if not k.startswith("DULY_")}
        env.update(DULY_DATABASE_URL=url, DULY_LOGGING__LEVEL="warning",
                   DULY_ENGINE__WORKER_CONCURRENCY="32" if sim else "8",
                   DULY_ENGINE__CLAIM_BATCH="64", DULY_ENGINE__MAX_IDLE_SECONDS="0.2")  # fmt: skip
        if sim:
            env["DULY_BANK_HTTP_URL"] = sim.url
        if not notify:
            env["DULY_NOTIFY__ENABLED"] = "false"
        command = [sys.executable, "-m", "duly", "worker", "--no-scheduler"]
        procs = [subprocess.Popen(command, env={**env, "DULY_NODE_NAME": f"w{i}"}, cwd=tmp.name,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for i in range(workers)]  # fmt: skip
        spy = None
        if profile:  # py-spy attached to worker 0 for 15 s, GIL holders only
            spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--gil",
                                    "--format", "raw", "-o", profile, "--duration", "15",
                                    "--pid", str(procs[0].pid)], stdout=subprocess.DEVNULL)  # fmt: skip
        start_t = time.perf_counter()
        try:
            while count(store, "executed") < n:
                if any(p.poll() is not None for p in procs):
                    raise RuntimeError("a worker process died")
                if count(store, "failed"):
                    raise RuntimeError("a transfer failed")
                CLOCK.sleep_blocking(0.1)
            elapsed = time.perf_counter() - start_t
        finally:
            if spy is not None:
                spy.wait(timeout=60)
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(timeout=60)
        check = LedgerBank(store.engine, CLOCK).check()
        if not check.ok:
            raise RuntimeError(f"ledger check failed: {check.problems[:3]}")
        if sim is not None and sim.stats()["duplicate_applications"]:
            raise RuntimeError("bank-sim applied a key twice")
        return {"created_s": created_s, "elapsed": elapsed, "rate": n / elapsed}
    finally:
        if sim is not None:
            sim.stop()
        store.dispose()
        drop(pg_url, dbname)
        tmp.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", type=int, default=75_000)
    parser.add_argument("--workers", type=int, default=2, help="duly worker processes")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="bank-sim latency")
    parser.add_argument("--only", default="sqlite-ledger,postgres-ledger,postgres-sim")
    parser.add_argument("--hot", action="store_true", help="every transfer to one credit account")
    parser.add_argument("--no-notify", action="store_true",
                        help="workers without the notifications relay (DULY_NOTIFY__ENABLED=false)")
    parser.add_argument("--profile", help="record worker 0 with py-spy (--gil, raw) into this file")
    parser.add_argument("--pg", default=os.environ.get(
        "DULY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    configure_logging("warning", "console")
    rows = [r.strip() for r in args.only.split(",") if r.strip()]
    shape = "one hot credit account" if args.hot else "1,000 → 1,000 accounts"
    print(f"transfers benchmark · {machine()}")
    print(f"{args.transfers:,} transfers due at once, {args.workers} duly worker process(es), "
          f"bank-sim latency {args.latency_ms:g} ms, {shape}, "
          f"notifications {'off' if args.no_notify else 'on'}")  # fmt: skip
    print(f"{'store-bank':<18}{'transfers/s':>12}{'all done':>11}{'75k in':>11}{'target':>9}"
          "  created in")  # fmt: skip
    for row in rows:
        kind, bank = row.split("-")
        out = one_row("postgres" if kind == "postgres" else "sqlite", bank, args.transfers,
                      args.workers, args.pg, args.latency_ms, args.profile, args.hot, not args.no_notify)  # fmt: skip
        target = TARGETS.get(row)
        full = out["elapsed"] * FULL / args.transfers  # the target's batch, at this rate
        verdict = "-" if target is None else ("met" if full <= target else "MISSED")
        print(f"{row:<18}{out['rate']:>12,.0f}{out['elapsed']:>10.1f}s{full:>10.0f}s{verdict:>9}  "
              f"{out['created_s']:.1f} s  (load average {os.getloadavg()[0]:.1f})",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
