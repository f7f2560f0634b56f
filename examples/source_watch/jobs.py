"""``source_watch``: fetch each active source whose check frequency is due, hash its content,
and raise an alert when the content changed since the last check.

Sources live in a small table, ``watched_sources`` (created on first use); add them with
``python -m source_watch add URL --every 300`` (see README.md). The job is a few lines on
:func:`duly.engine.batch.run_batch`: bounded concurrency, one source's failure never stops
the others, network errors and 5xx retried after 5 and 10 s of the job's clock, progress and
a summary on the run.

Run it: ``PYTHONPATH=examples duly worker --import source_watch.jobs``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    or_,
    select,
    update,
)

import duly
from duly.engine.alerts import AlertSink, StoreAlertSink
from duly.engine.batch import ItemResult, run_batch
from duly.engine.errors import JobError
from duly.engine.store.base import NewAlert
from duly.engine.store.types import UTCDateTime

JOB_NAME = "source_watch"
FETCH_TIMEOUT = 10.0
RETRY_DELAYS = (5.0, 10.0)

metadata = MetaData()
watched_sources = Table(
    "watched_sources",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("url", Text, nullable=False),
    Column("check_every_seconds", Integer, nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("last_checked_at", UTCDateTime()),
    Column("last_hash", String(64)),
    Column("last_changed_at", UTCDateTime()),
    Column("last_error", String(64)),
)


@dataclass(frozen=True, slots=True)
class Source:
    """A source due for a check."""

    id: int
    name: str
    url: str
    last_hash: str | None


def ensure_table(engine: Engine) -> None:
    """Create ``watched_sources`` if it does not exist."""
    metadata.create_all(engine, checkfirst=True)


def add_source(engine: Engine, name: str, url: str, every_seconds: int) -> int:
    """Watch ``url`` every ``every_seconds``; returns the source's id."""
    ensure_table(engine)
    with engine.begin() as conn:
        row = conn.execute(
            insert(watched_sources)
            .values(name=name, url=url, check_every_seconds=every_seconds, active=True)
            .returning(watched_sources.c.id)
        ).scalar_one()
    return int(row)


def due_sources(engine: Engine, now: datetime) -> list[Source]:
    """Active sources never checked, or last checked at least their frequency ago."""
    s = watched_sources.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(s.id, s.name, s.url, s.last_hash, s.last_checked_at, s.check_every_seconds)
            .where(s.active.is_(True))
            .where(or_(s.last_checked_at.is_(None), s.last_checked_at <= now))
            .order_by(s.id)
        ).all()
    return [
        Source(r.id, r.name, r.url, r.last_hash)
        for r in rows
        if r.last_checked_at is None
        or r.last_checked_at + timedelta(seconds=r.check_every_seconds) <= now
    ]


def fetch_hash(client: httpx.Client, source: Source) -> str:
    """The SHA-256 of the source's content; a failure is a :class:`JobError` with a code."""
    try:
        response = client.get(source.url)
    except httpx.TimeoutException:
        raise JobError("TIMEOUT", f"{source.name}: no answer in time", retryable=True) from None
    except httpx.TransportError as exc:
        raise JobError(
            "NETWORK_ERROR", f"{source.name}: {type(exc).__name__}", retryable=True
        ) from None
    if response.status_code >= 500 or response.status_code == 429:
        raise JobError("API_ERROR", f"{source.name}: {response.status_code}", retryable=True)
    if response.status_code != 200:
        raise JobError("MISSING_DATA", f"{source.name}: {response.status_code}", retryable=False)
    return hashlib.sha256(response.content).hexdigest()


class _Record:
    """Stores each checked source's hash and raises an alert for a changed one."""

    def __init__(self, engine: Engine, alerts: AlertSink, now: datetime) -> None:
        self.engine, self.alerts, self.now = engine, alerts, now
        self.changed: list[str] = []

    def __call__(self, chunk: Sequence[ItemResult[Source, str]]) -> None:
        s = watched_sources.c
        with self.engine.begin() as conn:
            for result in chunk:
                source, new_hash = result.item, result.value
                values: dict[str, Any] = {"last_checked_at": self.now}
                if result.error is not None:
                    values["last_error"] = result.error.code
                else:
                    values.update(last_hash=new_hash, last_error=None)
                    if source.last_hash is not None and new_hash != source.last_hash:
                        values["last_changed_at"] = result.finished_at
                        self.changed.append(source.name)
                conn.execute(update(watched_sources).where(s.id == source.id).values(**values))
        for result in chunk:
            if result.item.name in self.changed and result.value != result.item.last_hash:
                self.alerts.raise_alert(
                    NewAlert(
                        dedupe_key=f"{JOB_NAME}.changed:{result.item.id}:{result.value}",
                        rule=f"{JOB_NAME}.changed",
                        severity="medium",
                        title=f"source {result.item.name} changed",
                        now=result.finished_at,
                        details={"source": result.item.name, "url": result.item.url,
                                 "sha256": result.value},
                        job_name=JOB_NAME,
                    )
                )  # fmt: skip


@duly.job(JOB_NAME, timeout=600, retry=3, max_concurrency=1)
async def source_watch(ctx: duly.JobContext) -> dict[str, Any]:
    """Check every due source; alert on a change."""
    return await check_sources(ctx)


async def check_sources(ctx: duly.JobContext, alerts: AlertSink | None = None) -> dict[str, Any]:
    """One pass: every due source fetched once (retried on network errors and 5xx)."""
    store = ctx._store  # the engine's store, set for every run
    if store is None:
        raise RuntimeError(f"{JOB_NAME} needs a running engine")
    await asyncio.to_thread(ensure_table, store.engine)
    now = ctx.clock.now()
    sources = await asyncio.to_thread(due_sources, store.engine, now)
    record = _Record(store.engine, alerts or StoreAlertSink(store), now)
    with httpx.Client(timeout=FETCH_TIMEOUT, follow_redirects=True) as client:
        summary = await run_batch(
            ctx, sources, lambda source: fetch_hash(client, source), key=lambda s: s.id,
            record=record, concurrency=4, retry_delays=RETRY_DELAYS,
        )  # fmt: skip
    return {**summary.to_json(), "due": len(sources), "changed": sorted(record.changed)}
