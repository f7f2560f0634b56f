"""Wake-ups from other nodes and processes.

* PostgreSQL: ``LISTEN duly_runs, duly_schedules``. The store sends ``NOTIFY`` in the
  transaction that adds runs or changes schedules; :class:`PgNotifier` relays each
  notification to the node's sleeping loops.
* SQLite has no cross-process signal. Loops in this process are woken directly by the
  store; :class:`SqliteWatcher` notices another process's commit by polling the file's
  ``PRAGMA data_version`` every few milliseconds (a read of a counter in shared memory,
  microseconds), and wakes the worker: a run another process enqueues starts within the
  polling interval instead of ``max_idle_seconds``.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import psycopg

from duly.engine.services.base import Env, Service

__all__ = ["SQLITE_POLL_SECONDS", "PgNotifier", "SqliteWatcher", "libpq_dsn"]

CHANNELS = ("runs", "schedules")


def libpq_dsn(sqlalchemy_url: str) -> str:
    """The libpq connection string of an SQLAlchemy PostgreSQL URL."""
    from sqlalchemy.engine import make_url

    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class PgNotifier(Service):
    """Listens on PostgreSQL channels and wakes the node's loops."""

    name = "notifier"
    cancel_on_stop = True

    def __init__(self, env: Env, dsn: str) -> None:
        super().__init__(env)
        self._dsn = dsn

    async def run(self) -> None:
        """Listen, reconnecting after a lost connection (waking everyone, as news may be missed).

        :meth:`Node.stop` cancels this loop: waiting on the socket has no pass to finish,
        and cancelling closes the connection through ``async with``.
        """
        while not self.stopping.is_set():
            try:
                await self._listen()
            except (psycopg.Error, OSError) as exc:
                self.log.warning("notifier.reconnect", error=type(exc).__name__)
                for channel in CHANNELS:
                    self.env.wake(channel)
                retry_at = self.env.clock.now() + timedelta(seconds=1)
                await self.env.clock.sleep_until(retry_at, wake=self.stopping)

    async def _listen(self) -> None:
        async with await psycopg.AsyncConnection.connect(self._dsn, autocommit=True) as conn:
            for channel in CHANNELS:
                await conn.execute(f"LISTEN duly_{channel}")
            self._begin_pass()
            self._mark_pass()
            async for note in conn.notifies():
                self.env.wake(note.channel.removeprefix("duly_"))


#: How often :class:`SqliteWatcher` reads the database's change counter.
SQLITE_POLL_SECONDS = 0.002


class SqliteWatcher(Service):
    """Wakes the node's worker when the SQLite file changed (another process committed).

    ``data_version`` changes with any other connection's commit, this node's own included:
    a worker woken by its own write finds nothing new and sleeps again, one cheap pass.
    """

    name = "sqlite-watcher"
    cancel_on_stop = True

    def __init__(self, env: Env, path: str, interval: float = SQLITE_POLL_SECONDS) -> None:
        super().__init__(env)
        self._path = path
        self._interval = interval

    async def run(self) -> None:
        """Poll until stopped; a failed read (the file away) is retried a second later."""
        while not self.stopping.is_set():
            try:
                await self._watch()
            except sqlite3.Error as exc:
                self.log.warning("sqlite_watcher.retry", error=type(exc).__name__)
                await self.env.clock.sleep(1.0)

    async def _watch(self) -> None:
        # Autocommit (no transaction held open): each read sees the latest commit.
        conn = sqlite3.connect(f"file:{self._path}?mode=ro", uri=True, isolation_level=None,
                               check_same_thread=False)  # fmt: skip
        try:
            seen = conn.execute("PRAGMA data_version").fetchone()[0]
            self._begin_pass()
            self._mark_pass()
            while not self.stopping.is_set():
                await self.env.clock.sleep(self._interval)
                version = conn.execute("PRAGMA data_version").fetchone()[0]
                if version != seen:
                    seen = version
                    self.env.wake("runs")
        finally:
            conn.close()
