"""examples/source_watch on the manual clock against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from duly.clock import ManualClock
from duly.engine.registry import JobRegistry
from duly.engine.states import RunStatus
from duly.engine.store.sql import SqlStore
from duly.testing import EngineHarness

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

from source_watch import jobs


class Site:
    """Pages served on 127.0.0.1 (path → body, or an int status), counting hits."""

    def __init__(self) -> None:
        self.pages: dict[str, bytes | int] = {}
        self.hits: Counter[str] = Counter()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                site.hits[self.path] += 1
                page = site.pages.get(self.path, 404)
                status, body = (page, b"") if isinstance(page, int) else (200, page)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.close()


def registry() -> JobRegistry:
    reg = JobRegistry()
    reg.job(jobs.JOB_NAME, timeout=600, retry=3, max_concurrency=1)(jobs.source_watch)
    return reg


async def run_once(h: EngineHarness, key: str) -> dict[str, Any]:
    run, _ = h.client.trigger(jobs.JOB_NAME, idempotency_key=key)
    for _ in range(200):
        await h.advance(timedelta(seconds=1))
        row = h.store.run_get(run.id)
        if row is not None and row.status in (RunStatus.SUCCEEDED, RunStatus.FAILED):
            assert row.status is RunStatus.SUCCEEDED, row.error_message
            assert row.result is not None
            return row.result
        await asyncio.sleep(0.01)  # a fetch in a thread
    raise AssertionError("the run did not finish")


async def test_due_sources_are_fetched_and_a_change_raises_one_alert(
    store: SqlStore, clock: ManualClock, site: Site
) -> None:
    site.pages = {"/a": b"alpha v1", "/b": b"beta v1", "/c": b"gamma", "/gone": 404}
    engine = store.engine
    a = jobs.add_source(engine, "a", f"{site.url}/a", every_seconds=60)
    jobs.add_source(engine, "b", f"{site.url}/b", every_seconds=600)
    c = jobs.add_source(engine, "c", f"{site.url}/c", every_seconds=60)
    jobs.add_source(engine, "gone", f"{site.url}/gone", every_seconds=60)
    with engine.begin() as conn:
        conn.execute(
            jobs.watched_sources.update().where(jobs.watched_sources.c.id == c).values(active=False)
        )

    async with EngineHarness(store, registry(), clock) as h:
        first = await run_once(h, "r1")
        assert first["due"] == 3 and first["changed"] == []  # first sight: no alert
        assert first["errors_by_code"] == {"MISSING_DATA": 1}
        assert site.hits == Counter({"/a": 1, "/b": 1, "/gone": 1})  # c is inactive

        site.pages["/a"], site.pages["/b"] = b"alpha v2", b"beta v2"
        clock.advance(timedelta(seconds=60))
        second = await run_once(h, "r2")
        assert second["changed"] == ["a"]  # b is not due yet (every 10 min)
        assert site.hits["/b"] == 1

        clock.advance(timedelta(minutes=10))
        third = await run_once(h, "r3")
        assert third["changed"] == ["b"]  # a's content is the same as last time

    alerts = [x for x in store.alert_list() if x.rule == "source_watch.changed"]
    assert sorted(x.title for x in alerts) == ["source a changed", "source b changed"]
    with engine.connect() as conn:
        row = conn.execute(select(jobs.watched_sources).where(jobs.watched_sources.c.id == a)).one()
    assert row.last_hash is not None and row.last_changed_at is not None


async def test_a_server_error_is_retried_after_5_and_10_seconds(
    store: SqlStore, clock: ManualClock, site: Site
) -> None:
    site.pages = {"/flaky": 503}
    jobs.add_source(store.engine, "flaky", f"{site.url}/flaky", every_seconds=60)
    async with EngineHarness(store, registry(), clock) as h:
        result = await run_once(h, "r1")
    assert result["errors_by_code"] == {"API_ERROR": 1} and result["retries"] == 2
    assert site.hits["/flaky"] == 3
