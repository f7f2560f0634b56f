"""PostgreSQL's timeouts: no store call and no loop of a node hangs, whatever the network does.

The node's store talks to PostgreSQL through a :class:`~faultproxy.FaultProxy`; a black hole
there is a half-open network behind a proxy that still acknowledges every packet, the case
TCP keepalives cannot see. Every test sets small timeouts so it runs in seconds, and waits
on a call in a thread with a bound it asserts, so a hang fails the test instead of
stalling the suite.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from structlog.testing import capture_logs

from conftest import _truncate_pg
from duly.engine.client import EngineClient
from duly.engine.context import JobContext
from duly.engine.node import Node
from duly.engine.options import EngineOptions
from duly.engine.registry import JobRegistry
from duly.engine.states import FINAL, RunStatus
from duly.engine.store.connect import ConnectOptions, create_db_engine
from duly.engine.store.sql import SqlStore
from faultproxy import FaultProxy, fault_proxy
from realtime import CLOCK, fast_options, final, until

pytestmark = pytest.mark.postgres


TIMEOUTS = ConnectOptions(
    connect_timeout=2,  # libpq's least
    statement_timeout=1.0,
    lock_timeout=0.5,
    idle_in_transaction_timeout=1.0,
    response_timeout=1.5,
    keepalives_idle=1,
    keepalives_interval=1,
    keepalives_count=2,
    tcp_user_timeout=2.0,
    pool_timeout=2.0,
)

#: The longest a store call into a black hole may take: the pool's ping of the pooled
#: connection times out, the connection it opens instead times out, plus slack.
BLACK_HOLE_BOUND = TIMEOUTS.response_timeout + TIMEOUTS.connect_timeout + 2.0


@dataclass
class Timed:
    finished: bool
    seconds: float
    result: Any = None
    error: BaseException | None = None


def timed(fn: Callable[[], Any], bound: float) -> Timed:
    """Call ``fn`` in a thread and wait for it at most ``bound`` s (a hang leaves it behind)."""
    out: dict[str, Any] = {}

    def call() -> None:
        start = CLOCK.now()
        try:
            out["result"] = fn()
        except BaseException as exc:  # handed to the test to assert on
            out["error"] = exc
        out["seconds"] = (CLOCK.now() - start).total_seconds()

    thread = threading.Thread(target=call, name="timed-db-call", daemon=True)
    thread.start()
    thread.join(bound)
    if thread.is_alive():
        return Timed(False, bound)
    return Timed(True, out["seconds"], out.get("result"), out.get("error"))


@dataclass
class Faulty:
    proxy: FaultProxy
    url: str  # through the proxy
    node_store: SqlStore  # through the proxy, with TIMEOUTS
    store: SqlStore  # direct, for the test's own reads and writes


@pytest.fixture
def faulty(pg_database: str) -> Iterator[Faulty]:
    _truncate_pg(pg_database)
    url = make_url(pg_database)
    with fault_proxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        node_store = SqlStore(create_db_engine(proxied, pool_size=4, options=TIMEOUTS))
        store = SqlStore(pg_database)
        try:
            yield Faulty(proxy, proxied, node_store, store)
        finally:
            proxy.restore()  # frees any call a failing test left hanging
            node_store.dispose()
            store.dispose()


@pytest.fixture
def lock_holder(pg_database: str) -> Iterator[psycopg.Connection[Any]]:
    """A plain connection of the test's, to hold locks the store must wait for."""
    dsn = make_url(pg_database).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as conn:
        yield conn


def options(**overrides: Any) -> EngineOptions:
    # a lease that outlives the faults below: the run is never reaped
    return fast_options(**({"lease_seconds": 15} | overrides))


@pytest.fixture
async def running_node(faulty: Faulty) -> AsyncIterator[Callable[[JobRegistry], Node]]:
    nodes: list[Node] = []

    def start(registry: JobRegistry) -> Node:
        node = Node(faulty.node_store, registry, CLOCK, options(), roles=("worker",), listen=False)
        nodes.append(node)
        return node

    yield start
    faulty.proxy.restore()
    for node in nodes:
        await node.stop()


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry.get("event") == name]


# -- a half-open network -----------------------------------------------------------------


def test_a_store_call_into_a_black_hole_fails_within_the_timeouts_and_recovers(
    faulty: Faulty,
) -> None:
    assert faulty.node_store.run_counts() is not None  # a pooled connection, as in a node
    faulty.proxy.blackhole()

    call = timed(faulty.node_store.run_counts, BLACK_HOLE_BOUND + 5)

    assert call.finished, f"the store call still hangs after {BLACK_HOLE_BOUND + 5} s"
    assert isinstance(call.error, OperationalError), call.error
    assert call.seconds < BLACK_HOLE_BOUND
    # and a second call (no pooled connection left to ping) fails within connect_timeout
    again = timed(faulty.node_store.run_counts, BLACK_HOLE_BOUND + 5)
    assert again.finished and isinstance(again.error, OperationalError)
    assert again.seconds < TIMEOUTS.connect_timeout + 2

    faulty.proxy.restore()
    back = timed(faulty.node_store.run_counts, 5)
    assert back.finished and back.error is None, back.error


def test_the_client_response_timeout_drops_a_connection_whose_server_went_silent(
    faulty: Faulty,
) -> None:
    """Inside a transaction (no ping to save it): the statement itself gives up."""
    # The server's idle-in-transaction timeout would end the session first otherwise.
    engine = create_db_engine(faulty.url, options=replace(TIMEOUTS, idle_in_transaction_timeout=0))
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        faulty.proxy.blackhole()
        call = timed(lambda: conn.execute(text("SELECT 2")), TIMEOUTS.response_timeout + 5)
        assert call.finished, "the statement still hangs"
        assert isinstance(call.error, OperationalError), call.error
        assert "no answer from the database within 1.5 s" in str(call.error)
        assert TIMEOUTS.response_timeout - 0.2 <= call.seconds < TIMEOUTS.response_timeout + 1
        assert conn.invalidated  # dropped, never handed out again
    faulty.proxy.restore()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 3")).scalar() == 3
    engine.dispose()


async def test_a_node_keeps_claiming_and_beating_through_a_black_hole(
    faulty: Faulty, running_node: Callable[[JobRegistry], Node]
) -> None:
    registry = JobRegistry()
    starts: list[int] = []

    @registry.job("long", timeout=60)
    async def long(ctx: JobContext) -> str:
        starts.append(ctx.attempt)
        await ctx.clock.sleep(12)  # the black hole comes and goes while it runs
        return "done"

    node = running_node(registry)
    await node.start()
    worker = node.worker
    assert worker is not None
    run, _ = EngineClient(faulty.store, registry, CLOCK).trigger("long")
    await until(lambda: bool(starts), 10, "the job to start")

    with capture_logs() as logs:
        passes = worker.passes
        faulty.proxy.blackhole()
        await CLOCK.sleep(8)
        passes_in_the_dark = worker.passes - passes
        faulty.proxy.restore()

    # The loops got errors within the timeouts and went round again; a hung loop
    # would show nothing until the restore.
    assert passes_in_the_dark >= 2, passes_in_the_dark
    assert len(events(logs, "worker.claim_failed")) >= 2, logs
    assert len(events(logs, "worker.heartbeat_failed")) >= 2, logs
    await until(lambda: final(faulty.store, run).status in FINAL, 20, "the run to end")
    row = final(faulty.store, run)
    assert (row.status, row.attempt, row.result) == (RunStatus.SUCCEEDED, 1, "done")
    assert starts == [1]


def test_connecting_to_a_black_hole_fails_within_connect_timeout(faulty: Faulty) -> None:
    faulty.proxy.blackhole()
    engine = create_db_engine(faulty.url, options=TIMEOUTS)
    try:
        call = timed(lambda: engine.connect().close(), TIMEOUTS.connect_timeout + 5)
    finally:
        engine.dispose()
    assert call.finished, "connecting still hangs"
    assert isinstance(call.error, OperationalError), call.error
    assert "timeout" in str(call.error)
    assert TIMEOUTS.connect_timeout - 0.2 <= call.seconds < TIMEOUTS.connect_timeout + 1.5


# -- the server's timeouts ---------------------------------------------------------------


def test_the_timeouts_reach_every_connection(faulty: Faulty) -> None:
    with faulty.node_store.engine.connect() as conn:
        shown = {
            name: conn.execute(text(f"SHOW {name}")).scalar()
            for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
        }
        raw: Any = conn.connection.dbapi_connection
        sock = socket.socket(fileno=raw.fileno())
        try:
            keepalive = sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
            tcp = {
                "idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                "interval": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                "count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                "user_timeout_ms": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
            }
        finally:
            sock.detach()  # the socket is libpq's
    assert shown == {
        "statement_timeout": "1s",
        "lock_timeout": "500ms",
        "idle_in_transaction_session_timeout": "1s",
    }
    assert keepalive == 1
    assert tcp == {"idle": 1, "interval": 1, "count": 2, "user_timeout_ms": 2000}


def test_a_statement_longer_than_statement_timeout_is_cancelled(faulty: Faulty) -> None:
    engine = faulty.node_store.engine

    def sleep_long() -> Any:
        with engine.connect() as conn:
            return conn.execute(text("SELECT pg_sleep(10)")).scalar()

    call = timed(sleep_long, 8)
    assert call.finished
    assert isinstance(call.error, OperationalError)
    assert isinstance(call.error.orig, psycopg.errors.QueryCanceled)
    assert "statement timeout" in str(call.error)
    assert call.seconds < TIMEOUTS.statement_timeout + 1
    assert faulty.node_store.run_counts() is not None  # the connection is fine afterwards


def test_migrations_and_pruning_may_run_longer(faulty: Faulty) -> None:
    from duly.engine.store.connect import allow_long_statements

    engine = faulty.node_store.engine
    with engine.begin() as conn, allow_long_statements(conn, 3):
        assert conn.execute(text("SELECT pg_sleep(2)")).scalar() == ""  # past the 1 s default
    with engine.begin() as conn, allow_long_statements(conn):
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "0"
    with engine.begin() as conn:  # SET LOCAL: the next transaction is bounded again
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "1s"


def test_a_store_write_behind_a_held_lock_fails_within_lock_timeout(
    faulty: Faulty, lock_holder: psycopg.Connection[Any]
) -> None:
    registry = JobRegistry()
    registry.job("work")(lambda ctx: None)
    client = EngineClient(faulty.node_store, registry, CLOCK)
    lock_holder.execute("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")  # its transaction stays open

    call = timed(lambda: client.trigger("work"), 8)

    assert call.finished, "the write still waits for the lock"
    assert isinstance(call.error, OperationalError), call.error
    assert isinstance(call.error.orig, psycopg.errors.LockNotAvailable)
    assert call.seconds < TIMEOUTS.lock_timeout + 1
    lock_holder.rollback()
    run, created = client.trigger("work")
    assert created and run.status is RunStatus.QUEUED


async def test_a_node_claims_again_once_a_lock_held_past_lock_timeout_is_released(
    faulty: Faulty,
    running_node: Callable[[JobRegistry], Node],
    lock_holder: psycopg.Connection[Any],
) -> None:
    registry = JobRegistry()

    @registry.job("work", timeout=10)
    def work(ctx: JobContext) -> int:
        return ctx.attempt

    run, _ = EngineClient(faulty.store, registry, CLOCK).trigger("work")
    # Claims lock rows FOR UPDATE: an EXCLUSIVE table lock makes them wait, reads do not.
    lock_holder.execute("LOCK TABLE runs IN EXCLUSIVE MODE")
    with capture_logs() as logs:
        node = running_node(registry)
        await node.start()
        await CLOCK.sleep(2.5)
        assert final(faulty.store, run).status is RunStatus.QUEUED
        lock_holder.rollback()
        await until(lambda: final(faulty.store, run).status in FINAL, 10, "the run to end")

    failed = events(logs, "worker.claim_failed")
    assert failed and all("LockNotAvailable" in str(entry["error"]) for entry in failed), failed
    row = final(faulty.store, run)
    assert (row.status, row.attempt, row.result) == (RunStatus.SUCCEEDED, 1, 1)


def test_a_transaction_left_idle_is_ended_by_the_server_and_the_pool_recovers(
    faulty: Faulty,
) -> None:
    engine = faulty.node_store.engine
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))  # a transaction is open now
        CLOCK.sleep_blocking(TIMEOUTS.idle_in_transaction_timeout + 1)
        with pytest.raises(DBAPIError) as caught:
            conn.execute(text("SELECT 2"))
        assert isinstance(caught.value.orig, psycopg.errors.IdleInTransactionSessionTimeout)
        assert conn.invalidated
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 3")).scalar() == 3
