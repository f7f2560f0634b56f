"""Running a job's code for one attempt (or one batch of runs) under the job's timeout.

An async job runs as a task and is cancelled at its timeout. A sync job runs in a pool
thread, which Python cannot stop: at its timeout the attempt fails ``JOB_TIMEOUT`` and the
thread is *abandoned*, counted by job until it really returns, so that the worker keeps
its slot and its place under the job's ``max_concurrency`` taken meanwhile (and the pool
never holds more threads than the node's ``concurrency``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from duly.clock import Clock
from duly.engine.context import JobContext
from duly.engine.registry import JobDefinition
from duly.engine.services.outcomes import (
    Outcome,
    outcome_from,
    outcome_of,
    run_batch,
    run_sync,
)
from duly.engine.states import RunStatus
from duly.engine.store.plumbing import SqlEffects

__all__ = ["JobRunner"]


class JobRunner:
    """Runs attempts' code for one worker: its thread pool and its abandoned threads.

    :param on_thread_ended: called on the event loop when an abandoned thread returns (the
        worker may claim again).
    :param claims_settled: awaited before a timed-out sync attempt's outcome is returned,
        so no claim computed before the abandonment is still in flight.
    """

    def __init__(
        self,
        clock: Clock,
        log: Any,
        concurrency: int,
        *,
        on_thread_ended: Callable[[], None],
        claims_settled: Callable[[], Awaitable[Any]],
    ) -> None:
        self._clock = clock
        self.log = log
        self._concurrency = concurrency
        self._on_thread_ended = on_thread_ended
        self._claims_settled = claims_settled
        self.abandoned: Counter[str] = Counter()  # timed-out sync threads still running, by job
        self._threads = self._new_pool()
        self._closed = False

    def _new_pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix="duly-job")

    def open(self) -> None:
        """A new thread pool if the last was closed (the worker started over)."""
        if self._closed:
            self._threads = self._new_pool()
            self._closed = False

    def close(self) -> None:
        """Close the pool without waiting for threads (abandoned ones run on)."""
        self._threads.shutdown(wait=False, cancel_futures=True)
        self._closed = True

    async def attempt(self, job: JobDefinition, ctx: JobContext) -> Outcome:
        """Run one attempt's code (async: a task; sync: a pool thread) until it returns or
        its job's timeout; a sync attempt past its timeout is abandoned."""
        deadline = self._clock.now() + job.timeout
        thread: Future[Any] | None = None
        if job.is_async:
            work: asyncio.Future[Any] = asyncio.ensure_future(job.func(ctx))
            ctx._code = work
        else:
            thread = self._threads.submit(run_sync, job, ctx)
            work = asyncio.wrap_future(thread)
            ctx._code = thread
        timer = asyncio.ensure_future(self._clock.sleep_until(deadline))
        try:
            done, _ = await asyncio.wait({work, timer}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            if job.is_async:
                work.cancel()  # the attempt was stopped (shutdown): stop its code with it
            raise
        finally:
            timer.cancel()
        if work not in done:
            ctx._cancel.set()
            work.cancel()
            if job.is_async:
                await asyncio.gather(work, return_exceptions=True)
            if thread is not None:
                await self._abandon(job.name, thread)
            return Outcome(
                RunStatus.FAILED,
                code="JOB_TIMEOUT",
                abandoned=thread is not None,
                message=f"attempt exceeded the job's timeout of {job.timeout}"
                + ("; its thread was abandoned and is still running" if thread else ""),
            )
        return outcome_of(work, ctx)

    async def _abandon(self, job_name: str, thread: Future[Any]) -> None:
        """Count a timed-out sync attempt's thread until it really ends.

        Python cannot stop a thread: it keeps its pool thread and, in effect, its slot and
        its place under the job's concurrency limit. Counting it keeps the node from
        claiming work that would only queue behind it, and from running a
        ``max_concurrency=1`` job beside its own abandoned attempt.

        Returns once no claim is in flight: a claim whose limits were computed before
        this count, and whose query would run after the attempt's outcome is written (the
        run no longer counted as running), could take one run too many.
        """
        loop = asyncio.get_running_loop()
        self.abandoned[job_name] += 1
        self.log.warning("run.thread_abandoned", job=job_name,
                         abandoned_threads=sum(self.abandoned.values()))  # fmt: skip

        def ended(_: Future[Any]) -> None:
            loop.call_soon_threadsafe(self._abandoned_ended, job_name)

        thread.add_done_callback(ended)
        await self._claims_settled()

    def _abandoned_ended(self, job_name: str) -> None:
        self.abandoned[job_name] -= 1
        if self.abandoned[job_name] <= 0:
            del self.abandoned[job_name]
        self.log.info("run.abandoned_thread_ended", job=job_name)
        self._on_thread_ended()

    @property
    def abandoned_threads(self) -> int:
        """Threads of timed-out sync attempts still running: they hold slots until they end."""
        return sum(self.abandoned.values())

    def saturated(self, jobs: Iterable[JobDefinition]) -> frozenset[str]:
        """The jobs whose abandoned threads alone fill their ``max_concurrency``."""
        return frozenset(
            j.name
            for j in jobs
            if j.max_concurrency is not None and self.abandoned[j.name] >= j.max_concurrency
        )

    async def attempt_batch(
        self, job: JobDefinition, ctxs: list[JobContext], effects: SqlEffects
    ) -> list[Outcome]:
        """Run a batch job's code for ``ctxs`` in one thread; one outcome per run."""
        assert job.batch is not None
        deadline = self._clock.now() + job.timeout
        thread = self._threads.submit(run_batch, job, ctxs, effects)
        work = asyncio.wrap_future(thread)
        for ctx in ctxs:
            ctx._code = thread
        timer = asyncio.ensure_future(self._clock.sleep_until(deadline))
        try:
            done, _ = await asyncio.wait({work, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        if work not in done:
            for ctx in ctxs:
                ctx._cancel.set()
            await self._abandon(job.name, thread)
            timeout = Outcome(RunStatus.FAILED, code="JOB_TIMEOUT", abandoned=True,
                              message=f"batch exceeded the job's timeout of {job.timeout}; its "
                                      "thread was abandoned and is still running")  # fmt: skip
            return [timeout] * len(ctxs)
        if work.exception() is not None:
            return [outcome_of(work, ctxs[0])] * len(ctxs)
        results = list(work.result())
        if len(results) != len(ctxs):
            wrong = Outcome(RunStatus.FAILED, code="INTERNAL", retryable=False,
                            message=f"batch job returned {len(results)} outcomes for "
                                    f"{len(ctxs)} runs")  # fmt: skip
            return [wrong] * len(ctxs)
        return [
            outcome_from(None, value, ctx)
            if isinstance(value, BaseException)
            else outcome_from(value, None, ctx)
            for value, ctx in zip(results, ctxs, strict=True)
        ]
