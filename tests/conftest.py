"""Shared fixtures: real stores (a SQLite file and PostgreSQL), the manual clock, the CI guard.

PostgreSQL is at ``DULY_TEST_PG_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``).
Each test session gets its own database, migrated once; every store test starts from empty
tables. Without PostgreSQL its tests are skipped, except under ``DULY_REQUIRE_PG=1`` (CI),
where they fail, and the session fails if no PostgreSQL test passed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from duly.clock import ManualClock, SystemClock
from duly.db import upgrade
from duly.engine.store.sql import SqlStore, create_db_engine

PG_URL = os.environ.get("DULY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("DULY_REQUIRE_PG") == "1"
_pg_passed = 0


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    global _pg_passed
    if report.when == "call" and report.passed and "postgres" in report.keywords:
        _pg_passed += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    collected_pg = any("postgres" in item.keywords for item in session.items)
    if REQUIRE_PG and collected_pg and _pg_passed == 0:
        print("\nDULY_REQUIRE_PG=1 but no PostgreSQL test passed")
        session.exitstatus = 1


def pytest_report_header() -> str:
    return f"duly: PostgreSQL tests against {make_url(PG_URL).render_as_string()}" + (
        " (required)" if REQUIRE_PG else ""
    )


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this session; dropped at the end."""
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        admin.dispose()
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL required but unreachable at {PG_URL}: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {PG_URL}")
    name = f"duly_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    engine = create_db_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating is the slow part)."""
    path = tmp_path_factory.mktemp("tpl") / "template.db"
    engine = create_db_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()  # the last connection to close checkpoints the WAL into the file
    assert not path.with_name(path.name + "-wal").exists()
    return path


#: Tables a migration fills with reference data: kept when a test empties the database.
SEEDED_TABLES = {"alembic_version", "error_codes"}


def _truncate_pg(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        tables = [
            name
            for name in conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
            ).scalars()
            if name not in SEEDED_TABLES
        ]
        if tables:
            quoted = ", ".join(f'"{t}"' for t in tables)
            conn.execute(text(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty, migrated database: a SQLite file, then PostgreSQL."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "duly.db"
        path.write_bytes(template.read_bytes())
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_database")
    _truncate_pg(url)
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[SqlStore]:
    """A :class:`SqlStore` on an empty database (each engine in turn)."""
    s = SqlStore(db_url)
    yield s
    checked_out = s.engine.pool.checkedout() if hasattr(s.engine.pool, "checkedout") else 0
    s.dispose()
    assert checked_out == 0, f"{checked_out} connection(s) left checked out"


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock at Monday 2026-03-02 00:00 UTC."""
    return ManualClock(datetime(2026, 3, 2, tzinfo=UTC))


#: Engine settings for worker processes under test: leases expire and are reaped in seconds.
FAST_NODE_ENV = {
    "DULY_ENGINE__LEASE_SECONDS": "3",
    "DULY_ENGINE__HEARTBEAT_SECONDS": "1",
    "DULY_ENGINE__REAPER_INTERVAL_SECONDS": "1",
    "DULY_ENGINE__MAX_IDLE_SECONDS": "0.5",
    "DULY_ENGINE__WORKER_CONCURRENCY": "8",
    "DULY_LOGGING__LEVEL": "warning",
}

StartWorker = Callable[..., "subprocess.Popen[bytes]"]


@pytest.fixture
def duly_worker(db_url: str, tmp_path: Path) -> Iterator[StartWorker]:
    """Start ``duly worker`` processes on the test's database; all are stopped at the end.

    ``start(name, *args, **env)``: ``args`` go to ``duly worker``, ``env`` is added to the
    process environment (on top of :data:`FAST_NODE_ENV`). Each writes ``<name>.log`` in the
    test's directory.
    """
    started: list[subprocess.Popen[bytes]] = []
    base = {k: v for k, v in os.environ.items() if not k.startswith("DULY_")}

    def start(name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        with (tmp_path / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "duly", "worker", *args],
                env={**base, **FAST_NODE_ENV, "DULY_DATABASE_URL": db_url,
                     "DULY_NODE_NAME": name, **env},
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in started:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


WaitFor = Callable[[Callable[[], bool], float, str], None]


@pytest.fixture
def wait_for() -> WaitFor:
    """``wait_for(check, seconds, what)``: poll ``check`` in real time until it holds."""
    clock = SystemClock()

    def wait(check: Callable[[], bool], seconds: float, what: str) -> None:
        deadline = clock.now() + timedelta(seconds=seconds)
        while not check():
            if clock.now() > deadline:
                pytest.fail(f"timed out after {seconds} s waiting for {what}")
            clock.sleep_blocking(0.1)

    return wait
