"""Wake-ups from other nodes: PostgreSQL ``LISTEN duly_runs, duly_schedules``.

The store sends ``NOTIFY`` in the transaction that adds runs or changes schedules; this
service relays each notification to the node's sleeping loops. On SQLite there is no
cross-process signal: loops in this process are woken directly by the store, and other
processes notice within ``max_idle_seconds``.
"""

from __future__ import annotations

from datetime import timedelta

import psycopg

from duly.engine.services.base import Env, Service

__all__ = ["PgNotifier", "libpq_dsn"]

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
