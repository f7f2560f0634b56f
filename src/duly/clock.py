"""Time for everything in duly that reads or waits on it.

Nothing else in duly calls ``datetime.now()``, ``time.sleep()`` or ``asyncio.sleep()``
with a real duration: components take a :class:`Clock`. Production uses
:class:`SystemClock`; tests and ``duly simulate`` use :class:`ManualClock`, whose time
moves only when told to, so a week of schedules runs in seconds.

All instants are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

__all__ = ["Clock", "ManualClock", "SystemClock", "WaitTrackingClock", "ensure_utc"]


def ensure_utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime; a naive value is refused.

    :raises ValueError: if ``value`` has no timezone.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()} where an aware instant is needed")
    return value.astimezone(UTC)


@runtime_checkable
class Clock(Protocol):
    """The source of the current instant and of waiting."""

    def now(self) -> datetime:
        """The current instant, aware UTC."""
        ...

    async def sleep_until(self, when: datetime, wake: asyncio.Event | None = None) -> bool:
        """Wait until ``when`` has passed, or until ``wake`` is set.

        :returns: ``True`` if ``when`` was reached, ``False`` if woken early by ``wake``.
        """
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...

    def sleep_blocking(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time from a worker thread."""
        ...


async def _wait_event_or(waiter: asyncio.Future[None], wake: asyncio.Event | None) -> bool:
    """Wait for ``waiter`` or ``wake``; report whether ``waiter`` won."""
    if wake is None:
        await waiter
        return True
    if wake.is_set():
        waiter.cancel()
        return False
    wake_task: asyncio.Future[Any] = asyncio.ensure_future(wake.wait())
    both: set[asyncio.Future[Any]] = {waiter, wake_task}
    try:
        done, _ = await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for fut in both:
            if not fut.done():
                fut.cancel()
    return waiter in done and not wake.is_set()


class SystemClock:
    """The real wall clock."""

    def now(self) -> datetime:
        """The current instant from the operating system, aware UTC."""
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime, wake: asyncio.Event | None = None) -> bool:
        """Wait until ``when`` (re-checked after each wake-up, as clocks jump) or ``wake``."""
        while True:
            delay = (ensure_utc(when) - self.now()).total_seconds()
            if delay <= 0:
                return True
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            # Long waits are cut in pieces so a wall-clock jump is noticed within a minute.
            handle = loop.call_later(min(delay, 60.0), _resolve, waiter)
            try:
                if not await _wait_event_or(waiter, wake):
                    return False
            finally:
                handle.cancel()

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of real time."""
        await asyncio.sleep(max(seconds, 0.0))

    def sleep_blocking(self, seconds: float) -> None:
        """Block the calling thread ``seconds`` of real time."""
        time.sleep(max(seconds, 0.0))


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class ManualClock:
    """A clock whose time moves only by :meth:`advance` or :meth:`set`.

    Waiters (async or blocking) are released, in order of their deadline, when the
    manual time reaches their deadline. Safe to drive from another thread.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = ensure_utc(start) if start is not None else datetime(2026, 1, 1, tzinfo=UTC)
        self._lock = threading.Lock()
        self._waiters: list[tuple[datetime, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        """The manual instant."""
        with self._lock:
            return self._now

    def set(self, when: datetime) -> None:
        """Move time to ``when`` (never backwards) and release waiters it passes."""
        when = ensure_utc(when)
        due: list[Callable[[], None]] = []
        with self._lock:
            if when < self._now:
                raise ValueError(f"a manual clock cannot go back from {self._now} to {when}")
            self._now = when
            while self._waiters and self._waiters[0][0] <= when:
                due.append(heapq.heappop(self._waiters)[2])
        for release in due:
            release()

    def advance(self, delta: timedelta | float) -> datetime:
        """Move time forward by ``delta`` (a timedelta or seconds); return the new instant."""
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        self.set(self.now() + step)
        return self.now()

    def next_deadline(self) -> datetime | None:
        """The earliest instant someone is waiting for, if any (for test drivers)."""
        with self._lock:
            return self._waiters[0][0] if self._waiters else None

    def _register(self, when: datetime, release: Callable[[], None]) -> bool:
        """Queue ``release`` for ``when``; return False if ``when`` has already passed."""
        with self._lock:
            if when <= self._now:
                return False
            heapq.heappush(self._waiters, (when, next(self._seq), release))
            return True

    async def sleep_until(self, when: datetime, wake: asyncio.Event | None = None) -> bool:
        """Wait until manual time reaches ``when``, or until ``wake`` is set."""
        when = ensure_utc(when)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()

        def release() -> None:
            with contextlib.suppress(RuntimeError):  # the loop may be closed by now
                loop.call_soon_threadsafe(_resolve, waiter)

        if not self._register(when, release):
            return True
        return await _wait_event_or(waiter, wake)

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of manual time."""
        await self.sleep_until(self.now() + timedelta(seconds=max(seconds, 0.0)))

    def sleep_blocking(self, seconds: float) -> None:
        """Block the calling thread until manual time has moved ``seconds`` on."""
        done = threading.Event()
        if self._register(self.now() + timedelta(seconds=max(seconds, 0.0)), done.set):
            done.wait()


class WaitTrackingClock:
    """A clock that knows whether one of its callers is waiting on it right now.

    The worker hands one to each job: a test driver on a :class:`ManualClock` can then tell
    a job blocked on time (advance the clock) from a job still working (wait for it). A
    wait counts until its deadline passes, not until its caller resumes, so the answer is
    right the moment the clock is moved.
    """

    def __init__(self, inner: Clock) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._deadlines: dict[int, datetime] = {}
        self._ids = itertools.count()

    @property
    def waiting(self) -> bool:
        """Whether a caller is waiting for an instant still in the future."""
        now = self.inner.now()
        with self._lock:
            return any(deadline > now for deadline in self._deadlines.values())

    @contextlib.contextmanager
    def _counted(self, deadline: datetime) -> Iterator[None]:
        key = next(self._ids)
        with self._lock:
            self._deadlines[key] = deadline
        try:
            yield
        finally:
            with self._lock:
                del self._deadlines[key]

    def now(self) -> datetime:
        """The inner clock's instant."""
        return self.inner.now()

    async def sleep_until(self, when: datetime, wake: asyncio.Event | None = None) -> bool:
        """The inner clock's :meth:`Clock.sleep_until`, tracked."""
        with self._counted(ensure_utc(when)):
            return await self.inner.sleep_until(when, wake)

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of the inner clock's time, tracked."""
        await self.sleep_until(self.now() + timedelta(seconds=max(seconds, 0.0)))

    def sleep_blocking(self, seconds: float) -> None:
        """The inner clock's :meth:`Clock.sleep_blocking`, tracked."""
        with self._counted(self.now() + timedelta(seconds=max(seconds, 0.0))):
            self.inner.sleep_blocking(seconds)
