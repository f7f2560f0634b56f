"""The audit chain on both stores: recorded with the change, sealed gap-free, signed, verified."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from audittest import settle, unguarded
from duly.audit import AuditEntry, AuditLog, acting_as, record, system_actor
from duly.audit.signing import generate_key_pair
from duly.clock import ManualClock
from duly.config import AuditSettings
from duly.engine.store.sql import SqlStore

AT = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


@pytest.fixture
def audit(store: SqlStore, clock: ManualClock, tmp_path: Path) -> AuditLog:
    settings = AuditSettings(signing_key_file=tmp_path / "audit.pem", checkpoint_every_events=5)
    return AuditLog(store.engine, clock, settings)


def write(store: SqlStore, *entries: AuditEntry, at: datetime = AT) -> None:
    with store.engine.begin() as conn:
        record(conn, entries, at)


def entry(n: int) -> AuditEntry:
    return AuditEntry(
        "schedule.pause", "schedule", f"s{n}", {"paused": {"before": False, "after": True}}
    )


def test_events_are_sealed_in_a_gap_free_chain_that_verifies(
    store: SqlStore, audit: AuditLog
) -> None:
    with acting_as(system_actor("node-a")):
        for n in range(7):
            write(store, entry(n))
    write(store, entry(7), entry(8))
    settle(audit)
    assert audit.checkpoint(force=True) is not None

    report = audit.verify(key=audit.verify_key())

    assert report.ok, report.problem
    assert (report.first_seq, report.last_seq, report.events) == (1, 9, 9)
    assert report.checkpoints == 1 and report.unsigned_tail == 0
    with store.engine.connect() as conn:
        seqs = conn.execute(text("SELECT seq FROM audit_events ORDER BY seq")).scalars().all()
        actors = conn.execute(text("SELECT DISTINCT actor FROM audit_events")).scalars().all()
    assert seqs == list(range(1, 10))
    assert set(actors) == {"system:node-a", "system:unknown"}


def test_an_event_rolls_back_with_its_change(store: SqlStore, audit: AuditLog) -> None:
    write(store, entry(1))
    with pytest.raises(RuntimeError), store.engine.begin() as conn:
        record(conn, [entry(2)], AT)
        raise RuntimeError("the change failed after its event was written")
    write(store, entry(3))
    settle(audit)

    with store.engine.connect() as conn:
        ids = conn.execute(text("SELECT object_id FROM audit_events ORDER BY seq")).scalars().all()
    assert ids == ["s1", "s3"]
    assert audit.verify().ok


def test_a_checkpoint_signed_by_another_key_fails_verification(
    store: SqlStore, audit: AuditLog, tmp_path: Path
) -> None:
    write(store, entry(1), entry(2))
    settle(audit)
    audit.checkpoint(force=True)
    other = generate_key_pair(tmp_path / "other.pem")

    report = audit.verify(key=other.public)

    assert not report.ok and report.problem is not None
    assert report.problem.seq == 2
    assert "signed by key" in report.problem.reason


def test_a_changed_detail_is_caught_at_its_sequence_number(
    store: SqlStore, audit: AuditLog
) -> None:
    for n in range(5):
        write(store, entry(n))
    settle(audit)
    with unguarded(store) as conn:
        conn.execute(
            text("UPDATE audit_events SET details = :d WHERE seq = 3"), {"d": '{"paused":true}'}
        )

    report = audit.verify()

    assert report.problem is not None and report.problem.seq == 3
    assert "changed after it was sealed" in report.problem.reason


def test_the_database_refuses_edits_and_deletes_of_audit_rows(
    store: SqlStore, audit: AuditLog
) -> None:
    write(store, entry(1))
    settle(audit)
    for statement in (
        "UPDATE audit_events SET actor = 'someone' WHERE seq = 1",
        "DELETE FROM audit_events WHERE seq = 1",
        "UPDATE audit_head SET seq = 0",
        "DELETE FROM audit_head",
    ):
        with pytest.raises(Exception, match="duly audit"), store.engine.begin() as conn:
            conn.execute(text(statement))
    assert audit.verify().ok


def test_pruning_keeps_the_checkpoint_at_the_cut_so_the_rest_still_verifies(
    store: SqlStore, audit: AuditLog, clock: ManualClock
) -> None:
    for n in range(4):
        write(store, entry(n), at=clock.now())
    settle(audit)
    cut = audit.checkpoint(force=True)
    assert cut is not None and cut.seq == 4
    clock.advance(timedelta(days=10))
    write(store, entry(5), at=clock.now())
    settle(audit)
    audit.checkpoint(force=True)

    removed, through = audit.prune(retention_days=5)
    settle(audit)

    assert (removed, through) == (4, 4)
    report = audit.verify(key=audit.verify_key())
    assert report.ok, report.problem
    assert report.first_seq == 5
    with store.engine.connect() as conn:
        actions = conn.execute(text("SELECT action FROM audit_events ORDER BY seq")).scalars().all()
    assert actions == ["schedule.pause", "audit.prune"]


@pytest.mark.postgres
def test_on_postgres_an_open_transaction_holds_back_the_events_committed_after_it(
    store: SqlStore, audit: AuditLog
) -> None:
    if not store.is_postgres:
        pytest.skip("SQLite has one writer: events are sealed at insert")
    slow = store.engine.connect()
    slow_tx = slow.begin()
    record(slow, [entry(1)], AT)  # begun first, commits last
    write(store, entry(2))

    assert audit.seal() == 0  # entry 2 could still be preceded by entry 1's transaction

    slow_tx.commit()
    slow.close()
    assert settle(audit) == 2
    with store.engine.connect() as conn:
        order = (
            conn.execute(text("SELECT object_id FROM audit_events ORDER BY seq")).scalars().all()
        )
    assert order == ["s1", "s2"]
    assert audit.verify().ok
