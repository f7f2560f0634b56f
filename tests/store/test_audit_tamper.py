"""Tampering with the audit trail as someone with write access to the database would.

Each test builds the same chain on both stores (events 1..10, signed checkpoints at 4 and
8, events 9 and 10 the unsigned tail), changes it with the guard triggers off
(:func:`audittest.unguarded`), and checks that verification fails naming the sequence
number where the chain stops being what was sealed.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, select, text

from audittest import unguarded
from conftest import WaitFor
from duly.audit import AuditEntry, AuditLog, VerifyReport, acting_as, record, system_actor
from duly.audit.canonical import EventRecord, event_hash, parse_instant
from duly.audit.export import verify_file
from duly.audit.schema import audit_checkpoints, audit_events
from duly.audit.sealing import checkpoint_of, event_of
from duly.audit.signing import SigningKey, generate_key_pair, load_verify_key
from duly.clock import ManualClock
from duly.config import AuditSettings
from duly.engine.store.sql import SqlStore

AT = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
EVENTS = 10
CHECKPOINTS = (4, 8)


def seal_all(log: AuditLog, wait_for: WaitFor) -> None:
    """Seal every recorded event (on PostgreSQL, once no transaction of the cluster, any
    database's, is still open from before they committed)."""
    wait_for(lambda: log.seal() >= 0 and log.status().unsealed == 0, 30, "the sealer")


@pytest.fixture
def audit(store: SqlStore, clock: ManualClock, tmp_path: Path, wait_for: WaitFor) -> AuditLog:
    """The chain described in the module docstring, verified once untouched."""
    settings = AuditSettings(signing_key_file=tmp_path / "audit.pem")
    log = AuditLog(store.engine, clock, settings)
    with acting_as(system_actor("node-a")):
        for n in range(1, EVENTS + 1):
            with store.engine.begin() as conn:
                record(conn, [entry(n)], AT + timedelta(seconds=n))
            if n in CHECKPOINTS:
                seal_all(log, wait_for)
                assert log.checkpoint(force=True) is not None
    seal_all(log, wait_for)
    report = log.verify(key=log.verify_key())
    assert report.ok, report.problem
    assert (report.events, report.checkpoints, report.unsigned_tail) == (10, 2, 2)
    return log


def entry(n: int) -> AuditEntry:
    return AuditEntry(
        "schedule.update",
        "schedule",
        f"s{n}",
        {"spec": {"before": "daily:22:00", "after": f"n{n}"}},
    )


def event_at(conn: Connection, seq: int) -> EventRecord:
    row = conn.execute(select(audit_events).where(audit_events.c.seq == seq)).one()
    return event_of(row)


def insert_event(conn: Connection, event: EventRecord, id_: int) -> None:
    conn.execute(
        text(
            "INSERT INTO audit_events (id, seq, at, actor, actor_name, actor_role, action, "
            "object_type, object_id, request_id, details, prev_hash, hash) VALUES (:id, :seq, "
            ":at, :actor, :actor_name, :actor_role, :action, :object_type, :object_id, "
            ":request_id, :details, :prev_hash, :hash)"
        ),
        {**event.as_json(), "id": id_, "at": parse_instant(event.at), "details": event.details},
    )


def forged(after: EventRecord, seq: int) -> EventRecord:
    """An event that links correctly after ``after``: hashed as the sealer would hash it."""
    assert after.hash is not None
    fake = replace(
        after,
        actor="token:intruder",
        action="transfer.create",
        details='{"amount":"9999.00 EUR"}',
    )
    return replace(fake, seq=seq, prev_hash=after.hash, hash=event_hash(fake, seq, after.hash))


def verify(audit: AuditLog) -> VerifyReport:
    report = audit.verify(key=audit.verify_key())
    assert not report.ok and report.problem is not None, "tampering went unnoticed"
    return report


def problem(audit: AuditLog) -> tuple[int, str]:
    found = verify(audit).problem
    assert found is not None
    return found.seq, found.reason


def test_a_changed_detail_fails_at_its_event(store: SqlStore, audit: AuditLog) -> None:
    with unguarded(store) as conn:
        conn.execute(text('UPDATE audit_events SET details = \'{"spec":"x"}\' WHERE seq = 6'))

    seq, reason = problem(audit)

    assert seq == 6 and "changed after it was sealed" in reason


def test_a_changed_actor_fails_at_its_event(store: SqlStore, audit: AuditLog) -> None:
    with unguarded(store) as conn:
        conn.execute(text("UPDATE audit_events SET actor = 'cli:someone-else' WHERE seq = 2"))

    assert problem(audit) == (
        2,
        "event 2 was changed after it was sealed (its hash does not match its contents)",
    )


def test_a_row_deleted_in_the_middle_is_missing(store: SqlStore, audit: AuditLog) -> None:
    with unguarded(store) as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq = 5"))

    assert problem(audit) == (5, "event 5 is missing")


def test_the_tail_deleted_after_the_last_checkpoint_is_caught_by_the_head(
    store: SqlStore, audit: AuditLog
) -> None:
    with unguarded(store) as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq > 8"))

    seq, reason = problem(audit)

    assert seq == 9 and "events 9..10 are missing" in reason and "head" in reason


def test_a_forged_row_appended_beyond_the_head_is_caught(store: SqlStore, audit: AuditLog) -> None:
    with unguarded(store) as conn:
        insert_event(conn, forged(event_at(conn, 10), 11), 1000)

    seq, reason = problem(audit)

    assert seq == 11 and "beyond the head" in reason


def test_a_forged_row_inserted_in_the_middle_by_renumbering_is_caught(
    store: SqlStore, audit: AuditLog
) -> None:
    with unguarded(store) as conn:
        fake = forged(event_at(conn, 2), 3)
        # Two steps, so no intermediate state breaks the unique seq.
        conn.execute(text("UPDATE audit_events SET seq = seq + 1000 WHERE seq >= 3"))
        conn.execute(text("UPDATE audit_events SET seq = seq - 999 WHERE seq >= 1003"))
        insert_event(conn, fake, 1000)

    seq, reason = problem(audit)

    # The forged event 3 links to 2 and hashes right: nothing in the chain can tell it from a
    # genuine one. The first that cannot be right is the genuine event pushed after it.
    assert seq == 4 and "does not link" in reason


def test_two_rows_with_swapped_contents_fail_at_the_first(store: SqlStore, audit: AuditLog) -> None:
    columns = ("at", "actor", "action", "object_id", "details")
    with unguarded(store) as conn:
        rows = {
            seq: conn.execute(
                text(f"SELECT {', '.join(columns)} FROM audit_events WHERE seq = :s"), {"s": seq}
            ).one()
            for seq in (3, 7)
        }
        for seq, other in ((3, 7), (7, 3)):
            conn.execute(
                text(
                    f"UPDATE audit_events SET {', '.join(f'{c} = :{c}' for c in columns)} "
                    "WHERE seq = :s"
                ),
                {**rows[other]._asdict(), "s": seq},
            )

    seq, reason = problem(audit)

    assert seq == 3 and "changed after it was sealed" in reason


def test_a_replaced_checkpoint_signature_is_invalid(
    store: SqlStore, audit: AuditLog, tmp_path: Path
) -> None:
    intruder = generate_key_pair(tmp_path / "intruder.pem")
    cp = audit.status().last_checkpoint
    assert cp is not None and cp.seq == 8
    with unguarded(store) as conn:
        conn.execute(
            text("UPDATE audit_checkpoints SET signature = :sig WHERE seq = 8"),
            {"sig": intruder.sign(8, cp.hash, cp.at)},
        )

    assert problem(audit) == (8, "checkpoint 8 has an invalid signature")


def test_checkpoints_all_re_signed_with_another_key_fail_against_the_genuine_key(
    store: SqlStore, audit: AuditLog, tmp_path: Path
) -> None:
    intruder = generate_key_pair(tmp_path / "intruder.pem")
    resign_all(store, intruder)

    seq, reason = problem(audit)

    assert seq == 4 and f"signed by key {intruder.key_id}" in reason
    # ...and with the intruder's key id kept as the genuine one, the signature itself fails.
    genuine = audit.verify_key().key_id
    with unguarded(store) as conn:
        conn.execute(text("UPDATE audit_checkpoints SET key_id = :k"), {"k": genuine})
    assert problem(audit) == (4, "checkpoint 4 has an invalid signature")


def resign_all(store: SqlStore, key: SigningKey) -> None:
    with unguarded(store) as conn:
        rows = conn.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.seq)).all()
        for cp in map(checkpoint_of, rows):
            conn.execute(
                text("UPDATE audit_checkpoints SET key_id = :k, signature = :sig WHERE seq = :s"),
                {"k": key.key_id, "sig": key.sign(cp.seq, cp.hash, cp.at), "s": cp.seq},
            )


def test_all_events_deleted_is_caught_though_the_checkpoints_remain(
    store: SqlStore, audit: AuditLog
) -> None:
    audit.checkpoint(force=True)  # the head signed: nothing unsigned to fall back on
    with unguarded(store) as conn:
        conn.execute(text("DELETE FROM audit_events"))

    seq, reason = problem(audit)

    assert seq == 1 and "no events" in reason


def test_a_checkpointed_prefix_deleted_without_pruning_is_caught(
    store: SqlStore, audit: AuditLog
) -> None:
    # What pruning leaves (events after a checkpoint, that checkpoint), minus its own record.
    with unguarded(store) as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq <= 4"))

    seq, reason = problem(audit)

    assert seq == 1 and "audit.prune" in reason


# -- export files -------------------------------------------------------------------------


def exported(audit: AuditLog) -> list[str]:
    out = io.StringIO()
    assert audit.export(out) == EVENTS
    return out.getvalue().splitlines()


def test_an_untampered_export_verifies_with_the_public_key_alone(
    audit: AuditLog, tmp_path: Path
) -> None:
    lines = exported(audit)
    key = load_verify_key(tmp_path / "audit.pub")

    report = verify_file(io.StringIO("\n".join(lines) + "\n"), key)

    assert report.ok, report.problem
    assert (report.first_seq, report.last_seq, report.checkpoints) == (1, 10, 2)
    assert report.last_checkpoint == 8 and report.unsigned_tail == 2


@pytest.mark.parametrize("field", ["actor", "details", "at", "object_id"])
def test_a_tampered_export_line_fails_at_its_event(
    audit: AuditLog, tmp_path: Path, field: str
) -> None:
    lines = exported(audit)
    index = next(i for i, line in enumerate(lines) if json.loads(line).get("seq") == 6)
    data = json.loads(lines[index])
    data[field] = {"details": {"spec": "x"}, "at": "2026-03-02T09:30:07.000000Z"}.get(
        field, "changed"
    )
    lines[index] = json.dumps(data)

    report = verify_file(io.StringIO("\n".join(lines)), load_verify_key(tmp_path / "audit.pub"))

    assert report.problem is not None and report.problem.seq == 6, report.problem


def test_an_export_with_a_forged_checkpoint_signature_fails(
    audit: AuditLog, tmp_path: Path
) -> None:
    intruder = generate_key_pair(tmp_path / "intruder.pem")
    lines = exported(audit)
    index = next(
        i for i, line in enumerate(lines)
        if json.loads(line)["type"] == "checkpoint" and json.loads(line)["seq"] == 4
    )  # fmt: skip
    data = json.loads(lines[index])
    data["signature"] = intruder.sign(4, data["hash"], data["at"])
    lines[index] = json.dumps(data)

    report = verify_file(io.StringIO("\n".join(lines)), load_verify_key(tmp_path / "audit.pub"))

    assert report.problem is not None
    assert (report.problem.seq, report.problem.reason) == (
        4,
        "checkpoint 4 has an invalid signature",
    )
