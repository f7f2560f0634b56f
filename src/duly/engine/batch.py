"""The per-item batch helper: a nightly job over many items is a few lines.

:func:`run_batch` calls ``work(item)`` for every item not already done, with

* **bounded concurrency**: at most ``concurrency`` calls in flight (sync ``work`` runs in a
  thread pool of that size, async ``work`` on the loop); an item waiting to retry holds no slot;
* **per-item isolation**: an exception fails that item only, with a code (``classify``);
* **per-item retries**: a retryable failure is tried again after each of ``retry_delays``
  (waited on the job's clock, never ``time.sleep``);
* **resume**: items whose key is in ``done`` are skipped, so a rerun or a retried run
  continues where the last one stopped;
* **results**: outcomes go to ``record`` in chunks (``flush_every`` items or
  ``flush_seconds`` of clock time), from a thread, so it may write to the database; the job's
  progress is reported after each chunk;
* **summary**: counts by outcome and by error code, and the duration;
* **chunks** (optional): with ``work_chunk``, items are handed over ``chunk_size`` at a time
  (one call holds one slot) and the call returns each item's value or exception, so a bank
  or database is asked once per chunk; an item whose outcome is a retryable failure is then
  retried *alone* with ``work``, after the same ``retry_delays``.

Example — check a list of URLs each night, retrying network errors::

    @registry.job("watch")
    async def watch(ctx: JobContext) -> dict[str, Any]:
        summary = await run_batch(ctx, sources, fetch, key=lambda s: s.id,
                                  record=save, concurrency=8, retry_delays=[5, 10])
        return summary.to_json()
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Hashable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from duly.engine.context import JobContext
from duly.engine.errors import JobError

__all__ = ["BatchSummary", "ItemError", "ItemResult", "classify_exception", "run_batch"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class ItemError:
    """Why an item failed: a taxonomy code, a message for people, the trace for engineers."""

    code: str
    message: str
    retryable: bool
    trace: str | None = None


@dataclass(frozen=True, slots=True)
class ItemResult(Generic[T, R]):
    """The outcome of one item: its ``value`` if ``work`` returned, else its ``error``."""

    item: T
    key: Hashable
    value: R | None
    error: ItemError | None
    attempts: int
    finished_at: datetime

    @property
    def ok(self) -> bool:
        """Whether ``work`` returned for this item."""
        return self.error is None


@dataclass
class BatchSummary:
    """What one call of :func:`run_batch` did (items skipped as done are not processed)."""

    started_at: datetime
    completed_at: datetime | None = None
    processed: int = 0
    skipped: int = 0
    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    errors_by_code: Counter[str] = field(default_factory=Counter)

    @property
    def duration(self) -> timedelta:
        """From start to completion (zero while running)."""
        return (self.completed_at or self.started_at) - self.started_at

    def to_json(self) -> dict[str, Any]:
        """A JSON-able summary for a run's result."""
        return {
            "started_at": self.started_at.isoformat(),
            "completed_at": self.completed_at.isoformat() if self.completed_at else None,
            "duration_seconds": round(self.duration.total_seconds(), 3),
            "processed": self.processed,
            "skipped": self.skipped,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "retries": self.retries,
            "errors_by_code": dict(sorted(self.errors_by_code.items())),
        }


def classify_exception(exc: BaseException) -> ItemError:
    """The default ``classify``: a :class:`JobError` keeps its code, anything else is ``INTERNAL``.

    An object with ``code`` and ``transient`` attributes (a banking error) keeps its code and
    is retryable when transient.
    """
    if isinstance(exc, JobError):
        return ItemError(exc.code, exc.message, bool(exc.retryable))
    code, transient = getattr(exc, "code", None), getattr(exc, "transient", None)
    if isinstance(code, str) and isinstance(transient, bool):
        return ItemError(code, getattr(exc, "message", None) or str(exc), transient)
    trace = "".join(traceback.format_exception(exc))
    return ItemError("INTERNAL", f"{type(exc).__name__}: {exc}"[:500], False, trace)


async def run_batch(
    ctx: JobContext,
    items: Iterable[T],
    work: Callable[[T], R] | Callable[[T], Awaitable[R]],
    *,
    key: Callable[[T], Hashable],
    record: Callable[[Sequence[ItemResult[T, R]]], None] | None = None,
    concurrency: int = 10,
    retry_delays: Sequence[float] = (),
    classify: Callable[[BaseException], ItemError] = classify_exception,
    done: Collection[Hashable] = (),
    total: int | None = None,
    flush_every: int = 200,
    flush_seconds: float = 1.0,
    work_chunk: Callable[[Sequence[T]], Sequence[R | BaseException]]
    | Callable[[Sequence[T]], Awaitable[Sequence[R | BaseException]]]
    | None = None,
    chunk_size: int = 100,
) -> BatchSummary:
    """Run ``work`` over ``items`` (see the module's description).

    :param key: an item's identity for ``done`` and in results.
    :param record: called with each chunk of results, in a worker thread; if it raises, the
        batch stops and the error propagates (results already recorded stay recorded).
    :param done: keys to skip (already decided by an earlier run).
    :param total: the number of items, for progress (default: ``len(items)`` if known).
    :param work_chunk: first attempts of up to ``chunk_size`` items in one call, returning one
        outcome per item in order (its value, or the exception ``work`` would have raised);
        if the call itself raises, every item of the chunk failed with that exception.
        Retries still go through ``work``, one item at a time.
    :returns: the summary; ``ctx.check_cancelled()`` is honoured between items.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be ≥ 1")
    if chunk_size < 1:
        raise ValueError("chunk_size must be ≥ 1")
    clock = ctx.clock
    loop = asyncio.get_running_loop()
    summary = BatchSummary(started_at=clock.now())
    if total is None and isinstance(items, Collection):
        total = len(items)
    is_async = inspect.iscoroutinefunction(work)
    chunk_async = work_chunk is not None and inspect.iscoroutinefunction(work_chunk)
    needs_pool = not is_async or (work_chunk is not None and not chunk_async)
    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="duly-batch") if needs_pool else None
    slots = asyncio.Semaphore(concurrency)
    buffer: list[ItemResult[T, R]] = []
    flush_lock = asyncio.Lock()
    last_flush = clock.now()
    finished = 0  # recorded (or skipped) items, for progress
    tasks: set[asyncio.Task[None]] = set()
    crashed: list[BaseException] = []  # an item task that raised (a failing ``record``)

    def on_done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            crashed.append(task.exception())  # type: ignore[arg-type]

    def write(chunk: list[ItemResult[T, R]], done_count: int) -> None:
        if record is not None:  # at most ``flush_every`` results per call
            for start in range(0, len(chunk), flush_every):
                record(chunk[start : start + flush_every])
        ctx.report_progress(done_count, total)

    async def flush(force: bool = False) -> None:
        nonlocal last_flush, finished
        async with flush_lock:
            due = len(buffer) >= flush_every or (
                clock.now() - last_flush >= timedelta(seconds=flush_seconds)
            )
            if not buffer or not (force or due):
                return
            chunk = buffer[:]
            buffer.clear()
            last_flush = clock.now()
            finished += len(chunk)
            await asyncio.to_thread(write, chunk, summary.skipped + finished)

    async def call(item: T) -> R:
        if is_async:
            return await work(item)  # type: ignore[no-any-return,misc]
        return await loop.run_in_executor(pool, work, item)  # type: ignore[arg-type]

    async def call_chunk(chunk: list[T]) -> Sequence[R | BaseException]:
        assert work_chunk is not None
        if chunk_async:
            return await work_chunk(chunk)  # type: ignore[no-any-return,misc]
        return await loop.run_in_executor(pool, work_chunk, chunk)  # type: ignore[arg-type]

    def spawn(coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(on_done)

    def settle(item: T, item_key: Hashable, value: R | None, error: ItemError | None,
               attempt: int) -> None:  # fmt: skip
        summary.processed += 1
        if error is None:
            summary.succeeded += 1
        else:
            summary.failed += 1
            summary.errors_by_code[error.code] += 1
        buffer.append(ItemResult(item, item_key, value, error, attempt, clock.now()))

    async def process_chunk(chunk: list[tuple[T, Hashable]]) -> None:
        # a slot is held on entry
        outcomes: Sequence[R | BaseException]
        try:
            outcomes = await call_chunk([item for item, _ in chunk])
            if len(outcomes) != len(chunk):
                raise RuntimeError(
                    f"work_chunk returned {len(outcomes)} outcomes for {len(chunk)} items"
                )
        except asyncio.CancelledError:
            slots.release()
            raise
        except Exception as exc:
            outcomes = [exc] * len(chunk)
        slots.release()
        for (item, item_key), outcome in zip(chunk, outcomes, strict=True):
            if not isinstance(outcome, BaseException):
                settle(item, item_key, outcome, None, 1)
                continue
            error = classify(outcome)
            if error.retryable and retry_delays:
                spawn(process(item, item_key, failed=error))  # retried alone
            else:
                settle(item, item_key, None, error, 1)
        await flush()

    async def process(item: T, item_key: Hashable, failed: ItemError | None = None) -> None:
        attempt = 0 if failed is None else 1
        while True:  # a slot is held on entry to each pass, except after a failed chunk
            value: R | None = None
            error: ItemError | None = failed
            if failed is None:
                attempt += 1
                try:
                    value = await call(item)
                except asyncio.CancelledError:
                    slots.release()
                    raise
                except Exception as exc:
                    error = classify(exc)
                slots.release()
            failed = None
            if error is not None and error.retryable and attempt <= len(retry_delays):
                summary.retries += 1
                await clock.sleep(retry_delays[attempt - 1])
                await slots.acquire()
                continue
            settle(item, item_key, value, error, attempt)
            await flush()
            return

    try:
        pending: list[tuple[T, Hashable]] = []
        size = chunk_size if work_chunk is not None else 1
        for item in items:
            item_key = key(item)
            if item_key in done:
                summary.skipped += 1
                continue
            pending.append((item, item_key))
            if len(pending) < size:
                continue
            ctx.check_cancelled()
            await slots.acquire()
            if work_chunk is None:
                spawn(process(item, item_key))
            else:
                spawn(process_chunk(pending))
            pending = []
            if crashed:  # surface a failing ``record`` now, not after every item ran
                raise crashed[0]
        if pending:
            ctx.check_cancelled()
            await slots.acquire()
            spawn(process_chunk(pending))
        while tasks:  # retries spawned by chunks join the set while it is awaited
            await asyncio.gather(*list(tasks))
            if crashed:
                raise crashed[0]
        await flush(force=True)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if buffer and not crashed:  # keep what was decided: the next attempt resumes after it
            chunk = buffer[:]
            buffer.clear()
            finished += len(chunk)
            with contextlib.suppress(Exception):
                write(chunk, summary.skipped + finished)
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
    summary.completed_at = clock.now()
    return summary
