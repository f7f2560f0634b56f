"""Ledger throughput on SQLite and PostgreSQL: transfers posted per second.

Run: ``.venv/bin/python bench/ledger.py [--transfers 3000] [--repeats 3] [--threads 4] [--pg URL]``

Figures (medians of the repeats, printed, not asserted), each on a fresh database:

* serial/s   — one thread, one transaction per transfer (``LedgerBank.transfer``);
* parallel/s — ``--threads`` threads at once over 50 accounts (row locks on PostgreSQL,
  one writer on SQLite), every transfer with its own key;
* replay/s   — the same keys again: each answers ``exists`` and posts nothing;
* the ledger's invariants are checked after every round (a failed check aborts).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from duly.banking.customers import Customers, NewAccount
from duly.banking.errors import BankingError
from duly.banking.ledger import LedgerBank
from duly.clock import SystemClock
from duly.db import upgrade
from duly.engine.store.sql import create_db_engine
from duly.logs import configure_logging

ACCOUNTS = 50


def machine() -> str:
    return (
        f"{platform.node()} · {platform.system()} {platform.machine()} · "
        f"{os.cpu_count()} CPUs · Python {platform.python_version()}"
    )


class Database:
    """A fresh, migrated database per measurement."""

    def __init__(self, kind: str, pg_url: str) -> None:
        self.kind, self.pg_url = kind, pg_url
        self.tmp = tempfile.TemporaryDirectory()
        self.name = ""

    def create(self) -> LedgerBank:
        if self.kind == "sqlite":
            url = f"sqlite:///{Path(self.tmp.name) / f'{uuid.uuid4().hex}.db'}"
        else:
            self.name = f"duly_bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(self.pg_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{self.name}"'))
            admin.dispose()
            url = make_url(self.pg_url).set(database=self.name).render_as_string(hide_password=False)
        engine = create_db_engine(url, pool_size=16)
        upgrade(engine)
        clock = SystemClock()
        people = Customers(engine, clock)
        bank = LedgerBank(engine, clock)
        for i in range(ACCOUNTS):
            people.open_account(NewAccount(f"BENCH-{i:04d}", "USD", None))
            bank.fund(f"BENCH-{i:04d}", 10**12, "USD", f"fund-{i}")
        return bank

    def drop(self, bank: LedgerBank) -> None:
        bank.engine.dispose()
        if self.kind == "postgresql" and self.name:
            admin = create_engine(self.pg_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            admin.dispose()


def pairs(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.sample(range(ACCOUNTS), 2)
        out.append((f"BENCH-{a:04d}", f"BENCH-{b:04d}"))
    return out


def post_all(bank: LedgerBank, work: list[tuple[str, str]], prefix: str, threads: int) -> float:
    """Post ``work`` split over ``threads``; return transfers per second."""
    errors: list[BaseException] = []
    chunks = [list(enumerate(work))[i::threads] for i in range(threads)]

    def run(chunk: list[tuple[int, tuple[str, str]]]) -> None:
        try:
            for i, (src, dst) in chunk:
                bank.transfer(src, dst, 100, "USD", f"{prefix}-{i}")
        except BankingError as exc:  # pragma: no cover - a bug if it happens
            errors.append(exc)

    started = time.perf_counter()
    pool = [threading.Thread(target=run, args=(c,)) for c in chunks]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} transfers failed: {errors[0]}")
    return len(work) / elapsed


def measure(db: Database, n: int, threads: int, seed: int) -> tuple[float, float, float]:
    bank = db.create()
    try:
        serial = post_all(bank, pairs(n, seed), "s", 1)
        parallel = post_all(bank, pairs(n, seed + 1), "p", threads)
        replay = post_all(bank, pairs(n, seed + 1), "p", threads)
        check = bank.check()
        if not check.ok:
            raise RuntimeError(f"ledger check failed: {check.problems}")
        return serial, parallel, replay
    finally:
        db.drop(bank)


def median(values: list[float]) -> str:
    return f"{statistics.median(values):>9,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--transfers", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument(
        "--pg",
        default=os.environ.get("DULY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    configure_logging("WARNING", "console")  # one info line per transfer would be measured too
    print(f"ledger benchmark · {machine()}")
    print(f"{args.transfers} transfers per figure, median of {args.repeats}, {args.threads} threads")
    print(f"{'store':<12}{'serial/s':>10}{'parallel/s':>12}{'replay/s':>10}")
    kinds = [args.only] if args.only else ["sqlite", "postgresql"]
    for kind in kinds:
        db = Database(kind, args.pg)
        try:
            rounds = [measure(db, args.transfers, args.threads, seed) for seed in range(args.repeats)]
        except Exception as exc:  # e.g. PostgreSQL unreachable
            print(f"{kind:<12}skipped: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}")
            continue
        serial, parallel, replay = ([r[i] for r in rounds] for i in range(3))
        print(f"{kind:<12}{median(serial)}{median(parallel):>12}{median(replay)}")


if __name__ == "__main__":
    main()
