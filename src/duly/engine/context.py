"""What a running job sees: :class:`JobContext`."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from duly.clock import Clock
from duly.engine.errors import LeaseLost

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from duly.engine.store.sql import SqlEffects, SqlStore

__all__ = ["Cancelled", "JobContext"]

#: Progress is written at most this often; the last value is also written at completion.
PROGRESS_INTERVAL = timedelta(seconds=1)


class Cancelled(Exception):
    """Raised by :meth:`JobContext.check_cancelled` when an operator cancelled the run."""


class CancelFlag:
    """Set once when an operator cancels a run; a ``threading.Event`` without the waiting.

    One is made per run, and a batch makes hundreds at once: an ``Event`` (a lock and a
    condition) cost more than the rest of the context.
    """

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        """Mark the run cancelled (from any thread)."""
        self._set = True

    def is_set(self) -> bool:
        """Whether the run was cancelled."""
        return self._set


@dataclass
class JobContext:
    """The run a job is executing, and the engine's services it may use.

    :ivar run_id: the run's id.
    :ivar scheduled_for: the nominal instant of the run (UTC).
    :ivar attempt: 1 for the first try.
    :ivar idempotency_key: deterministic per run; pass it to every external effect.
    :ivar args: the run's JSON arguments.
    :ivar log: a structlog logger bound to the run (run_id, job, attempt).
    :ivar clock: the engine's clock; wait with it, never with ``time.sleep``.
    """

    run_id: int
    job_name: str
    scheduled_for: datetime
    attempt: int
    max_attempts: int
    idempotency_key: str
    args: dict[str, Any]
    clock: Clock
    fencing_token: int
    node: str
    _log: Any = field(default=None, repr=False)
    _store: SqlStore | None = field(default=None, repr=False)
    _effects: SqlEffects | None = field(default=None, repr=False)
    _cancel: CancelFlag = field(default_factory=lambda: CancelFlag(), repr=False)
    _last_progress_write: datetime | None = field(default=None, repr=False)
    _lease_lost: bool = field(default=False, repr=False)
    #: the future running the job's code (a task, or a thread's future), while it runs
    _code: Any = field(default=None, repr=False)
    _progress_write: Any = field(default=None, repr=False)  # an async job's write in a thread
    _progress_next: Any = field(default=None, repr=False)  # the latest, once that one is done
    progress: tuple[int, int | None] | None = None

    @property
    def log(self) -> Any:
        """A structlog logger bound to the run (run_id, job, attempt); made on first use."""
        if self._log is None:
            self._log = structlog.get_logger("duly.job").bind(
                run_id=self.run_id, job=self.job_name, attempt=self.attempt
            )
        return self._log

    @property
    def is_last_attempt(self) -> bool:
        """Whether a failure now is final."""
        return self.attempt >= self.max_attempts

    @property
    def cancelled(self) -> bool:
        """Whether an operator asked to cancel this run."""
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        """Raise :class:`Cancelled` if the run was cancelled; long jobs call this between items."""
        if self._cancel.is_set():
            raise Cancelled(f"run {self.run_id} was cancelled")

    @property
    def lease_lost(self) -> bool:
        """Whether the heartbeat found this run's lease taken over (the job should stop)."""
        return self._lease_lost

    def check_lease(self) -> None:
        """Raise :class:`~duly.engine.errors.LeaseLost` unless this node still holds the run.

        Call it just before an external side effect that an idempotency key does not make
        safe to repeat: after a pause longer than the lease (a stop-the-world GC, a frozen
        VM) another node may have taken the run over. It asks the database (one query), so
        a sync job calls it from its thread; it is not free in a tight loop.
        """
        if self._lease_lost:
            raise LeaseLost(f"run {self.run_id}: the lease was lost")
        if self._store is None:
            return
        if not self._store.lease_held(self.node, self.run_id, self.fencing_token, self.clock.now()):
            self._lease_lost = True
            self._cancel.set()
            raise LeaseLost(f"run {self.run_id}: the lease was lost")

    def report_progress(self, done: int, total: int | None = None) -> None:
        """Record that ``done`` of ``total`` items are finished (shown by ``duly runs show``)."""
        self.progress = (done, total)
        now = self.clock.now()
        if self._store is None:
            return
        due = (
            self._last_progress_write is None
            or now - self._last_progress_write >= PROGRESS_INTERVAL
        )
        if due or (total is not None and done >= total):
            self._last_progress_write = now
            write = functools.partial(self._store.run_progress, self.run_id, self.fencing_token,
                                      done, total, now, self._effects)  # fmt: skip
            loop = _running_loop()
            if loop is None or (self._effects is not None and self._effects.opened):
                write()  # a sync job's own thread; or into its open transaction, which is quick
            else:
                self._write_progress_apart(loop, write)

    def _write_progress_apart(self, loop: asyncio.AbstractEventLoop, write: Any) -> None:
        """An async job reports on the event loop: write in a thread, never blocking the loop
        (every other run of the node) on the database. Writes stay in order, the latest wins."""
        if self._progress_write is not None and not self._progress_write.done():
            self._progress_next = write
            return
        self._progress_write = loop.run_in_executor(None, write)
        self._progress_write.add_done_callback(lambda f: self._progress_written(loop, f))

    def _progress_written(self, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            structlog.get_logger("duly.engine").warning(
                "run.progress_not_written", run_id=self.run_id, error=type(fut.exception()).__name__
            )
        write, self._progress_next = self._progress_next, None
        if write is not None:
            self._write_progress_apart(loop, write)

    async def _progress_flushed(self) -> None:
        """Wait for progress writes handed to a thread (before the run's outcome is written)."""
        while self._progress_write is not None and not self._progress_write.done():
            await asyncio.wait({self._progress_write})
            await asyncio.sleep(0)  # let the done callback start the next write

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """The database transaction the run completes in.

        Statements executed on the yielded connection commit atomically with the run's
        success, and are rolled back if the job then fails or the lease was lost (the
        fencing check fails). Use it as the job's last step: on SQLite it holds the
        database's write lock until the run completes.
        """
        if self._effects is None:
            raise RuntimeError("this context has no store; transaction() needs a running engine")
        yield self._effects.connection


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
