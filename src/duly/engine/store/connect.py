"""Opening the database: the SQLAlchemy engine, PostgreSQL's timeouts, SQLite's locking.

On PostgreSQL every connection is bounded so that no loop of a node can hang on the
database, whatever the network does:

* ``connect_timeout`` bounds opening a connection;
* the server's ``statement_timeout``, ``lock_timeout`` and
  ``idle_in_transaction_session_timeout`` end a slow statement, a wait for a lock, and a
  transaction left open by its client, with a clean error;
* TCP keepalives and ``tcp_user_timeout`` find a peer that is gone (a host or a network
  that died without closing the connection);
* the client's response timeout (:class:`BoundedConnection`) gives up on a server that
  does not answer at all. Keepalives cannot see that case when something between duly and
  the server still answers for it at the TCP level (PgBouncer, HAProxy, a cloud load
  balancer in front of a server that is gone): the proxy's kernel acknowledges every
  packet while no reply ever comes.

Statements that may legitimately run longer (migrations, pruning) say so with
:func:`allow_long_statements`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.abc import PQGen
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError

__all__ = [
    "SQLITE_LOCK_TIMEOUT",
    "BoundedConnection",
    "ConnectOptions",
    "allow_long_statements",
    "create_db_engine",
    "pg_connect_params",
    "setup_sqlite",
]

RV = TypeVar("RV")

#: How long a writer waits for SQLite's single write lock before giving up (the default).
SQLITE_LOCK_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    """How connections are opened and bounded; seconds throughout, ``0``: duly sets no limit.

    The defaults are those of the ``database`` settings (see ``docs/configuration.md``
    for the reason behind each); the PostgreSQL ones are ignored on SQLite.
    """

    connect_timeout: int = 5
    statement_timeout: float = 30.0
    lock_timeout: float = 10.0
    idle_in_transaction_timeout: float = 60.0
    response_timeout: float = 45.0
    keepalives_idle: int = 10
    keepalives_interval: int = 5
    keepalives_count: int = 3
    tcp_user_timeout: float = 25.0
    pool_timeout: float = 10.0
    pool_recycle: float = 1800.0
    sqlite_busy_timeout: float = SQLITE_LOCK_TIMEOUT


def _ms(seconds: float) -> int:
    """Milliseconds for a PostgreSQL setting; a positive value never rounds down to "off"."""
    return max(1, round(seconds * 1000)) if seconds > 0 else 0


def pg_connect_params(options: ConnectOptions) -> dict[str, str]:
    """The libpq parameters that carry ``options`` to every PostgreSQL connection."""
    server = {
        "statement_timeout": _ms(options.statement_timeout),
        "lock_timeout": _ms(options.lock_timeout),
        "idle_in_transaction_session_timeout": _ms(options.idle_in_transaction_timeout),
    }
    params = {
        "connect_timeout": str(options.connect_timeout),
        "keepalives": "1",
        "keepalives_idle": str(options.keepalives_idle),
        "keepalives_interval": str(options.keepalives_interval),
        "keepalives_count": str(options.keepalives_count),
        "tcp_user_timeout": str(_ms(options.tcp_user_timeout)),
    }
    # Sent in the startup packet, so they hold from the first statement of every
    # connection. A limit of 0 is not sent at all: the server's own setting (a role's or a
    # database's, ``ALTER ROLE … SET``) then applies, as it must behind PgBouncer, which
    # refuses ``options`` unless told to ignore it.
    sent = [f"-c {name}={value}" for name, value in server.items() if value]
    if sent:
        params["options"] = " ".join(sent)
    return params


class BoundedConnection(psycopg.Connection[Any]):
    """A psycopg connection that waits for an answer at most :attr:`response_timeout` s.

    When the server does not answer in time, the connection is closed (what was under way
    is in an unknown state) and :class:`psycopg.OperationalError` is raised; SQLAlchemy
    sees a closed connection, drops it from the pool, and the next checkout opens a new one.
    """

    #: Seconds to wait for any answer of the server; ``0``: no limit.
    response_timeout: float = 0.0

    def wait(self, gen: PQGen[RV], interval: float = 0.1, timeout: float | None = None) -> RV:
        limit = self.response_timeout
        if timeout is not None or limit <= 0:  # psycopg's own bounded waits stay as they are
            return super().wait(gen, interval, timeout)
        try:
            return super().wait(gen, interval, limit)
        except pg_errors._WaitTimeout:
            self.pgconn.finish()
            raise psycopg.OperationalError(
                f"no answer from the database within {limit:g} s "
                "(database.response_timeout_seconds): connection dropped"
            ) from None


@contextlib.contextmanager
def allow_long_statements(conn: Connection, seconds: float = 0) -> Iterator[None]:
    """Let statements on ``conn`` run up to ``seconds`` (``0``: no limit) until the transaction ends.

    For the few statements that may legitimately outlast ``statement_timeout`` (schema
    migrations, bulk deletes). ``lock_timeout`` still applies: waiting behind other
    transactions for long is never wanted. Use it at the start of a transaction: the
    server's limit is lifted with ``SET LOCAL`` (it ends with the transaction), the
    client's response timeout for the block. Nothing to do on SQLite.
    """
    if conn.dialect.name != "postgresql":
        yield
        return
    conn.exec_driver_sql(f"SET LOCAL statement_timeout = {_ms(seconds)}")
    raw: Any = conn.connection.dbapi_connection
    if not isinstance(raw, BoundedConnection):
        yield
        return
    before = raw.response_timeout
    # Past the server's own limit, so its clean error comes first (as the settings do).
    raw.response_timeout = seconds + 15.0 if seconds > 0 and before > 0 else 0.0
    try:
        yield
    finally:
        raw.response_timeout = before


def create_db_engine(
    url: str, *, pool_size: int = 10, options: ConnectOptions | None = None
) -> Engine:
    """An SQLAlchemy engine set up for duly.

    PostgreSQL: every connection bounded by ``options`` (see the module), checked before
    use when it sat idle in the pool (see :func:`_ping_when_idle`) and replaced after
    ``pool_recycle`` s. SQLite: WAL, ``BEGIN
    IMMEDIATE`` and a busy timeout.
    """
    opts = options or ConnectOptions()
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={
                "check_same_thread": False,
                "timeout": opts.sqlite_busy_timeout,
                "isolation_level": None,
            },
            pool_size=pool_size,
            max_overflow=pool_size * 2,
        )
        setup_sqlite(engine, opts.sqlite_busy_timeout)
        return engine
    # The network parameters go in the URL so that every connection made from
    # ``engine.url`` has them, the node's LISTEN connection included; ``options`` (the
    # server's timeouts) cannot, as a rendered URL writes its spaces as ``+``, which libpq
    # does not read back. Parameters already in the URL win: whoever wrote them meant them.
    parsed = make_url(url)
    params: dict[str, Any] = pg_connect_params(opts)
    server_options = params.pop("options", "")
    given = dict(parsed.query)
    if "options" in given:
        server_options = f"{server_options} {given['options']}".strip()
    engine = create_engine(
        parsed.update_query_dict(params | given),
        connect_args={"options": server_options} if server_options else {},
        pool_size=pool_size,
        max_overflow=pool_size * 2,
        pool_recycle=opts.pool_recycle,
        pool_timeout=opts.pool_timeout,
    )
    response_timeout = opts.response_timeout
    _ping_when_idle(engine)

    @event.listens_for(engine, "do_connect")
    def _connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> BoundedConnection:
        conn = BoundedConnection.connect(*cargs, **cparams)
        conn.response_timeout = response_timeout
        return conn

    return engine


#: A pooled connection unused for this long is checked before it is handed out.
IDLE_PING_SECONDS = 2.0


def _ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection on checkout only if it sat idle ``IDLE_PING_SECONDS``.

    ``pool_pre_ping`` checks every checkout: a round trip before each transaction, on the
    hot path a third of a trigger's cost. A connection used moments ago was answering
    then; one that sat in the pool (over a failover, a restart, a proxy's idle cut) is
    checked and, if dead, replaced before anyone uses it. A connection lost in between
    fails its statement, is dropped from the pool, and the caller's retry takes a new one.
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        record.info["duly_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("duly_idle_since")
        if since is None or time.monotonic() - since < IDLE_PING_SECONDS:
            return
        try:
            with dbapi_conn.cursor() as cur:
                cur.execute("SELECT 1")
            if not dbapi_conn.autocommit:
                dbapi_conn.rollback()
        except (psycopg.Error, OSError) as exc:
            raise DisconnectionError(f"pooled connection is gone: {exc}") from exc


class FairLock:
    """A lock its waiters get in the order they asked for it."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._next_ticket = 0  # handed to the next thread that asks
        self._serving = 0  # the ticket whose holder may have the lock
        self._abandoned: set[int] = set()  # tickets of waiters that gave up

    def acquire(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the lock, behind those who asked first."""
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            if self._cond.wait_for(lambda: self._serving == ticket, timeout):
                return True
            # Gave up: the turn is skipped when it comes (or now, if it just came).
            self._abandoned.add(ticket)
            self._skip_abandoned()
            return False

    def release(self) -> None:
        """Let the next waiter in."""
        with self._cond:
            self._serving += 1
            self._skip_abandoned()

    def _skip_abandoned(self) -> None:
        while self._serving in self._abandoned:
            self._abandoned.discard(self._serving)
            self._serving += 1
        self._cond.notify_all()


def setup_sqlite(engine: Engine, lock_timeout: float = SQLITE_LOCK_TIMEOUT) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(lock_timeout * 1000)}")
        cur.close()

    # Writers of this process queue on a Python lock before taking SQLite's: waiting in
    # SQLite's busy handler means sleeping in steps of up to 100 ms, which would cap a
    # busy node at a few hundred transactions a second. Other processes on the same file
    # still meet SQLite's own lock. The lock is first come, first served: a heartbeat
    # waiting behind busy jobs' effects transactions gets its turn (a plain lock may hand
    # it to the same few threads again and again, until the node's leases run out).
    lock = FairLock()
    holders: set[int] = set()
    holders_guard = threading.Lock()

    def release(proxied: Any) -> None:
        with holders_guard:
            held = id(proxied) in holders
            holders.discard(id(proxied))
        if held:
            lock.release()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # One writer at a time, decided when the transaction starts rather than at its
        # first write, so two processes on one file never deadlock on lock upgrades.
        if conn.get_execution_options().get("duly_readonly", False):
            conn.exec_driver_sql("BEGIN")
            return
        if not lock.acquire(timeout=lock_timeout):
            raise TimeoutError(
                "database is locked: no write lock within "
                f"{lock_timeout:g} s (a transaction left open?)"
            )
        proxied = conn.connection
        with holders_guard:
            holders.add(id(proxied))
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            release(proxied)
            raise

    dialect = engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(proxied: Any) -> None:
        try:
            commit(proxied)
        finally:
            release(proxied)

    def do_rollback(proxied: Any) -> None:
        try:
            rollback(proxied)
        finally:
            release(proxied)

    dialect.do_commit = do_commit  # type: ignore[method-assign,assignment]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign,assignment]
