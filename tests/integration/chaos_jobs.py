"""The jobs of the chaos test (``test_chaos.py``), imported by its ``duly worker`` processes.

Each execution is recorded in ``chaos_executions`` on a connection straight to PostgreSQL
(``CHAOS_RECORD_URL``), not through the node's fault proxy and not in the run's transaction,
so the record survives the faults the test injects and shows what really ran, when:

* ``started_at``: just before the check that this node holds the lease, as the job starts;
* ``held_until``: just before the last successful lease check (before the effect); two
  executions of one run must never both have held it at once;
* ``ended_at`` and ``outcome``: when the job's code stopped (NULL if its process was killed).

The effect, one row in ``chaos_effects`` (no unique key, so a duplicate shows), is written
through ``ctx.transaction()``: it must commit with the run's success and only then.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine, create_engine, text

import duly
from duly.clock import SystemClock
from duly.engine.retry import RetryPolicy

__all__ = ["HANG_TIMEOUT", "JOBS", "LONG_SECONDS"]

CLOCK = SystemClock()

#: The long jobs run this long: more than the test's lease, so they live on heartbeats.
LONG_SECONDS = 5.0
#: The hanging jobs' timeout; their first attempt hangs well past it.
HANG_TIMEOUT = 1.5
HANG_SECONDS = 4.0
STEP = 0.2
# Plenty of quick retries: a run loses attempts to kills, stops and outages, and the test
# wants every run to end succeeded so that its effect can be counted exactly once.
RETRY = RetryPolicy.fixed([0.2] * 14)

_engine: Engine | None = None
_engine_lock = threading.Lock()


def _recorder() -> Engine:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = create_engine(os.environ["CHAOS_RECORD_URL"], pool_size=2, max_overflow=16)
        return _engine


def _now() -> datetime:
    # The wall clock, as the engine's rows have it: the test compares instants across processes.
    return CLOCK.now()


class Execution:
    """One execution of a job: its record, the lease checks and the effect."""

    def __init__(self, ctx: duly.JobContext) -> None:
        self.ctx = ctx
        self.id: int | None = None

    def start(self) -> None:
        at = _now()
        self.ctx.check_lease()  # the DB says we hold it: the execution starts holding it
        with _recorder().begin() as conn:
            self.id = conn.execute(
                text(
                    "INSERT INTO chaos_executions (run_id, attempt, fencing_token, job, node,"
                    " pid, started_at, held_until) VALUES (:r, :a, :t, :j, :n, :p, :s, :s)"
                    " RETURNING id"
                ),
                {"r": self.ctx.run_id, "a": self.ctx.attempt, "t": self.ctx.fencing_token,
                 "j": self.ctx.job_name, "n": self.ctx.node, "p": os.getpid(), "s": at},
            ).scalar_one()  # fmt: skip

    def stop_if_told(self) -> None:
        """The engine tells a job to stop (lease lost, timeout) through its cancel flag."""
        if self.ctx.cancelled or self.ctx.lease_lost:
            raise duly.JobError("STOPPED", "told to stop", retryable=True)

    def effect(self) -> None:
        at = _now()
        self.ctx.check_lease()  # the side effect only while the lease is held
        self._update("held_until = :at", at=at)
        with self.ctx.transaction() as conn:
            conn.execute(
                text("INSERT INTO chaos_effects (run_id, attempt, node) VALUES (:r, :a, :n)"),
                {"r": self.ctx.run_id, "a": self.ctx.attempt, "n": self.ctx.node},
            )

    def end(self, outcome: str) -> None:
        if self.id is not None:
            self._update("ended_at = :at, outcome = :o", at=_now(), o=outcome)

    def _update(self, assignments: str, **values: object) -> None:
        with _recorder().begin() as conn:
            conn.execute(
                text(f"UPDATE chaos_executions SET {assignments} WHERE id = :id"),
                {"id": self.id, **values},
            )


def _outcome_of(exc: BaseException | None) -> str:
    if exc is None:
        return "done"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, duly.JobError):
        return "stopped"
    return type(exc).__name__


def _sync(seconds: float, hang: bool) -> Callable[[duly.JobContext], dict[str, int]]:
    def body(ctx: duly.JobContext) -> dict[str, int]:
        ex = Execution(ctx)
        outcome = "done"
        try:
            ex.start()
            if hang and ctx.attempt == 1:
                # A hung call: deaf to the engine, it outlives the timeout; the effect it then
                # writes must be rolled back with its abandoned attempt.
                ctx.clock.sleep_blocking(HANG_SECONDS)
                with ctx.transaction() as conn:
                    conn.execute(
                        text("INSERT INTO chaos_effects (run_id, attempt, node)"
                             " VALUES (:r, :a, :n)"),
                        {"r": ctx.run_id, "a": ctx.attempt, "n": ctx.node},
                    )  # fmt: skip
                outcome = "hung"
                return {"attempt": ctx.attempt}
            left = float(ctx.args.get("seconds", seconds))
            while left > 0:
                ctx.clock.sleep_blocking(min(STEP, left))
                left -= STEP
                ex.stop_if_told()
            ex.effect()
        except BaseException as exc:
            outcome = _outcome_of(exc)
            raise
        finally:
            ex.end(outcome)
        return {"attempt": ctx.attempt}

    return body


def _async(seconds: float, hang: bool) -> Callable[[duly.JobContext], object]:
    async def body(ctx: duly.JobContext) -> dict[str, int]:
        ex = Execution(ctx)
        error: BaseException | None = None
        try:
            await asyncio.to_thread(ex.start)
            if hang and ctx.attempt == 1:
                await ctx.clock.sleep(HANG_SECONDS * 10)  # the engine cancels it at its timeout
            left = float(ctx.args.get("seconds", seconds))
            while left > 0:
                await ctx.clock.sleep(min(STEP, left))
                left -= STEP
                ex.stop_if_told()
            await asyncio.to_thread(ex.effect)
        except BaseException as exc:
            error = exc
            raise
        finally:
            await asyncio.shield(asyncio.to_thread(ex.end, _outcome_of(error)))
        return {"attempt": ctx.attempt}

    return body


#: name → (function, timeout seconds)
JOBS: dict[str, tuple[Callable[[duly.JobContext], object], float]] = {
    "chaos.quick": (_sync(0.1, hang=False), 30),
    "chaos.aquick": (_async(0.1, hang=False), 30),
    "chaos.long": (_sync(LONG_SECONDS, hang=False), 60),
    "chaos.along": (_async(LONG_SECONDS, hang=False), 60),
    "chaos.hang": (_sync(0.1, hang=True), HANG_TIMEOUT),
    "chaos.ahang": (_async(0.1, hang=True), HANG_TIMEOUT),
}

for _name, (_func, _timeout) in JOBS.items():
    duly.job(_name, timeout=_timeout, retry=RETRY)(_func)
