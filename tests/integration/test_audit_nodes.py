"""Three ``duly worker`` processes on one PostgreSQL database, one audit chain.

The nodes claim and complete runs concurrently while this process triggers more, cancels
some (queued and running) and retries the cancelled ones. When everything has finished the
chain is sealed: it must be gap-free (``seq`` 1..N), verify against the shared key, and hold
every run state change recorded in ``runs`` and ``job_executions``: one ``run.fire`` per run,
one ``run.claim`` per attempt (by the node that made it), and the run's terminal event last
(a batch event counting for each run it lists).
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter, defaultdict
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import text

import duly
from duly.audit import AuditLog, acting_as, cli_actor, record
from duly.audit.signing import generate_key_pair
from duly.clock import SystemClock
from duly.config import AuditSettings
from duly.engine.builtin import builtin_registry
from duly.engine.client import EngineClient
from duly.engine.states import ACTIVE
from duly.engine.store.sql import SqlStore

if TYPE_CHECKING:
    from conftest import StartWorker, WaitFor

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.parametrize("db_url", ["postgres"], indirect=True),
]

CLOCK = SystemClock()
SRC = Path(duly.__file__).resolve().parents[1]  # the processes run this checkout's code
NODES = ("node-a", "node-b", "node-c")
TERMINAL = {"succeeded": "run.succeed", "cancelled": "run.cancel", "failed": "run.fail"}


def _all_final(store: SqlStore) -> bool:
    active = ", ".join(f"'{s.value}'" for s in ACTIVE)
    with store.engine.connect() as conn:
        waiting = conn.execute(
            text(f"SELECT count(*) FROM runs WHERE status IN ({active})")
        ).scalar_one()
    return int(waiting) == 0


def _run_events(store: SqlStore) -> dict[str, list[dict[str, Any]]]:
    """Each run's events in chain order; a batch event counts for each run it lists."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with store.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT object_id, action, actor, details FROM audit_events"
                " WHERE object_type = 'run' ORDER BY seq"
            )
        ).all()
    for object_id, action, actor, details in rows:
        fields = json.loads(details)
        if object_id is not None:
            out[object_id].append({"action": action, "actor": actor, **fields})
            continue
        shared = {k: v for k, v in fields.items() if k not in ("count", "runs")}
        assert fields["count"] == len(fields["runs"]) > 1, fields
        for item in fields["runs"]:
            own = {k: v for k, v in item.items() if k != "id"}
            out[str(item["id"])].append({"action": action, "actor": actor, **shared, **own})
    return out


@pytest.mark.timeout(300)
def test_three_nodes_keep_one_gap_free_chain_with_every_run_change(
    store: SqlStore, duly_worker: StartWorker, wait_for: WaitFor, tmp_path: Path
) -> None:
    key_file = tmp_path / "audit.pem"
    generate_key_pair(key_file)  # one key for every node, as production would hand them
    settings = AuditSettings(signing_key_file=key_file, create_key=False)
    env = {
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "DULY_AUDIT__SIGNING_KEY_FILE": str(key_file),
        "DULY_AUDIT__CREATE_KEY": "false",
        "DULY_AUDIT__CHECKPOINT_EVERY_EVENTS": "200",
    }
    store.audit = record  # this process triggers, cancels and retries too
    client = EngineClient(store, builtin_registry, CLOCK)
    workers = [duly_worker(name, **env) for name in NODES]

    def all_up() -> bool:
        return {n.name for n in store.node_list() if n.state == "running"} == set(NODES)

    wait_for(all_up, 90, "three nodes to start")

    def trigger_more() -> None:
        for i in range(100):
            client.trigger("duly.noop", idempotency_key=f"side-{i}")

    with acting_as(cli_actor()):
        later = CLOCK.now() + timedelta(hours=1)
        parked = [
            client.trigger("duly.noop", idempotency_key=f"parked-{i}", scheduled_for=later)[0]
            for i in range(10)
        ]
        # Long enough to be still running when cancelled (the node checks every second).
        sleepers = [
            client.trigger("duly.sleep", {"seconds": 60}, idempotency_key=f"sleep-{i}")[0]
            for i in range(3)
        ] + [client.trigger("duly.sleep", {"seconds": 1}, idempotency_key=f"nap-{i}")[0]
             for i in range(2)]  # fmt: skip
        side = threading.Thread(target=trigger_more)
        side.start()
        for i in range(300):
            client.trigger("duly.noop", idempotency_key=f"main-{i}")
        side.join()
        for run in parked:  # queued: cancelled at once, then queued again now
            client.cancel(run.id)
            client.retry(run.id)
        wait_for(
            lambda: all(store.run_get(r.id).status.value == "running" for r in sleepers[:3]),  # type: ignore[union-attr]
            60,
            "sleepers to run",
        )
        for run in sleepers[:3]:  # running: the node is asked to stop
            client.cancel(run.id)

    wait_for(lambda: _all_final(store), 120, "every run to finish")
    for proc in workers:
        proc.terminate()
    for proc in workers:
        assert proc.wait(timeout=30) == 0

    audit = AuditLog(store.engine, CLOCK, settings)
    deadline = CLOCK.now() + timedelta(seconds=30)
    while audit.seal() or audit.status().unsealed:
        assert CLOCK.now() < deadline, "events still unsealed"
        CLOCK.sleep_blocking(0.1)
    audit.checkpoint(force=True)

    report = audit.verify(key=audit.verify_key(key_file.with_suffix(".pub")))
    assert report.ok, report.problem
    with store.engine.connect() as conn:
        seqs = conn.execute(text("SELECT seq FROM audit_events ORDER BY seq")).scalars().all()
        checkpoints = conn.execute(text("SELECT count(*) FROM audit_checkpoints")).scalar_one()
        runs = conn.execute(text("SELECT id, status FROM runs")).all()
        attempts = conn.execute(
            text("SELECT job_id, attempt, node, status FROM job_executions")
        ).all()
        syncs = conn.execute(
            text("SELECT object_id FROM audit_events WHERE action = 'schedule.sync'")
        ).scalars()
        sync_count = Counter(syncs)
    assert seqs == list(range(1, len(seqs) + 1))
    assert report.events == len(seqs) and report.unsigned_tail == 0
    assert checkpoints >= 2  # the nodes signed along the way, not only the final one
    assert sync_count and set(sync_count.values()) == {1}  # three starts, one sync each

    per_run = _run_events(store)
    attempts_of: dict[int, list[Any]] = defaultdict(list)
    for a in attempts:
        attempts_of[a.job_id].append(a)
    assert len(runs) == 415
    for run_id, status in runs:
        got = per_run[str(run_id)]
        names = [e["action"] for e in got]
        assert names.count("run.fire") == 1 and names[0] == "run.fire", (run_id, names)
        claims = {e["attempt"]: e for e in got if e["action"] == "run.claim"}
        assert sorted(claims) == sorted(a.attempt for a in attempts_of[run_id]), (run_id, names)
        for a in attempts_of[run_id]:  # each attempt claimed by the node that ran it
            assert claims[a.attempt]["node"] == a.node
            assert claims[a.attempt]["actor"] == f"system:{a.node}"
        assert names[-1] == TERMINAL[status], (run_id, status, names)
    parked_ids = {str(r.id) for r in parked}
    for run_id in parked_ids:
        names = [e["action"] for e in per_run[run_id]]
        assert names[:3] == ["run.fire", "run.cancel", "run.retry"], names
        assert {e["actor"] for e in per_run[run_id][:3]} == {cli_actor().id}
    statuses = dict(runs)
    for run in sleepers[:3]:
        names = [e["action"] for e in per_run[str(run.id)]]
        assert statuses[run.id] == "cancelled"
        assert names == ["run.fire", "run.claim", "run.cancel", "run.cancel"], names
        assert per_run[str(run.id)][2]["requested"] is True
