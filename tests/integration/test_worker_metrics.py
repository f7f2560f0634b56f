"""``/metrics`` of a real ``duly worker`` process on 127.0.0.1 after real runs (both stores)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from duly.clock import SystemClock
from duly.engine.builtin import builtin_registry
from duly.engine.client import EngineClient
from duly.engine.states import RunStatus
from duly.engine.store.base import RunFilter
from duly.engine.store.sql import SqlStore

pytestmark = pytest.mark.slow

CLOCK = SystemClock()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_worker_serves_run_metrics(store: SqlStore, db_url: str, tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DULY_")}
    env.update(
        DULY_DATABASE_URL=db_url,
        DULY_NODE_NAME="metrics-node",
        DULY_API__METRICS_PORT=str(port),
        DULY_ENGINE__MAX_IDLE_SECONDS="0.5",
        DULY_LOGGING__LEVEL="warning",
    )
    with (tmp_path / "worker.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "duly", "worker"],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        client = EngineClient(store, builtin_registry, CLOCK)
        for i in range(5):
            client.trigger("duly.noop", idempotency_key=f"m-{i}")
        deadline = CLOCK.now() + timedelta(seconds=60)
        text = ""
        while CLOCK.now() < deadline:
            done = store.run_list(RunFilter(status=RunStatus.SUCCEEDED, limit=10))
            if len(done) == 5:
                try:
                    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
                except httpx.HTTPError:
                    text = ""
                if 'duly_runs_finished_total{job="duly.noop",status="succeeded"} 5.0' in text:
                    break
            CLOCK.sleep_blocking(0.2)
        assert 'duly_runs_finished_total{job="duly.noop",status="succeeded"} 5.0' in text, text
        assert 'duly_run_fire_lateness_seconds_count{job="duly.noop"} 5.0' in text
        assert 'duly_run_attempts_total{job="duly.noop",status="succeeded"} 5.0' in text
        assert 'duly_runs{job="duly.noop",status="succeeded"} 5.0' in text
        assert 'duly_node_heartbeat_age_seconds{node="metrics-node"}' in text
        assert "duly_scrape_error 0.0" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=20) == 0
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
