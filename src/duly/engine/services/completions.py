"""Writing outcomes in batches: every outcome queued while one write runs goes in the next.

One transaction for many runs instead of one each keeps a busy node's writes from falling
behind its claims.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from duly.engine.services.base import Env, backoff_seconds
from duly.engine.store.base import CompleteParams

__all__ = ["CompletionWriter", "log_written"]


class CompletionWriter:
    """Queues outcomes and writes them together; ``run()`` is the writing loop."""

    def __init__(self, env: Env, log: structlog.typing.FilteringBoundLogger) -> None:
        self.env = env
        self.log = log
        self._queue: list[tuple[list[CompleteParams], asyncio.Future[list[bool]]]] = []
        self._ready = asyncio.Event()
        self._failures = 0

    async def write_one(self, params: CompleteParams) -> bool:
        """Queue an outcome for the next batch write; ``False`` if the lease was lost."""
        (written,) = await self.write(params=[params])
        return written

    async def write(self, params: list[CompleteParams]) -> list[bool]:
        """Queue outcomes for the next batch write; ``False`` where the lease was lost."""
        done: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._queue.append((params, done))
        self._ready.set()
        return await done

    async def run(self) -> None:
        """Write queued outcomes, all that gathered during the previous write at once."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            batch, self._queue = self._queue, []
            if not batch:
                continue
            flat = [p for params, _ in batch for p in params]
            try:
                rows = await self.env.db(self.env.store.run_complete_many, flat)
            except Exception as exc:
                # The database is away. The outcomes stay queued (first in line) and are
                # written when it answers: the fenced write then tells which leases were
                # lost meanwhile. Dropping them would run the jobs a second time.
                self._failures += 1
                delay = backoff_seconds(self._failures)
                self.log.warning("runs.complete_failed", count=len(flat), failures=self._failures,
                                 retry_in_s=delay, error=f"{type(exc).__name__}")  # fmt: skip
                self._queue = batch + self._queue
                await self.env.clock.sleep(delay)
                self._ready.set()
                continue
            self._failures = 0
            log_written(self.log, "runs.completed", flat, rows)
            at = 0
            for params, done in batch:
                if not done.done():
                    done.set_result(rows[at : at + len(params)])
                at += len(params)


def log_written(
    log: Any, event: str, params: list[CompleteParams], written: list[bool], **extra: Any
) -> None:
    """One info line per write of outcomes: how many, by status, and leases lost."""
    statuses: dict[str, int] = {}
    for p, ok in zip(params, written, strict=True):
        if ok:
            statuses[p.status.value] = statuses.get(p.status.value, 0) + 1
    lost = len(written) - sum(statuses.values())
    log.info(event, count=len(params), statuses=statuses, leases_lost=lost, **extra)
