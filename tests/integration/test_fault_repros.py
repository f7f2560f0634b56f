"""Small, deterministic reproductions of defects the chaos test (``test_chaos.py``) found.

Each sets up by hand the moment the chaos test reached by luck: a lease taken away from a
running attempt (as the reaper does after an outage or a freeze), a peer frozen mid-claim.
Real time, short leases, one in-process node.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from conftest import _truncate_pg
from duly.engine.client import EngineClient
from duly.engine.context import JobContext
from duly.engine.node import Node
from duly.engine.options import EngineOptions
from duly.engine.registry import JobRegistry
from duly.engine.states import FINAL, RunStatus
from duly.engine.store.base import ClaimParams, RunRow
from duly.engine.store.dialect import lock_id
from duly.engine.store.sql import SqlStore
from realtime import CLOCK, fast_options, until

pytestmark = pytest.mark.slow

LEASE = 2.0


def options(**overrides: Any) -> EngineOptions:
    return fast_options(**({"lease_seconds": LEASE, "heartbeat_seconds": 0.5,
                            "shutdown_grace_seconds": 2} | overrides))  # fmt: skip


@pytest.fixture
async def node_on(store: SqlStore) -> AsyncIterator[Callable[[JobRegistry], Node]]:
    """``node_on(registry)``: a started worker node on the test's store, stopped at the end."""
    nodes: list[Node] = []

    def start(registry: JobRegistry) -> Node:
        node = Node(store, registry, CLOCK, options(), roles=("worker",), listen=False)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        await node.stop()


def _take_lease_away(store: SqlStore, run: RunRow) -> None:
    """What the reaper does to a run whose lease ran out while its node could not renew it."""
    later = CLOCK.now() + timedelta(seconds=LEASE * 5)
    reaped = store.run_reap_expired(later, 10, lambda r: (RunStatus.RETRYING, CLOCK.now()))
    assert [r.id for r in reaped] == [run.id]


async def test_a_run_reclaimed_by_the_node_still_running_its_lost_attempt_keeps_its_lease(
    store: SqlStore, node_on: Callable[[JobRegistry], Node]
) -> None:
    registry = JobRegistry()
    started: list[int] = []
    release = threading.Event()

    @registry.job("slow", timeout=30, retry=3)
    async def slow(ctx: JobContext) -> int:
        started.append(ctx.attempt)
        if ctx.attempt == 1:
            # Stuck in a call that does not heed the cancel flag (a driver, a socket) until
            # the test lets it go: it is still running when the run is claimed again.
            await asyncio.to_thread(release.wait, 20)
            return 1
        await ctx.clock.sleep(LEASE * 3)  # lives on heartbeats
        return ctx.attempt

    node = node_on(registry)
    await node.start()
    run, _ = EngineClient(store, registry, CLOCK).trigger("slow")
    await until(lambda: started == [1], 10, "the first attempt to start")
    _take_lease_away(store, run)

    def claimed_again() -> bool:
        row = store.run_get(run.id)
        return row is not None and row.attempt == 2 and row.status is RunStatus.RUNNING

    await until(claimed_again, 10, "the node to claim the run again")
    release.set()  # the lost attempt ends, beside the new one on the same node
    await until(lambda: (store.run_get(run.id) or run).status in FINAL, 30, "the run to end")

    row = store.run_get(run.id)
    assert row is not None
    history = [a.status for a in store.run_attempts(run.id)]
    assert (row.status, row.attempt, history) == (RunStatus.SUCCEEDED, 2, ["lost", "succeeded"])


@pytest.mark.postgres
def test_a_peer_frozen_in_its_claim_does_not_stall_the_claims_of_other_nodes(
    pg_database: str,
) -> None:
    _truncate_pg(pg_database)
    store = SqlStore(pg_database)
    registry = JobRegistry()
    registry.job("work")(lambda ctx: None)  # the client checks only the name
    client = EngineClient(store, registry, CLOCK)
    serial, _ = client.trigger("work", idempotency_key="scheduled")
    other, _ = client.trigger("work", idempotency_key="manual")
    with store.engine.begin() as conn:  # as a schedule's run has it (overlap "queue")
        conn.execute(text("UPDATE runs SET serial_key = 'sched:1' WHERE id = :i"), {"i": serial.id})
    frozen = store.engine.connect()  # a peer stopped between its advisory lock and its commit
    frozen.begin()
    frozen.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_id("serial:sched:1")})
    claimed: list[list[int]] = []
    params = ClaimParams(node="n2", queues=("default",), limit=10, now=CLOCK.now(),
                         lease_seconds=LEASE)  # fmt: skip
    claimer = threading.Thread(
        target=lambda: claimed.append([c.run.id for c in store.run_claim(params)]), daemon=True
    )
    try:
        claimer.start()
        claimer.join(timeout=5)
        stalled = claimer.is_alive()
    finally:
        frozen.rollback()
        frozen.close()
        claimer.join(timeout=10)
        store.dispose()
    assert not stalled, "the claim waited for the frozen peer"
    assert other.id in claimed[0]
