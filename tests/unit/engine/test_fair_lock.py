"""The in-process SQLite write lock serves its waiters in the order they came."""

from __future__ import annotations

import threading

from duly.engine.store.connect import FairLock


def _waiters_in_line(lock: FairLock, names: list[str], order: list[str]) -> list[threading.Thread]:
    """Start one thread per name, each queued on ``lock`` before the next starts."""
    threads: list[threading.Thread] = []
    first = lock._next_ticket
    for name in names:
        asked = threading.Event()

        def take(name: str = name, asked: threading.Event = asked) -> None:
            asked.set()
            assert lock.acquire(timeout=10)
            order.append(name)
            lock.release()

        thread = threading.Thread(target=take)
        thread.start()
        asked.wait()
        while lock._next_ticket <= first + len(threads):  # its ticket taken: it is in line
            threading.Event().wait(0.001)
        threads.append(thread)
    return threads


def test_waiters_get_the_lock_in_the_order_they_asked() -> None:
    lock, order = FairLock(), list[str]()
    assert lock.acquire(timeout=1)
    threads = _waiters_in_line(lock, [f"w{i}" for i in range(8)], order)
    lock.release()
    for thread in threads:
        thread.join(5)
    assert order == [f"w{i}" for i in range(8)]


def test_a_waiter_that_gave_up_is_skipped() -> None:
    lock = FairLock()
    assert lock.acquire(timeout=1)
    assert not lock.acquire(timeout=0.01)  # gave up while the lock was held
    order: list[str] = []
    threads = _waiters_in_line(lock, ["next"], order)
    lock.release()
    threads[0].join(5)
    assert order == ["next"]
    assert lock.acquire(timeout=1)  # and the lock is free again afterwards
