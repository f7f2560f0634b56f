"""The engine's audit events on both stores: each change has its event, in its transaction.

Every run state change (fired, claimed, succeeded, failed, retrying, cancelled, lease
expired, handed back) and every schedule, alert and retention change records exactly its
event; a transaction changing several runs with the same action records one batch event
listing them (one changing one run, that run's own event); and a change without its event,
or an event without its change, cannot happen: the transaction is failed at each step (the
recorder refuses, the database refuses the event, a statement after the event fails) and
neither the change nor the event remains.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, event, text

from duly.audit import AuditFilter, AuditLog, record
from duly.clock import ManualClock, SystemClock
from duly.config import AuditSettings
from duly.engine.auditing import AuditEntry
from duly.engine.errors import ScheduleBroken
from duly.engine.planning import PlannedRun
from duly.engine.states import RunStatus
from duly.engine.store.base import (
    ClaimedRun,
    ClaimParams,
    CompleteParams,
    FireDecision,
    NewAlert,
    NewRun,
    NewSchedule,
    ScheduleRow,
)
from duly.engine.store.sql import SqlStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Event:
    action: str
    object_type: str
    object_id: str | None
    details: dict[str, Any]


@pytest.fixture
def audited(store: SqlStore) -> SqlStore:
    store.audit = record
    return store


@pytest.fixture
def audit(store: SqlStore, clock: ManualClock, tmp_path: Path) -> AuditLog:
    settings = AuditSettings(signing_key_file=tmp_path / "audit.pem")
    return AuditLog(store.engine, clock, settings)


def events(store: SqlStore, *, since: int = 0) -> list[Event]:
    """The recorded events in insert order (after the first ``since``)."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT action, object_type, object_id, details FROM audit_events ORDER BY id")
        ).all()
    return [Event(r[0], r[1], r[2], json.loads(r[3])) for r in rows[since:]]


def actions(store: SqlStore, *, since: int = 0) -> list[tuple[str, str | None]]:
    return [(e.action, e.object_id) for e in events(store, since=since)]


def per_run(got: Sequence[Event]) -> list[Event]:
    """``got`` with each batch event expanded: one event per run it lists, as if recorded alone."""
    out: list[Event] = []
    for e in got:
        if e.object_type != "run" or e.object_id is not None:
            out.append(e)
            continue
        shared = {k: v for k, v in e.details.items() if k not in ("count", "runs")}
        assert e.details["count"] == len(e.details["runs"]) > 1
        for item in e.details["runs"]:
            own = {k: v for k, v in item.items() if k != "id"}
            out.append(Event(e.action, "run", str(item["id"]), {**shared, **own}))
    return out


def run_actions(store: SqlStore, *, since: int = 0) -> list[tuple[str, str | None]]:
    return [(e.action, e.object_id) for e in per_run(events(store, since=since))]


def seal_all(audit: AuditLog, seconds: float = 30.0) -> None:
    """Seal until nothing is left (on PostgreSQL, any open transaction of the cluster delays it)."""
    clock = SystemClock()
    deadline = clock.now() + timedelta(seconds=seconds)
    audit.seal()
    while audit.status().unsealed:
        assert clock.now() < deadline, "events still unsealed"
        clock.sleep_blocking(0.05)
        audit.seal()


def assert_chain_verifies(audit: AuditLog) -> None:
    seal_all(audit)
    assert audit.checkpoint(force=True) is not None
    report = audit.verify(key=audit.verify_key())
    assert report.ok, report.problem
    assert (report.first_seq, report.unsealed) == (1, 0)


def new_run(key: str, *, at: datetime = T0, max_attempts: int = 3) -> NewRun:
    return NewRun(job_name="j", scheduled_for=at, idempotency_key=key, max_attempts=max_attempts)


def claim(
    store: SqlStore,
    now: datetime = T0,
    *,
    limit: int = 10,
    node: str = "n1",
    limits: dict[str, int] | None = None,
) -> list[ClaimedRun]:
    return store.run_claim(
        ClaimParams(
            node=node,
            queues=("default",),
            limit=limit,
            now=now,
            lease_seconds=30,
            job_limits=limits or {},
        )
    )


def outcome(
    claimed: ClaimedRun, status: RunStatus, now: datetime = T0, **kw: Any
) -> CompleteParams:
    run = claimed.run
    return CompleteParams(
        run_id=run.id,
        fencing_token=run.fencing_token,
        attempt=run.attempt,
        status=status,
        now=now,
        started_at=now,
        **kw,
    )


def hourly(name: str = "s", **kw: Any) -> NewSchedule:
    return NewSchedule(**{"name": name, "job_name": "j", "spec": "every:1h", **kw})


def fires(
    *hours: int, cancel_previous: bool = False
) -> Callable[[ScheduleRow, bool], FireDecision]:
    """A planner firing the given hours after T0, next fire an hour after the last."""

    def plan(sched: ScheduleRow, active: bool) -> FireDecision:
        at = [T0 + timedelta(hours=h) for h in hours]
        return FireDecision(
            runs=[PlannedRun(t, RunStatus.QUEUED) for t in at],
            next_fire_at=at[-1] + timedelta(hours=1),
            cancel_previous=cancel_previous,
        )

    return plan


def broken_planner(sched: ScheduleRow, active: bool) -> FireDecision:
    raise ScheduleBroken("SpecError: unknown timezone")


# -- each transition records exactly its event ------------------------------------------


def test_a_manual_run_records_its_fire_once(audited: SqlStore) -> None:
    run, _ = audited.run_enqueue(new_run("k1"), T0)
    audited.run_enqueue(new_run("k1"), T0)  # the same key: the existing run, nothing new

    (fired,) = events(audited)
    assert (fired.action, fired.object_type, fired.object_id) == ("run.fire", "run", str(run.id))
    assert fired.details == {
        "job": "j",
        "scheduled_for": T0.isoformat(),
        "origin": "manual",
        "status": "queued",
    }


def test_enqueue_many_records_the_new_runs_only(audited: SqlStore) -> None:
    audited.run_enqueue(new_run("a"), T0)
    ids = audited.run_enqueue_many([new_run(k) for k in ("a", "b", "c")], T0)

    # One batch event for the two new runs, their shared fields once.
    assert events(audited, since=1) == [
        Event("run.fire", "run", None,
              {"job": "j", "scheduled_for": T0.isoformat(), "origin": "manual", "status": "queued",
               "count": 2, "runs": [{"id": ids["b"]}, {"id": ids["c"]}]})
    ]  # fmt: skip


def test_each_fired_run_records_its_schedule(audited: SqlStore) -> None:
    audited.schedule_upsert(hourly(overlap="allow"), T0, lambda s: T0)
    before = len(events(audited))
    fired = audited.schedule_fire_due(T0 + timedelta(hours=2), 10, fires(0, 1, 2))

    assert len(events(audited, since=before)) == 1
    got = per_run(events(audited, since=before))
    assert [(e.action, e.object_id) for e in got] == [
        ("run.fire", str(run_id)) for run_id in fired[0].created_run_ids
    ]
    assert [e.details["scheduled_for"] for e in got] == [
        (T0 + timedelta(hours=h)).isoformat() for h in range(3)
    ]
    assert {(e.details["origin"], e.details["schedule"]) for e in got} == {("schedule", "s")}


def test_a_fire_of_an_existing_instant_records_nothing(audited: SqlStore) -> None:
    audited.schedule_upsert(hourly(overlap="allow"), T0, lambda s: T0)
    audited.schedule_fire_due(T0, 10, fires(0))
    audited.schedule_upsert(hourly(overlap="allow", spec="every:2h"), T0, lambda s: T0)
    before = len(events(audited))

    audited.schedule_fire_due(T0 + timedelta(hours=1), 10, fires(0, 1))

    assert [e.details["scheduled_for"] for e in events(audited, since=before)] == [
        (T0 + timedelta(hours=1)).isoformat()
    ]


@pytest.mark.parametrize("limited", [False, True], ids=["plain", "limited"])
def test_each_claimed_run_records_its_node_attempt_and_fence(
    audited: SqlStore, limited: bool
) -> None:
    # A job limit takes PostgreSQL's general claim path instead of its one-statement one.
    ids = audited.run_enqueue_many([new_run(f"k{i}") for i in range(3)], T0)
    got = claim(audited, node="node-a", limits={"j": 10} if limited else None)

    (batch,) = events(audited, since=1)
    assert (batch.action, batch.object_id, batch.details["count"]) == ("run.claim", None, 3)
    assert (batch.details["node"], batch.details["attempt"]) == ("node-a", 1)  # shared: once
    assert len(got) == 3 and {c.run.id for c in got} == set(ids.values())
    assert [(e.object_id, e.details) for e in per_run([batch])] == [
        (str(c.run.id), {"node": "node-a", "attempt": 1, "fence": c.run.fencing_token}) for c in got
    ]


@pytest.mark.parametrize(
    ("status", "action", "extra"),
    [
        (RunStatus.SUCCEEDED, "run.succeed", {}),
        (RunStatus.FAILED, "run.fail", {"error_code": "BOOM"}),
        (RunStatus.RETRYING, "run.retry", {"error_code": "BOOM"}),
        (RunStatus.CANCELLED, "run.cancel", {"error_code": "CANCELLED"}),
    ],
)
def test_each_outcome_records_its_action(
    audited: SqlStore, status: RunStatus, action: str, extra: dict[str, Any]
) -> None:
    audited.run_enqueue(new_run("k1"), T0)
    (c,) = claim(audited)
    later = T0 + timedelta(minutes=5)
    not_before = later if status is RunStatus.RETRYING else None
    audited.run_complete(outcome(c, status, **extra, not_before=not_before))

    (done,) = events(audited, since=2)
    assert (done.action, done.object_id) == (action, str(c.run.id))
    expected: dict[str, Any] = {"attempt": 1, **extra}
    if not_before is not None:
        expected["not_before"] = later.isoformat()
    assert done.details == expected


def test_a_lost_lease_records_no_outcome(audited: SqlStore) -> None:
    audited.run_enqueue(new_run("k1"), T0)
    (c,) = claim(audited)
    audited.run_reap_expired(T0 + timedelta(minutes=1), 10, lambda r: (RunStatus.RETRYING, T0))
    before = len(events(audited))

    assert audited.run_complete_many([outcome(c, RunStatus.SUCCEEDED)]) == [False]

    assert events(audited, since=before) == []


@pytest.mark.parametrize("with_retry", [False, True], ids=["one-statement", "transaction"])
def test_a_batch_of_outcomes_records_one_event_per_run_held(
    audited: SqlStore, with_retry: bool
) -> None:
    # A retry in the batch takes the transaction path (it wakes the workers) on PostgreSQL.
    audited.run_enqueue_many([new_run(f"k{i}") for i in range(4)], T0)
    lost, *held = claim(audited)
    audited.run_reap_expired(
        T0 + timedelta(minutes=1), 1, lambda r: (RunStatus.RETRYING, T0 + timedelta(hours=1))
    )
    before = len(events(audited))
    statuses = [RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.SUCCEEDED]
    if with_retry:
        statuses[1] = RunStatus.RETRYING

    ok = audited.run_complete_many(
        [outcome(lost, RunStatus.SUCCEEDED)]
        + [outcome(c, s) for c, s in zip(held, statuses, strict=True)]
    )

    assert ok == [False, True, True, True]
    action = {RunStatus.SUCCEEDED: "run.succeed", RunStatus.FAILED: "run.fail",
              RunStatus.RETRYING: "run.retry"}  # fmt: skip
    # The two successes in one batch event, the other outcome its run's own.
    assert actions(audited, since=before) == [
        ("run.succeed", None),
        (action[statuses[1]], str(held[1].run.id)),
    ]
    assert sorted(run_actions(audited, since=before)) == sorted(
        (action[s], str(c.run.id)) for c, s in zip(held, statuses, strict=True)
    )


def test_a_batch_with_effects_records_every_outcome_or_none(audited: SqlStore) -> None:
    audited.run_enqueue_many([new_run(f"k{i}") for i in range(3)], T0)
    got = claim(audited)
    before = len(events(audited))
    effects = audited.effects_begin()
    effects.connection.execute(text("UPDATE nodes SET pid = 1"))
    assert (
        audited.run_complete_batch([outcome(c, RunStatus.SUCCEEDED) for c in got], effects)
        == [True] * 3
    )
    assert actions(audited, since=before) == [("run.succeed", None)]
    assert run_actions(audited, since=before) == [("run.succeed", str(c.run.id)) for c in got]

    audited.run_enqueue_many([new_run(f"m{i}") for i in range(2)], T0)
    lost, kept = claim(audited)
    audited.run_reap_expired(T0 + timedelta(minutes=1), 1, lambda r: (RunStatus.RETRYING, T0))
    before = len(events(audited))
    effects = audited.effects_begin()
    effects.connection.execute(text("UPDATE nodes SET pid = 2"))
    batch = [outcome(lost, RunStatus.SUCCEEDED), outcome(kept, RunStatus.SUCCEEDED)]
    assert audited.run_complete_batch(batch, effects) == [False, True]
    assert events(audited, since=before) == []


def test_operator_retry_and_cancel_record_their_actions(audited: SqlStore) -> None:
    run, _ = audited.run_enqueue(new_run("k1", max_attempts=1), T0)
    audited.run_cancel(run.id, T0)
    audited.run_retry(run.id, T0)
    (c,) = claim(audited)
    audited.run_cancel(run.id, T0)  # running: the node is asked to stop
    audited.run_complete(outcome(c, RunStatus.CANCELLED, error_code="CANCELLED"))

    got = events(audited, since=1)
    assert [(e.action, e.details) for e in got] == [
        ("run.cancel", {"error_code": "CANCELLED"}),
        ("run.retry", {"manual": True, "previous": "cancelled", "max_attempts": 1}),
        ("run.claim", {"node": "n1", "attempt": 1, "fence": 1}),
        ("run.cancel", {"requested": True}),
        ("run.cancel", {"attempt": 1, "error_code": "CANCELLED"}),
    ]
    assert {e.object_id for e in got} == {str(run.id)}


def test_a_refused_retry_or_cancel_records_nothing(audited: SqlStore) -> None:
    run, _ = audited.run_enqueue(new_run("k1"), T0)
    with pytest.raises(Exception, match="cannot be retried"):
        audited.run_retry(run.id, T0)
    audited.run_cancel(run.id, T0)
    with pytest.raises(Exception, match="cannot be cancelled"):
        audited.run_cancel(run.id, T0)

    assert actions(audited) == [("run.fire", str(run.id)), ("run.cancel", str(run.id))]


def test_an_expired_lease_records_what_the_reaper_decided(audited: SqlStore) -> None:
    a, _ = audited.run_enqueue(new_run("a", max_attempts=2), T0)
    b, _ = audited.run_enqueue(new_run("b", max_attempts=1), T0)
    claim(audited, node="gone")
    later = T0 + timedelta(minutes=1)

    audited.run_reap_expired(
        later,
        10,
        lambda r: (
            (RunStatus.RETRYING, later) if r.attempt < r.max_attempts else (RunStatus.FAILED, later)
        ),
    )

    (batch,) = events(audited, since=3)
    assert (batch.action, batch.details["count"]) == ("run.lease_expire", 2)
    got = {e.object_id: e for e in per_run([batch])}
    assert got[str(a.id)].details == {
        "attempt": 1,
        "node": "gone",
        "status": "retrying",
        "not_before": later.isoformat(),
    }
    assert got[str(b.id)].details == {"attempt": 1, "node": "gone", "status": "failed"}


def test_a_hand_back_is_recorded(audited: SqlStore) -> None:
    audited.run_enqueue(new_run("a"), T0)
    (c,) = claim(audited)
    assert audited.run_hand_back(c.run.id, c.run.fencing_token, 1, T0)
    assert not audited.run_hand_back(c.run.id, c.run.fencing_token, 1, T0)

    assert events(audited, since=2) == [
        Event("run.hand_back", "run", str(c.run.id), {"attempt": 1, "status": "retrying"})
    ]


def test_cancel_previous_records_the_runs_it_cancels(audited: SqlStore) -> None:
    audited.schedule_upsert(hourly(overlap="cancel_previous"), T0, lambda s: T0)
    audited.schedule_fire_due(T0 + timedelta(hours=1), 10, fires(0, 1))
    (running,) = claim(audited, limit=1)  # the other run stays queued
    before = len(events(audited))

    fired = audited.schedule_fire_due(T0 + timedelta(hours=2), 10, fires(2, cancel_previous=True))

    got = events(audited, since=before)
    (new_id,) = fired[0].created_run_ids
    assert got[0] == Event("run.fire", "run", str(new_id), got[0].details)
    assert [(e.action, e.object_id) for e in got[1:]] == [("run.cancel", None)]
    cancels = {e.object_id: e.details for e in per_run(got[1:])}
    assert all(e.action == "run.cancel" for e in got[1:]) and len(cancels) == 2
    assert cancels[str(running.run.id)] == {"error_code": "OVERLAP", "requested": True}
    assert {"error_code": "OVERLAP"} in cancels.values()


def test_schedule_changes_record_before_and_after_of_what_changed(audited: SqlStore) -> None:
    audited.schedule_upsert(hourly(args={"account": "DE89370400440532013000"}), T0, lambda s: T0)
    audited.schedule_upsert(hourly(args={"account": "DE89370400440532013000"}), T0, lambda s: T0)
    audited.schedule_upsert(
        hourly(spec="every:2h", args={"account": "DE00000000000000000001"}),
        T0,
        lambda s: T0 + timedelta(hours=2),
    )
    audited.schedule_set_paused("s", True, T0, None)
    audited.schedule_set_paused("s", False, T0, T0 + timedelta(hours=4))
    assert audited.schedule_delete("s", T0)
    assert not audited.schedule_delete("s", T0)

    created, updated, paused, resumed, deleted = events(audited)
    assert [e.action for e in (created, updated, paused, resumed, deleted)] == [
        "schedule.create",
        "schedule.update",
        "schedule.pause",
        "schedule.resume",
        "schedule.delete",
    ]
    assert {e.object_id for e in (created, updated, paused, resumed, deleted)} == {"s"}
    assert created.details["after"]["spec"] == "every:1h"
    assert created.details["after"]["args"] == ["account"]  # the keys, never the values
    assert updated.details["before"] == {"spec": "every:1h", "next_fire_at": T0.isoformat()}
    assert updated.details["after"] == {
        "spec": "every:2h",
        "next_fire_at": (T0 + timedelta(hours=2)).isoformat(),
    }
    assert updated.details["args_changed"] is True
    assert resumed.details["next_fire_at"] == (T0 + timedelta(hours=4)).isoformat()
    assert deleted.details["runs_detached"] == 0
    assert "DE89" not in json.dumps([e.details for e in events(audited)])


def test_declared_schedules_sync_and_an_unchanged_one_records_nothing(audited: SqlStore) -> None:
    audited.schedule_upsert(hourly("cfg", source="config"), T0, lambda s: T0)
    audited.schedule_upsert(hourly("cfg", source="config"), T0, lambda s: T0)  # next start
    audited.schedule_upsert(hourly("sys", source="system"), T0, lambda s: T0)
    audited.schedule_upsert(hourly("cfg", source="config", queue="q2"), T0, lambda s: T0)

    got = events(audited)
    assert [(e.action, e.object_id, e.details["created"]) for e in got] == [
        ("schedule.sync", "cfg", True),
        ("schedule.sync", "sys", True),
        ("schedule.sync", "cfg", False),
    ]
    assert got[2].details["before"] == {"queue": "default"}
    assert got[2].details["after"] == {"queue": "q2"}


def test_a_broken_schedule_is_recorded(audited: SqlStore) -> None:
    audited.schedule_upsert(hourly(), T0, lambda s: T0)
    (fired,) = audited.schedule_fire_due(T0, 10, broken_planner)

    (_, broke) = events(audited)
    assert (broke.action, broke.object_id) == ("schedule.break", "s")
    assert broke.details["reason"] == fired.broken_reason == "SpecError: unknown timezone"


def test_alert_ack_and_resolve_are_recorded(audited: SqlStore) -> None:
    alert, _ = audited.alert_raise(
        NewAlert(dedupe_key="k", rule="r", severity="high", title="t", now=T0)
    )
    audited.alert_set_status(alert.id, "acked", "alice", T0)
    audited.alert_set_status(alert.id, "resolved", "bob", T0)
    with pytest.raises(Exception, match="already resolved"):
        audited.alert_set_status(alert.id, "acked", "eve", T0)

    assert events(audited) == [
        Event("alert.ack", "alert", str(alert.id), {"rule": "r", "by": "alice"}),
        Event("alert.resolve", "alert", str(alert.id), {"rule": "r", "by": "bob"}),
    ]


def test_pruning_records_what_it_removed_per_batch(audited: SqlStore) -> None:
    for i in range(3):
        t = T0 - timedelta(days=100)
        audited.run_enqueue(new_run(f"k{i}", at=t), t)
        (c,) = claim(audited, t)
        audited.run_complete(outcome(c, RunStatus.SUCCEEDED, now=t))
    before = len(events(audited))
    cutoff = T0 - timedelta(days=90)

    assert audited.execution_prune(cutoff, batch=2, now=T0) == 3

    assert events(audited, since=before) == [
        Event("retention.prune", "table", "job_executions",
              {"table": "job_executions", "count": n, "cutoff": cutoff.isoformat()})
        for n in (2, 1)
    ]  # fmt: skip


# -- batches: one event, one insert ------------------------------------------------------


class Counting:
    """A recorder that counts its calls and passes them on."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, conn: Connection, entries: Sequence[AuditEntry], at: datetime) -> None:
        self.calls.append(len(entries))
        record(conn, entries, at)


@pytest.fixture
def audit_inserts(store: SqlStore) -> Iterator[list[bool]]:
    """Every INSERT INTO audit_events sent, as whether it was an executemany."""
    sent: list[bool] = []

    def seen(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO AUDIT_EVENTS"):
            sent.append(many)

    event.listen(store.engine, "before_cursor_execute", seen)
    yield sent
    event.remove(store.engine, "before_cursor_execute", seen)


def test_batches_record_their_runs_in_one_event_and_one_statement(
    store: SqlStore, audit_inserts: list[bool]
) -> None:
    counting = Counting()
    store.audit = counting
    for i in range(3):
        store.schedule_upsert(hourly(f"s{i}", overlap="allow"), T0, lambda s: T0)
    counting.calls.clear()
    audit_inserts.clear()

    store.schedule_fire_due(T0 + timedelta(hours=3), 10, fires(0, 1, 2, 3))
    got = claim(store, T0 + timedelta(hours=3), limit=12)
    store.run_complete_many([outcome(c, RunStatus.SUCCEEDED) for c in got])

    # Each transaction's 12 runs, one action: one entry, one insert.
    assert counting.calls == [1, 1, 1]
    assert audit_inserts == [False, False, False]
    assert [e.details["count"] for e in events(store)[-3:]] == [12, 12, 12]


def test_listing_a_run_finds_the_batch_events_that_list_it(
    audited: SqlStore, audit: AuditLog
) -> None:
    # Ids 1-11 fired in a batch, 12 alone, 13-130 in a batch (with 112, 120-129: 12 and
    # more digits); all claimed in one batch; then reaped, items with a key after "id".
    audited.run_enqueue_many([new_run(f"a{i}") for i in range(1, 12)], T0)
    (twelve, _) = audited.run_enqueue(new_run("a12"), T0)
    audited.run_enqueue_many([new_run(f"a{i}") for i in range(13, 131)], T0)
    assert len(claim(audited, limit=200)) == 130
    audited.run_reap_expired(
        T0 + timedelta(minutes=1),
        200,
        lambda r: (RunStatus.FAILED, T0) if r.id % 2 else (RunStatus.RETRYING, T0),
    )
    reaped = events(audited)[-1]
    assert '"id":12,' in json.dumps(reaped.details, sort_keys=True, separators=(",", ":"))

    def listed(run_id: str, object_type: str | None = "run") -> list[tuple[str, str | None]]:
        flt = AuditFilter(object_type=object_type, object_id=run_id, limit=500)
        return [(e.record.action, e.record.object_id) for e in audit.list(flt)]

    batches = [("run.lease_expire", None), ("run.claim", None)]
    assert twelve.id == 12
    assert listed("12") == [*batches, ("run.fire", "12")]
    assert listed("1") == [*batches, ("run.fire", None)]
    assert listed("123") == listed("13") == listed("130") == [*batches, ("run.fire", None)]
    assert listed("131") == listed("012") == listed("1%") == []
    assert listed("12", object_type="schedule") == []
    assert listed("12", object_type=None) == [("run.fire", "12")]  # batches need the type


# -- atomicity: a change and its event commit together or not at all ---------------------

Act = Callable[[SqlStore], object]


@dataclass(frozen=True)
class Scenario:
    name: str
    prepare: Callable[[SqlStore], None]
    act: Act


def _queued(*keys: str, max_attempts: int = 3) -> Callable[[SqlStore], None]:
    def prepare(store: SqlStore) -> None:
        for key in keys:
            store.run_enqueue(new_run(key, max_attempts=max_attempts), T0)

    return prepare


def _running(*keys: str) -> Callable[[SqlStore], None]:
    def prepare(store: SqlStore) -> None:
        _queued(*keys)(store)
        claim(store)

    return prepare


def _outcomes(store: SqlStore, *statuses: RunStatus) -> list[CompleteParams]:
    """The outcomes of the running runs, in id order, with ``statuses`` in turn."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id, fencing_token, attempt FROM runs WHERE status = 'running' ORDER BY id")
        ).all()
    return [
        CompleteParams(
            run_id=r[0], fencing_token=r[1], attempt=r[2], status=s, now=T0, started_at=T0,
            not_before=T0 + timedelta(minutes=1) if s is RunStatus.RETRYING else None,
        )
        for r, s in zip(rows, statuses, strict=True)
    ]  # fmt: skip


def _complete_with_effects(store: SqlStore) -> object:
    (params,) = _outcomes(store, RunStatus.SUCCEEDED)  # read before the effects hold the lock
    effects = store.effects_begin()
    effects.connection.execute(text("UPDATE nodes SET pid = 7"))
    effects.connection.execute(
        text(
            "INSERT INTO alerts (dedupe_key, rule, severity, status, title, details, occurrences,"
            " first_raised_at, last_raised_at) VALUES ('fx', 'r', 'low', 'open', 't', '{}', 1,"
            " :t, :t)"
        ),
        {"t": T0 if store.is_postgres else T0.replace(tzinfo=None)},
    )
    return store.run_complete(params, effects)


def _complete_batch(store: SqlStore) -> object:
    batch = _outcomes(store, *[RunStatus.SUCCEEDED] * 2)
    effects = store.effects_begin()
    effects.connection.execute(text("UPDATE nodes SET pid = 8"))
    return store.run_complete_batch(batch, effects)


def _first_run(store: SqlStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(text("SELECT min(id) FROM runs")).scalar_one())


def _with_schedule(**kw: Any) -> Callable[[SqlStore], None]:
    def prepare(store: SqlStore) -> None:
        store.schedule_upsert(hourly(**kw), T0, lambda s: T0)

    return prepare


def _finished_attempts(store: SqlStore) -> None:
    t = T0 - timedelta(days=100)
    store.run_enqueue(new_run("old", at=t), t)
    (c,) = claim(store, t)
    store.run_complete(outcome(c, RunStatus.SUCCEEDED, now=t))


def _open_alert(store: SqlStore) -> None:
    store.alert_raise(NewAlert(dedupe_key="k", rule="r", severity="high", title="t", now=T0))


def _nothing(store: SqlStore) -> None:
    return None


def _fired_once(store: SqlStore) -> None:
    _with_schedule(overlap="cancel_previous")(store)
    store.schedule_fire_due(T0, 10, fires(0))


def _cancelled(store: SqlStore) -> None:
    _queued("a")(store)
    store.run_cancel(_first_run(store), T0)


SCENARIOS = [
    Scenario("enqueue", _nothing, lambda s: s.run_enqueue(new_run("x"), T0)),
    Scenario("enqueue_many", _nothing, lambda s: s.run_enqueue_many([new_run("x"), new_run("y")], T0)),
    Scenario("fire_due", _with_schedule(overlap="allow"),
             lambda s: s.schedule_fire_due(T0 + timedelta(hours=1), 10, fires(0, 1))),
    Scenario("fire_cancel_previous", _fired_once,
             lambda s: s.schedule_fire_due(T0 + timedelta(hours=1), 10,
                                           fires(1, cancel_previous=True))),
    Scenario("schedule_broken", _with_schedule(), lambda s: s.schedule_fire_due(T0, 10, broken_planner)),
    Scenario("claim", _queued("a", "b"), lambda s: claim(s)),
    Scenario("claim_limited", _queued("a", "b"), lambda s: claim(s, limits={"j": 5})),
    Scenario("complete", _running("a"), lambda s: s.run_complete(_outcomes(s, RunStatus.FAILED)[0])),
    Scenario("complete_with_effects", _running("a"), _complete_with_effects),
    Scenario("complete_many", _running("a", "b"),
             lambda s: s.run_complete_many(_outcomes(s, RunStatus.SUCCEEDED, RunStatus.FAILED))),
    Scenario("complete_many_retry", _running("a", "b"),
             lambda s: s.run_complete_many(_outcomes(s, RunStatus.SUCCEEDED, RunStatus.RETRYING))),
    Scenario("complete_batch", _running("a", "b"), _complete_batch),
    Scenario("hand_back", _running("a"), lambda s: s.run_hand_back(_first_run(s), 1, 1, T0)),
    Scenario("reap", _running("a", "b"), lambda s: s.run_reap_expired(
        T0 + timedelta(minutes=1), 10, lambda r: (RunStatus.FAILED, T0))),
    Scenario("cancel", _queued("a"), lambda s: s.run_cancel(_first_run(s), T0)),
    Scenario("cancel_running", _running("a"), lambda s: s.run_cancel(_first_run(s), T0)),
    Scenario("retry", _cancelled, lambda s: s.run_retry(_first_run(s), T0)),
    Scenario("schedule_create", _nothing, lambda s: s.schedule_upsert(hourly(), T0, lambda _: T0)),
    Scenario("schedule_update", _with_schedule(),
             lambda s: s.schedule_upsert(hourly(spec="every:2h"), T0, lambda _: T0)),
    Scenario("schedule_sync", _nothing,
             lambda s: s.schedule_upsert(hourly(source="config"), T0, lambda _: T0)),
    Scenario("schedule_pause", _with_schedule(), lambda s: s.schedule_set_paused("s", True, T0, None)),
    Scenario("schedule_delete", _with_schedule(), lambda s: s.schedule_delete("s", T0)),
    Scenario("alert_ack", _open_alert, lambda s: s.alert_set_status(1, "acked", "alice", T0)),
    Scenario("prune", _finished_attempts,
             lambda s: s.execution_prune(T0 - timedelta(days=90), now=T0)),
]  # fmt: skip

_TABLES = ("runs", "job_executions", "schedules", "alerts", "nodes", "audit_events", "audit_head")


def snapshot(store: SqlStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables a scenario may change."""
    with store.engine.connect() as conn:
        return {
            table: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY 1"))]
            for table in _TABLES
        }


class Refused(Exception):
    """The recorder refused, as a failing recorder would."""


def refusing_recorder(conn: Connection, entries: Sequence[AuditEntry], at: datetime) -> None:
    raise Refused("the audit trail is unavailable")


def failing_after_the_event(conn: Connection, entries: Sequence[AuditEntry], at: datetime) -> None:
    record(conn, entries, at)
    conn.execute(text("SELECT * FROM no_such_table"))  # the next statement of the transaction


@pytest.fixture
def events_refused(store: SqlStore) -> Iterator[Callable[[bool], None]]:
    """``refuse(True)`` makes the database reject every insert into audit_events."""
    pg = store.is_postgres
    used = False

    def refuse(on: bool) -> None:
        nonlocal used
        if not (on or used):
            return
        used = True
        with store.engine.begin() as conn:
            if pg:
                conn.execute(text("DROP TRIGGER IF EXISTS test_refuse ON audit_events"))
            else:
                conn.execute(text("DROP TRIGGER IF EXISTS test_refuse"))
            if not on:
                return
            if pg:
                conn.execute(text(
                    "CREATE OR REPLACE FUNCTION test_refuse_event() RETURNS trigger"
                    " LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'event refused'; END $$"
                ))  # fmt: skip
                conn.execute(text(
                    "CREATE TRIGGER test_refuse BEFORE INSERT ON audit_events"
                    " FOR EACH ROW EXECUTE FUNCTION test_refuse_event()"
                ))  # fmt: skip
            else:
                conn.execute(text(
                    "CREATE TRIGGER test_refuse BEFORE INSERT ON audit_events"
                    " BEGIN SELECT RAISE(ABORT, 'event refused'); END"
                ))  # fmt: skip

    yield refuse
    refuse(False)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
@pytest.mark.parametrize("failure", ["recorder", "database", "after_event"])
def test_a_change_and_its_event_commit_together_or_not_at_all(
    store: SqlStore,
    audit: AuditLog,
    events_refused: Callable[[bool], None],
    scenario: Scenario,
    failure: str,
) -> None:
    store.audit = record
    scenario.prepare(store)
    before = snapshot(store)

    if failure == "recorder":
        store.audit = refusing_recorder
    elif failure == "after_event":
        store.audit = failing_after_the_event
    else:
        events_refused(True)
    with pytest.raises(Exception) as raised:
        scenario.act(store)
    assert failure != "recorder" or isinstance(raised.value, Refused)
    events_refused(False)

    assert snapshot(store) == before  # neither the change nor its event
    store.audit = record
    scenario.act(store)
    assert snapshot(store)["audit_events"] != before["audit_events"]  # the change records
    assert_chain_verifies(audit)


# -- the chain over a whole run of the engine ---------------------------------------------


def test_the_engine_s_events_form_a_chain_that_verifies(audited: SqlStore, audit: AuditLog) -> None:
    audited.schedule_upsert(hourly(overlap="allow"), T0, lambda s: T0)
    audited.schedule_fire_due(T0 + timedelta(hours=3), 10, fires(0, 1, 2, 3))
    audited.run_enqueue_many([new_run(f"k{i}") for i in range(20)], T0)
    for _ in range(3):
        got = claim(audited, T0 + timedelta(hours=3), limit=10)
        audited.run_complete_many(
            [outcome(c, RunStatus.SUCCEEDED if i % 3 else RunStatus.RETRYING,
                     not_before=T0) for i, c in enumerate(got)]
        )  # fmt: skip

    assert_chain_verifies(audit)
    with audited.engine.connect() as conn:
        seqs = conn.execute(text("SELECT seq FROM audit_events ORDER BY seq")).scalars().all()
    assert seqs == list(range(1, len(seqs) + 1))
    # The schedule, its fire of 4, the 20 enqueued, 3 claims, 3 completions of two outcomes.
    assert len(seqs) == 1 + 1 + 1 + 3 + 3 * 2
    assert len(per_run(events(audited))) == 1 + 4 + 20 + 30 + 30
