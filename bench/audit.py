"""Audit trail verification on SQLite and PostgreSQL: events verified per second.

Run: ``.venv/bin/python bench/audit.py [--events 200000] [--repeats 3] [--pg URL] [--stores sqlite,postgresql]``

Each store gets a fresh, migrated database. ``--events`` events are recorded with
:func:`duly.audit.record` (100 per call, 10 calls per transaction, as busy writers would),
sealed (PostgreSQL), and a checkpoint signed. Then, medians of ``--repeats`` (printed, not
asserted; the target is 100,000 events/s):

* record/s   — recording (and on PostgreSQL sealing) the events, once;
* verify/s   — :meth:`AuditLog.verify` over the whole chain, with the public key;
* cpu/s      — the same per CPU second of this process (one more run): what a machine
  shared with other work still shows;
* export/s   — :meth:`AuditLog.export` to a file, once;
* file/s     — :func:`duly.audit.export.verify_file` of that export, without the database.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from duly.audit import AuditEntry, AuditLog, acting_as, record, system_actor
from duly.audit.export import verify_file
from duly.clock import SystemClock
from duly.config import AuditSettings
from duly.db import upgrade
from duly.engine.store.sql import create_db_engine
from duly.logs import configure_logging

PER_CALL = 100
CALLS_PER_TRANSACTION = 10
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def machine() -> str:
    return (
        f"{platform.node()} · {platform.system()} {platform.machine()} · "
        f"{os.cpu_count()} CPUs · Python {platform.python_version()}"
    )


def entries(first: int) -> list[AuditEntry]:
    """A run's life and a schedule change, the mix the engine records most."""
    actions = ("run.fire", "run.claim", "run.succeed", "schedule.update")
    return [
        AuditEntry(
            actions[n % 4],
            "schedule" if n % 4 == 3 else "run",
            f"report.daily.{n % 50}" if n % 4 == 3 else n // 4,
            {"spec": {"before": "daily:22:00", "after": "daily:22:30"}}
            if n % 4 == 3
            else {"job": "duly.noop", "attempt": 1, "node": "node-a"},
        )
        for n in range(first, first + PER_CALL)
    ]


class Database:
    """A fresh, migrated database."""

    def __init__(self, kind: str, pg_url: str, tmp: Path) -> None:
        self.kind, self.pg_url, self.tmp = kind, pg_url, tmp
        self.name = ""

    def create(self) -> Engine:
        if self.kind == "sqlite":
            url = f"sqlite:///{self.tmp / f'{uuid.uuid4().hex}.db'}"
        else:
            self.name = f"duly_bench_audit_{uuid.uuid4().hex[:8]}"
            admin = create_engine(self.pg_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{self.name}"'))
            admin.dispose()
            url = (
                make_url(self.pg_url).set(database=self.name).render_as_string(hide_password=False)
            )
        engine = create_db_engine(url)
        upgrade(engine)
        return engine

    def drop(self, engine: Engine) -> None:
        engine.dispose()
        if self.kind == "postgresql" and self.name:
            admin = create_engine(self.pg_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            admin.dispose()


def fill(engine: Engine, audit: AuditLog, events: int) -> float:
    """Record ``events`` events and seal them all; events per second."""
    clock = SystemClock()
    began = time.perf_counter()
    n = 0
    with acting_as(system_actor("bench")):
        while n < events:
            with engine.begin() as conn:
                for _ in range(CALLS_PER_TRANSACTION):
                    if n >= events:
                        break
                    record(conn, entries(n), START + timedelta(milliseconds=n))
                    n += PER_CALL
    # On PostgreSQL the sealer waits for transactions older than the events (any database's).
    while audit.seal() or audit.status().unsealed:
        clock.sleep_blocking(0.05)
    return events / (time.perf_counter() - began)


def timed(measure: Callable[[], object]) -> float:
    began = time.perf_counter()
    measure()
    return time.perf_counter() - began


def cpu_timed(measure: Callable[[], object]) -> float:
    """This process's CPU seconds (the database server's on PostgreSQL not included)."""
    began = time.process_time()
    measure()
    return time.process_time() - began


def bench_store(kind: str, args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    db = Database(kind, args.pg, tmp)
    engine = db.create()
    try:
        key_file = tmp / f"{kind}-key.pem"
        audit = AuditLog(engine, SystemClock(), AuditSettings(signing_key_file=key_file))
        record_rate = fill(engine, audit, args.events)
        assert audit.checkpoint(force=True) is not None
        key = audit.verify_key()

        def verify() -> None:
            report = audit.verify(key=key)
            assert report.ok and report.events == args.events, report.problem

        verify_times = [timed(verify) for _ in range(args.repeats)]
        verify_cpu = cpu_timed(verify)
        export_path = tmp / f"{kind}-export.jsonl"
        with export_path.open("w", encoding="utf-8") as out:
            export_time = timed(lambda: audit.export(out))

        def verify_export() -> None:
            with export_path.open(encoding="utf-8") as source:
                report = verify_file(source, key)
            assert report.ok and report.events == args.events, report.problem

        file_times = [timed(verify_export) for _ in range(args.repeats)]
        return {
            "record": record_rate,
            "verify": [args.events / t for t in verify_times],
            "verify_cpu": args.events / verify_cpu,
            "export": args.events / export_time,
            "file": [args.events / t for t in file_times],
            "size": export_path.stat().st_size,
        }
    finally:
        db.drop(engine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    configure_logging("WARNING", "console")
    print(f"machine: {machine()}")
    print(f"events:  {args.events:,} · medians of {args.repeats} · load {os.getloadavg()[0]:.1f}\n")
    header = (
        f"{'store':11} {'record/s':>9} {'verify/s':>9} {'cpu/s':>9} {'export/s':>9} "
        f"{'file/s':>9}  repeats (verify · file)"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.stores.split(","):
            r = bench_store(kind, args, Path(tmp))
            verify, file = r["verify"], r["file"]
            assert isinstance(verify, list) and isinstance(file, list)
            repeats = (
                " ".join(f"{v:,.0f}" for v in verify) + " · " + " ".join(f"{v:,.0f}" for v in file)
            )
            print(
                f"{kind:11} {r['record']:9,.0f} {statistics.median(verify):9,.0f} "
                f"{r['verify_cpu']:9,.0f} "
                f"{r['export']:9,.0f} {statistics.median(file):9,.0f}  {repeats}"
            )
    print(f"\nload at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
