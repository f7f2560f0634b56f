"""The engine through PostgreSQL outages: a node recovers by itself and no run is lost or doubled.

The node talks to PostgreSQL through a :class:`~faultproxy.FaultProxy` that the tests cut and
restore; the assertions read the database directly. Real time, short leases.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy.engine import make_url

from conftest import _truncate_pg
from duly.engine.client import EngineClient
from duly.engine.context import JobContext
from duly.engine.node import Node
from duly.engine.registry import JobRegistry
from duly.engine.states import RunStatus
from duly.engine.store.connect import create_db_engine
from duly.engine.store.sql import SqlStore
from faultproxy import FaultProxy, fault_proxy
from realtime import CLOCK, fast_options, final, is_final, until

pytestmark = pytest.mark.postgres


@dataclass
class Faulty:
    proxy: FaultProxy
    node_store: SqlStore  # through the proxy
    store: SqlStore  # direct, for the test's own reads and writes


@pytest.fixture
def faulty(pg_database: str) -> Iterator[Faulty]:
    _truncate_pg(pg_database)
    url = make_url(pg_database)
    with fault_proxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        node_store = SqlStore(create_db_engine(proxied, pool_size=4))
        store = SqlStore(pg_database)
        yield Faulty(proxy, node_store, store)
        node_store.dispose()
        store.dispose()


options = fast_options


@pytest.fixture
async def running_node(faulty: Faulty) -> AsyncIterator[Callable[[JobRegistry], Node]]:
    nodes: list[Node] = []

    def start(registry: JobRegistry) -> Node:
        node = Node(faulty.node_store, registry, CLOCK, options(), roles=("worker",), listen=False)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        await node.stop()


async def test_a_worker_runs_sync_jobs_again_after_an_outage(
    faulty: Faulty, running_node: Callable[[JobRegistry], Node]
) -> None:
    registry = JobRegistry()

    @registry.job("work", timeout=10)
    def work(ctx: JobContext) -> int:
        return ctx.attempt

    node = running_node(registry)
    await node.start()
    client = EngineClient(faulty.store, registry, CLOCK)
    before = [client.trigger("work")[0] for _ in range(3)]
    await until(is_final(faulty.store, *before), 10, "the runs before the outage")

    faulty.proxy.cut()
    during = [client.trigger("work")[0] for _ in range(3)]  # claims fail meanwhile
    await CLOCK.sleep(2)
    faulty.proxy.restore()
    after = [client.trigger("work")[0] for _ in range(3)]
    await until(is_final(faulty.store, *during, *after), 20, "the runs after the outage")

    for run in before + during + after:
        row = final(faulty.store, run)
        assert (row.status, row.attempt, row.error_code) == (RunStatus.SUCCEEDED, 1, None)


async def test_a_job_longer_than_its_lease_outlives_an_outage_and_runs_once(
    faulty: Faulty, running_node: Callable[[JobRegistry], Node]
) -> None:
    registry = JobRegistry()
    starts: list[int] = []

    @registry.job("long", timeout=30)
    async def long(ctx: JobContext) -> str:
        starts.append(ctx.attempt)
        await ctx.clock.sleep(6)  # twice the lease: it lives on heartbeats
        return "done"

    node = running_node(registry)
    await node.start()
    run, _ = EngineClient(faulty.store, registry, CLOCK).trigger("long")
    await until(lambda: bool(starts), 10, "the job to start")
    await CLOCK.sleep(1)
    faulty.proxy.cut()  # the heartbeat fails; the lease must be extended once it is back
    await CLOCK.sleep(1.2)
    faulty.proxy.restore()
    await until(is_final(faulty.store, run), 20, "the run to end")

    row = final(faulty.store, run)
    assert (row.status, row.attempt, row.result) == (RunStatus.SUCCEEDED, 1, "done")
    assert starts == [1]  # never reaped and started again beside the first


async def test_an_outcome_written_during_an_outage_is_written_once_it_is_back(
    faulty: Faulty, running_node: Callable[[JobRegistry], Node]
) -> None:
    registry = JobRegistry()
    release = threading.Event()
    executions: Counter[int] = Counter()

    @registry.job("report", timeout=30)
    def report(ctx: JobContext) -> dict[str, int]:
        executions[ctx.run_id] += 1
        release.wait(20)
        return {"rows": 7}

    node = running_node(registry)
    await node.start()
    run, _ = EngineClient(faulty.store, registry, CLOCK).trigger("report")
    await until(lambda: bool(executions), 10, "the job to start")
    faulty.proxy.cut()
    release.set()  # the job returns while the database is away
    await CLOCK.sleep(1.5)
    faulty.proxy.restore()
    await until(is_final(faulty.store, run), 20, "the outcome to be written")
    await CLOCK.sleep(options().lease_seconds + 1)  # a reaped run would start again here

    row = final(faulty.store, run)
    assert (row.status, row.attempt, row.result) == (RunStatus.SUCCEEDED, 1, {"rows": 7})
    assert executions == {run.id: 1}
    assert [a.status for a in faulty.store.run_attempts(run.id)] == ["succeeded"]


def test_the_proxy_really_cuts(faulty: Faulty) -> None:
    """The fixture the tests above rely on: a cut makes the node's store fail at once."""
    assert faulty.node_store.run_counts() is not None
    faulty.proxy.cut()
    with pytest.raises(Exception):  # noqa: B017 - any driver error: the point is it fails
        faulty.node_store.engine.dispose()
        faulty.node_store.run_counts()
    faulty.proxy.restore()
    faulty.node_store.engine.dispose()
    assert faulty.node_store.run_counts() is not None


async def test_every_loop_of_a_node_rides_out_an_outage_with_a_warning_per_try(
    faulty: Faulty,
) -> None:
    from structlog.testing import capture_logs

    registry = JobRegistry()
    registry.job("work", timeout=10)(lambda ctx: ctx.attempt)
    node = Node(faulty.node_store, registry, CLOCK, options(), listen=False)  # every role
    client = EngineClient(faulty.store, registry, CLOCK)
    with capture_logs() as logs:
        await node.start()
        try:
            faulty.proxy.cut()
            await CLOCK.sleep(4)
            faulty.proxy.restore()
            run, _ = client.trigger("work")
            await until(is_final(faulty.store, run), 20, "a run after the outage")
        finally:
            await node.stop()
    assert final(faulty.store, run).status is RunStatus.SUCCEEDED
    crashed = [e for e in logs if e["event"] == "service.crashed"]
    assert crashed == [], "a database outage is not a crash: no traceback"
    tries = Counter(e["service"] for e in logs if e["event"] == "service.database_unavailable")
    # backing off (0.5, 1, 2, 4 s): a handful of lines per loop in 4 s, not one a second
    assert all(n <= 5 for n in tries.values()), tries
