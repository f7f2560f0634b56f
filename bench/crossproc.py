"""The engine as separate processes see it: an enqueuing client, ``duly worker`` processes.

Used by ``bench/engine.py --only xenq,xwake,xrun1,xrun3``; every process runs with duly's
default settings (nothing tuned), as a user would get them. Run as a script, it is the
enqueuing client (``python bench/crossproc.py enqueue URL N one|batch``).

* enqueue one by one — ``EngineClient.trigger()`` from a client process, one durable
  transaction per run (audit events included, as by default);
* enqueue in one batch — ``EngineClient.trigger_many()``, one transaction for all;
* wake-up lateness — runs of ``bench.stamp`` (an ordinary job, in the worker's threads)
  created by this process a quarter of a second before they fall due, or as they fall due,
  spread over ``over`` seconds; the lateness is from the due time to the job's first line;
* drain — ``duly.noop`` runs queued beforehand, completed by ``duly worker`` processes.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import stampjobs  # noqa: F401 - registers bench.stamp for this process's client
from sqlalchemy import text

import duly
from duly.audit.signing import generate_key_pair
from duly.clock import SystemClock
from duly.config import Settings
from duly.engine.client import EngineClient
from duly.engine.store.sql import SqlStore
from duly.runtime import job_registry, open_store

CLOCK = SystemClock()
SRC = Path(duly.__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent


def process_env(url: str, settings: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a duly process of the benchmark: this checkout's code, ``url``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DULY_")}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(BENCH), env.get("PYTHONPATH", "")])
    env.update(DULY_DATABASE_URL=url, DULY_LOGGING__LEVEL="warning", **(settings or {}))
    return env


@contextmanager
def workers(url: str, processes: int, settings: dict[str, str] | None = None) -> Iterator[None]:
    """``processes`` ``duly worker --no-scheduler`` processes on ``url``, stopped on exit."""
    env = process_env(url, settings)
    with tempfile.TemporaryDirectory() as cwd:
        generate_key_pair(Path(cwd) / "duly-audit-key.pem")  # one key for all the processes
        procs = [subprocess.Popen([sys.executable, "-m", "duly", "worker", "--no-scheduler",
                                   "--import", "stampjobs"],
                                  env={**env, "DULY_NODE_NAME": f"w{i}"}, cwd=cwd,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for i in range(processes)]  # fmt: skip
        try:
            yield
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a worker process died")
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(timeout=60)


def wait_for(store: SqlStore, sql: str, at_least: int, timeout: float = 600.0) -> None:
    """Poll ``sql`` (a count) until it reaches ``at_least``."""
    deadline = time.monotonic() + timeout
    while True:
        with store.engine.connect() as conn:
            if int(conn.execute(text(sql)).scalar_one()) >= at_least:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{sql!r} did not reach {at_least}")
        CLOCK.sleep_blocking(0.02)


def enqueue_rate(url: str, n: int, batch: bool) -> float:
    """Runs per second enqueued by a separate client process (see :func:`_enqueue_main`)."""
    with tempfile.TemporaryDirectory() as cwd:
        out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "enqueue", url,
                              str(n), "batch" if batch else "one"],
                             env=process_env(url), cwd=cwd, capture_output=True, text=True,
                             check=True)  # fmt: skip
    return float(json.loads(out.stdout.strip().splitlines()[-1])["rate"])


def _enqueue_main(url: str, n: int, mode: str) -> None:
    """In the client process: ``n`` runs of ``duly.noop``, one by one or in one batch."""
    store = open_store(Settings(database_url=url))
    client = EngineClient(store, job_registry(), CLOCK)
    for i in range(20):  # the pool's connections opened, the statements prepared
        client.trigger("duly.noop", idempotency_key=f"warm-{i}")
    start = time.perf_counter()
    if mode == "batch":
        client.trigger_many("duly.noop", [{}] * n,
                            idempotency_keys=[f"b-{i}" for i in range(n)])  # fmt: skip
    else:
        for i in range(n):
            client.trigger("duly.noop", idempotency_key=f"o-{i}")
    rate = n / (time.perf_counter() - start)
    store.dispose()
    print(json.dumps({"rate": rate}))


def wake_lateness(
    store: SqlStore, url: str, n: int = 200, over: float = 20.0, lead: float = 0.25
) -> tuple[float, float, float]:
    """p50, p99 and max (ms) from due time to the job's first line in a ``duly worker``."""
    client = EngineClient(store, job_registry(), CLOCK)
    with workers(url, 1):
        wait_for(store, "SELECT count(*) FROM nodes", 1, timeout=60)
        for i in range(5):  # the worker's first claims and thread start-up, not measured
            client.trigger("bench.stamp", idempotency_key=f"warm-{i}")
        wait_for(store, "SELECT count(*) FROM runs WHERE status = 'succeeded'", 5)
        first = CLOCK.now() + timedelta(seconds=1)
        for i in range(n):
            due = first + timedelta(seconds=over * i / n)
            CLOCK.sleep_blocking(max(0.0, (due - CLOCK.now()).total_seconds() - lead))
            client.trigger("bench.stamp", idempotency_key=f"late-{i}", scheduled_for=due)
        wait_for(store, "SELECT count(*) FROM runs WHERE status = 'succeeded'", n + 5)
    with store.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT scheduled_for, result FROM runs WHERE idempotency_key LIKE 'late-%'"
        )).all()  # fmt: skip
    lags = sorted(_lag_ms(due, result) for due, result in rows)
    return (statistics.median(lags), lags[min(len(lags) - 1, int(len(lags) * 0.99))], lags[-1])


def _lag_ms(due: datetime | str, result: dict[str, str] | str) -> float:
    summary = json.loads(result) if isinstance(result, str) else result
    started = datetime.fromisoformat(summary["started"])
    at = datetime.fromisoformat(due) if isinstance(due, str) else due
    if at.tzinfo is None:
        at = at.replace(tzinfo=started.tzinfo)
    return (started - at).total_seconds() * 1000


if __name__ == "__main__":
    if sys.argv[1:2] == ["enqueue"]:
        _enqueue_main(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        raise SystemExit("usage: crossproc.py enqueue URL N one|batch")
