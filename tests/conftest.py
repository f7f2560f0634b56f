"""Shared fixtures: real stores (a SQLite file and PostgreSQL), the manual clock, the CI guard.

PostgreSQL is at ``DULY_TEST_PG_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``).
Each test session gets its own database, migrated once; every store test starts from empty
tables. Without PostgreSQL its tests are skipped, except under ``DULY_REQUIRE_PG=1`` (CI),
where they fail, and the session fails if no PostgreSQL test passed.

Notification tests get real servers on loopback: ``receiver`` (an HTTP server recording
webhook, SMS and push requests) and ``smtp_server`` (aiosmtpd).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import Message as EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from fastapi import FastAPI
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from duly.api.app import create_app
from duly.auth.roles import Role
from duly.auth.service import TokenService
from duly.clock import Clock, ManualClock, SystemClock
from duly.config import Settings
from duly.db import upgrade
from duly.engine.store.sql import SqlStore, create_db_engine
from duly.runtime import job_registry

PG_URL = os.environ.get("DULY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("DULY_REQUIRE_PG") == "1"
#: CI: the browser tests (tests/e2e) must run: a missing chromium fails instead of skipping.
REQUIRE_BROWSER = os.environ.get("DULY_REQUIRE_BROWSER") == "1"
_pg_passed = 0
_browser_passed = 0


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    global _pg_passed, _browser_passed
    if report.when == "call" and report.passed and "postgres" in report.keywords:
        _pg_passed += 1
    if report.when == "call" and report.passed and "browser" in report.keywords:
        _browser_passed += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    collected_pg = any("postgres" in item.keywords for item in session.items)
    if REQUIRE_PG and collected_pg and _pg_passed == 0:
        print("\nDULY_REQUIRE_PG=1 but no PostgreSQL test passed")
        session.exitstatus = 1
    collected_browser = any("browser" in item.keywords for item in session.items)
    if REQUIRE_BROWSER and collected_browser and _browser_passed == 0:
        print("\nDULY_REQUIRE_BROWSER=1 but no browser test passed")
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
#: The audit chain's head as migration 0013 seeds it (emptied tables start a new chain).
AUDIT_HEAD_GENESIS = (
    "INSERT INTO audit_head (id, seq, hash, sealed_txid, sealed_id) "
    f"VALUES (1, 0, '{'0' * 64}', 0, 0)"
)


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
            # The audit tables refuse TRUNCATE by trigger; replica mode lets this reset through.
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(text(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE"))
            conn.execute(text(AUDIT_HEAD_GENESIS))
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
                env={
                    **base,
                    **FAST_NODE_ENV,
                    "DULY_DATABASE_URL": db_url,
                    "DULY_NODE_NAME": name,
                    **env,
                },
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


# -- loopback servers for notification tests ---------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Receiver:
    """An HTTP server that records each POST; ``fail_next`` queues error statuses."""

    url: str
    requests: list[Received] = field(default_factory=list)
    fail_next: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def at(self, path: str) -> str:
        return f"{self.url}{path}"

    def on(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def processed(self, path: str) -> dict[str, Received]:
        """What a receiver that honours ``Idempotency-Key`` processed: one per key."""
        out: dict[str, Received] = {}
        for r in self.on(path):
            out.setdefault(r.headers.get("idempotency-key", ""), r)
        return out


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True
        wbufsize = -1  # headers and body in one segment (no delayed-ACK stall)

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            raw = self.rfile.read(length)
            with receiver.lock:
                status = receiver.fail_next.pop(0) if receiver.fail_next else 200
                if status == 200:
                    receiver.requests.append(
                        Received(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            json.loads(raw or b"null"),
                        )
                    )
                count = len(receiver.requests)
            body = json.dumps({"id": f"msg-{count}"}).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An HTTP receiver on a random port of 127.0.0.1."""
    rec = Receiver(url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(rec))
    server.daemon_threads = True
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()


@dataclass
class Mailbox:
    host: str
    port: int
    messages: list[tuple[Envelope, EmailMessage]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    def to(self, address: str) -> list[EmailMessage]:
        return [m for env, m in self.messages if address in env.rcpt_tos]


class _Handler:
    def __init__(self, box: Mailbox) -> None:
        self.box = box

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        data = envelope.content if isinstance(envelope.content, bytes) else b""
        self.box.messages.append((envelope, message_from_bytes(data, policy=policy.default)))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp_server() -> Iterator[Mailbox]:
    """An SMTP server (aiosmtpd) on 127.0.0.1 accepting AUTH LOGIN/PLAIN for duly/secret."""
    box = Mailbox("127.0.0.1", _free_port())

    def authenticator(
        server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == b"duly"
            and (auth_data.password == b"secret")
        )
        if ok:
            box.logins.append(auth_data.login.decode())
        return AuthResult(success=ok)

    controller = Controller(
        _Handler(box),
        hostname=box.host,
        port=box.port,
        authenticator=authenticator,
        auth_require_tls=False,
    )
    controller.start()
    yield box
    controller.stop()


@pytest.fixture
def cli_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SqlStore]:
    """A migrated SQLite file that ``duly`` commands run with ``CliRunner`` use
    (``DULY_DATABASE_URL``, the working directory), and the store on it for assertions."""
    structlog.reset_defaults()  # the CLI binds logging to the runner's (closed) stdout
    url = f"sqlite:///{tmp_path / 'duly.db'}"
    engine = create_db_engine(url)
    upgrade(engine)
    engine.dispose()
    monkeypatch.setenv("DULY_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    store = SqlStore(url)
    yield store
    store.dispose()
    structlog.reset_defaults()


# -- the HTTP API over httpx against the real app, on each store ---------------------------
# ``http`` is an ``httpx.AsyncClient`` on the ASGI app; ``auth(role)`` issues a token of that
# role and returns its ``Authorization`` header. The app's clock is the real one unless a
# test overrides ``api_clock``. (Kept here, not in ``tests/api/conftest.py``: a second
# ``conftest`` module would shadow this one for ``from conftest import ...``.)

ApiAuth = Callable[..., dict[str, str]]



@pytest.fixture
def api_clock() -> Clock:
    """The app's clock: the real one (override for manual time)."""
    return SystemClock()


@pytest.fixture
def api_settings(db_url: str) -> Settings:
    """Settings of the app under test (override to change limits)."""
    return Settings(database_url=db_url)


@pytest.fixture
def app(api_settings: Settings, store: SqlStore, api_clock: Clock) -> FastAPI:
    """The API over the test store."""
    return create_app(api_settings, store, job_registry(api_settings), api_clock)


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the app (no socket)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://duly.test") as client:
        yield client


@pytest.fixture
def auth(store: SqlStore, api_clock: Clock) -> ApiAuth:
    """``auth(role, name=None)``: a new token of ``role`` as an ``Authorization`` header."""
    tokens = TokenService(store.engine, api_clock)
    issued: dict[Any, dict[str, str]] = {}

    def header(role: Role | str, name: str | None = None) -> dict[str, str]:
        role = Role(role)
        key = (role, name)
        if key not in issued:
            created = tokens.create(name or f"test-{role.value}-{len(issued)}", role,
                                    created_by="tests")  # fmt: skip
            issued[key] = {"Authorization": f"Bearer {created.text}"}
        return issued[key]

    return header


# -- the dashboard (/ui) over httpx, mounted on the API as ``duly serve`` does ----------------


@pytest.fixture
def ui_app(app: FastAPI, api_settings: Settings, store: SqlStore, api_clock: Clock) -> FastAPI:
    """The API with the dashboard mounted at ``/ui`` (what ``duly serve`` answers)."""
    from duly.web import create_dashboard

    app.mount("/ui", create_dashboard(api_settings, store, job_registry(api_settings), api_clock))
    return app


@pytest.fixture
async def ui(ui_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client on the dashboard (keeps cookies; no redirects followed)."""
    transport = httpx.ASGITransport(app=ui_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://duly.test") as client:
        yield client
