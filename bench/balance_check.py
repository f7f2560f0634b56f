"""The nightly balance check at the bank's size: premium customers checked per second.

Run: ``.venv/bin/python bench/balance_check.py [--customers 45000] [--only ledger-sqlite,ledger-pg,sim,sim-pg]``

Each scenario makes a fresh, migrated database with ``--customers`` premium customers (one
account each, a third below their minimum), runs one ``daily_balance_check`` through a real
engine node on the system clock, and prints the run's wall time and customers/s (printed,
not asserted):

* ``ledger-sqlite`` / ``ledger-pg`` — balances from the built-in ledger in the same database,
  ``--read-batch-size`` (200) customers per query (``get_balances``);
* ``sim`` — balances from ``bank-sim`` over HTTP on 127.0.0.1 with ``--latency-ms`` (20) per
  answer and ``--fault-rate`` (1%) faults of every kind, retried after 5, 10 and 20 s (real
  seconds: the tail of the run is the last customers' retries); a ``timeout`` fault costs
  ``--call-timeout`` (2 s) of one connection. The simulator runs in a process of its own
  (a bank is another system; in-process it would share the client's interpreter lock).
  Balances are read ``--read-batch-size`` customers per ``POST /v1/balances:batch``, where
  each account draws its own fault (and each request one more); a failed customer is
  retried alone with single reads. Results go to SQLite (``sim``) or PostgreSQL (``sim-pg``).

Targets (issue 5): under 30 s through the ledger, under 60 s through bank-sim, for 45,000
customers on a 2-core machine (the bank's current process takes 45 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, create_engine, insert, text
from sqlalchemy.engine import make_url

from duly.banking.http import HttpBank
from duly.banking.ledger import LedgerBank
from duly.banking.port import BankingPort
from duly.banking.schema import accounts, customers
from duly.banking.simulator import BankSimulator
from duly.clock import Clock, SystemClock
from duly.config import BalanceCheckSettings
from duly.db import upgrade
from duly.engine.client import EngineClient
from duly.engine.node import Node
from duly.engine.options import EngineOptions
from duly.engine.states import FINAL
from duly.engine.store.sql import SqlStore, create_db_engine
from duly.logs import configure_logging
from duly.operations.balance_check.jobs import balance_check_registry
from duly.operations.balance_check.models import JOB_NAME

MINIMUM = 100_000  # minor units


def machine() -> str:
    return (
        f"{platform.node()} · {platform.system()} {platform.machine()} · "
        f"{os.cpu_count()} CPUs · Python {platform.python_version()}"
    )


def load() -> str:
    """The machine's load average (other processes share these cores)."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} {five:.1f} {fifteen:.1f}"


def balance_of(i: int) -> int:
    return MINIMUM - 1 if i % 3 == 0 else MINIMUM + i  # a third below their minimum


def create_database(kind: str, pg_url: str, tmp: str) -> tuple[str, Callable[[], None]]:
    if kind == "sqlite":
        url = f"sqlite:///{Path(tmp) / f'{uuid.uuid4().hex}.db'}"
        drop: Callable[[], None] = lambda: None  # noqa: E731
    else:
        name = f"duly_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(pg_url).set(database=name).render_as_string(hide_password=False)

        def drop() -> None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

    engine = create_db_engine(url)
    upgrade(engine)
    engine.dispose()
    return url, drop


def seed(engine: Engine, n: int, clock: Clock) -> None:
    """``n`` premium customers with one USD account each, balances posted in the ledger."""
    now = clock.now()
    with engine.begin() as conn:
        conn.execute(
            insert(customers),
            [
                {"id": i + 1, "external_id": f"cust-{i:06d}", "tier": "premium",
                 "min_balance_minor": MINIMUM, "min_balance_currency": "USD",
                 "timezone": "UTC", "locale": "en", "notification_prefs": {},
                 "created_at": now, "updated_at": now}
                for i in range(n)
            ],
        )  # fmt: skip
        rows = [
            {"id": f"ACC{i:08d}", "customer_id": i + 1, "currency": "USD",
             "overdraft_limit_minor": 0, "status": "open", "credits_posted": balance_of(i),
             "created_at": now}
            for i in range(n)
        ]  # fmt: skip
        total = sum(r["credits_posted"] for r in rows)
        conn.execute(insert(accounts), rows)
        conn.execute(
            insert(accounts).values(id="FUNDING-USD", customer_id=None, currency="USD",
                                    overdraft_limit_minor=None, status="open",
                                    debits_posted=total, created_at=now)
        )  # fmt: skip
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("SELECT setval('customers_id_seq', :n)"), {"n": n})
            conn.execute(text("ANALYZE"))


async def run_once(store: SqlStore, cfg: BalanceCheckSettings, port: BankingPort) -> dict[str, Any]:
    clock = SystemClock()
    registry = balance_check_registry(cfg, ports=lambda *_: port)
    options = EngineOptions(node_name="bench", concurrency=2, max_idle_seconds=0.2,
                            watchdog_interval_seconds=60)  # fmt: skip
    node = Node(store, registry, clock, options, roles=("worker",))
    await node.start()
    try:
        run, _ = EngineClient(store, registry, clock).trigger(JOB_NAME)
        while True:
            await clock.sleep(0.2)
            current = store.run_get(run.id)
            if current is not None and current.status in FINAL:
                break
    finally:
        await node.stop()
    assert current.result is not None, current.error_message
    result: dict[str, Any] = current.result
    return result


def serve_simulator(n: int, latency_ms: float, fault_rate: float, hang: float, urls: Any) -> None:
    """The bank in a process of its own (as a real one would be), with ``n`` accounts."""
    sim = BankSimulator(latency_ms=latency_ms, fault_rate=fault_rate, seed=1, hang_seconds=hang)
    for i in range(n):
        sim.add_account(f"ACC{i:08d}", "USD", balance_of(i))
    urls.put(sim.url)
    sim.serve_forever()


def report(name: str, n: int, summary: dict[str, Any]) -> None:
    seconds = summary["duration_seconds"]
    print(
        f"{name:<14} {n:>7} customers  {seconds:8.1f} s  {n / seconds:9.0f} customers/s  "
        f"pass {summary['passed']}  fail {summary['failed']}  errors {summary['errors']} "
        f"{summary['errors_by_code'] or ''}  read retries {summary['read_retries']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=45_000)
    parser.add_argument("--only", default="ledger-sqlite,ledger-pg,sim,sim-pg")
    parser.add_argument("--pg", default=os.environ.get(
        "DULY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))  # fmt: skip
    parser.add_argument("--ledger-concurrency", type=int, default=2)
    parser.add_argument("--sim-concurrency", type=int, default=8)
    parser.add_argument("--read-batch-size", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--fault-rate", type=float, default=0.01)
    parser.add_argument("--call-timeout", type=float, default=2.0)
    args = parser.parse_args()
    configure_logging("error", "json")
    n = args.customers
    print(f"machine: {machine()}")
    print(f"platform: {platform.platform()} · cpu_count={os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in args.only.split(","):
            kind = "postgresql" if scenario.endswith("-pg") else "sqlite"
            url, drop = create_database(kind, args.pg, tmp)
            store = SqlStore(url)
            try:
                seed(store.engine, n, SystemClock())
                if scenario.startswith("ledger"):
                    cfg = BalanceCheckSettings(
                        concurrency=args.ledger_concurrency, read_batch_size=args.read_batch_size
                    )
                    summary = asyncio.run(
                        run_once(store, cfg, LedgerBank(store.engine, SystemClock()))
                    )
                else:
                    cfg = BalanceCheckSettings(
                        concurrency=args.sim_concurrency,
                        per_call_timeout_seconds=args.call_timeout,
                        read_batch_size=args.read_batch_size,
                    )
                    ctx = multiprocessing.get_context("spawn")
                    urls: Any = ctx.Queue()
                    server = ctx.Process(
                        target=serve_simulator,
                        args=(n, args.latency_ms, args.fault_rate, args.call_timeout + 1, urls),
                        daemon=True,
                    )
                    server.start()
                    try:
                        url = urls.get(timeout=120)
                        with HttpBank(url, timeout=args.call_timeout,
                                      max_connections=cfg.concurrency) as bank:  # fmt: skip
                            summary = asyncio.run(run_once(store, cfg, bank))
                        faults = httpx.get(f"{url}/sim/stats").json()["faults"]
                    finally:
                        server.terminate()
                        server.join()
                    print(f"{'':<14} bank-sim (own process) {args.latency_ms:g} ms, "
                          f"faults drawn: {faults}")  # fmt: skip
                report(scenario, n, summary)
                print(f"{'':<14} {load()}")
            finally:
                store.dispose()
                drop()


if __name__ == "__main__":
    main()
