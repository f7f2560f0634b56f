"""The audit retention job: old checkpointed ranges go, the rest still verifies, the pruning is recorded."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import text

from audittest import settle
from duly.audit import AuditEntry, AuditLog, record
from duly.audit.jobs import AUDIT_PRUNE_JOB, audit_registry
from duly.clock import ManualClock
from duly.config import AuditSettings
from duly.engine.states import RunStatus
from duly.engine.store.sql import SqlStore
from duly.testing import EngineHarness


def _event(store: SqlStore, clock: ManualClock, name: str) -> None:
    with store.engine.begin() as conn:
        record(conn, [AuditEntry("schedule.pause", "schedule", name)], clock.now())


async def test_the_retention_job_prunes_old_checkpointed_ranges_and_records_it(
    store: SqlStore, clock: ManualClock, tmp_path: Path
) -> None:
    audit = AuditLog(store.engine, clock, AuditSettings(signing_key_file=tmp_path / "k.pem"))
    for name in ("a", "b", "c"):
        _event(store, clock, name)
    settle(audit)
    audit.checkpoint(force=True)  # the cut: 3 events, signed now
    clock.advance(timedelta(days=40))
    _event(store, clock, "d")  # newer than the retention: stays
    settle(audit)
    audit.checkpoint(force=True)

    async with EngineHarness(store, audit_registry, clock) as h:
        pruning, _ = h.client.trigger(AUDIT_PRUNE_JOB, {"retention_days": 30})
        await h.advance(timedelta(seconds=1))
    settle(audit)

    done = store.run_get(pruning.id)
    assert done is not None and done.status is RunStatus.SUCCEEDED, done
    assert done.result == {"events_removed": 3, "through_seq": 3, "retention_days": 30}
    with store.engine.connect() as conn:
        left = conn.execute(text("SELECT action, object_id FROM audit_events ORDER BY seq")).all()
    assert [tuple(r) for r in left] == [("schedule.pause", "d"), ("audit.prune", None)]
    report = audit.verify(key=audit.verify_key())
    assert report.ok, report.problem
    assert report.first_seq == 4
