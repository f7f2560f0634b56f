"""Opening the database: the SQLAlchemy engine, and SQLite's connection and locking settings."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event


def create_db_engine(url: str, *, pool_size: int = 10) -> Engine:
    """An SQLAlchemy engine set up for duly: WAL and ``BEGIN IMMEDIATE`` on SQLite."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30, "isolation_level": None},
            pool_size=pool_size,
            max_overflow=pool_size * 2,
        )
        setup_sqlite(engine)
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size * 2, pool_pre_ping=True)


#: How long a writer waits for SQLite's single write lock before giving up.
SQLITE_LOCK_TIMEOUT = 30.0


def setup_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(SQLITE_LOCK_TIMEOUT * 1000)}")
        cur.close()

    # Writers of this process queue on a Python lock before taking SQLite's: waiting in
    # SQLite's busy handler means sleeping in steps of up to 100 ms, which would cap a
    # busy node at a few hundred transactions a second. Other processes on the same file
    # still meet SQLite's own lock.
    lock = threading.Lock()
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
        if not lock.acquire(timeout=SQLITE_LOCK_TIMEOUT):
            raise TimeoutError(
                "database is locked: no write lock within "
                f"{SQLITE_LOCK_TIMEOUT:g} s (a transaction left open?)"
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
