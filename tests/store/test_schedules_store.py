"""Schedules under faults: one that cannot be evaluated, overdue ones, operator state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from duly.engine.errors import ScheduleBroken
from duly.engine.planning import PlannedRun
from duly.engine.states import RunStatus
from duly.engine.store.base import (
    FireDecision,
    MisfireTally,
    NewSchedule,
    RunFilter,
    ScheduleRow,
)
from duly.engine.store.sql import SqlStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def hourly(name: str, **kw: object) -> NewSchedule:
    return NewSchedule(name=name, job_name="j", spec="every:1h", **kw)  # type: ignore[arg-type]


def planner(now: datetime, broken: frozenset[str] = frozenset()):
    """Fires each hour up to ``now``; raises for the schedules named in ``broken``."""
    seen: list[str] = []

    def plan(sched: ScheduleRow, active: bool) -> FireDecision:
        seen.append(sched.name)
        if sched.name in broken:
            raise ScheduleBroken(f"SpecError: unknown timezone for {sched.name}")
        fires, t = [], sched.next_fire_at
        assert t is not None
        while t <= now:
            fires.append(PlannedRun(t, RunStatus.QUEUED))
            t += timedelta(hours=1)
        return FireDecision(runs=fires, next_fire_at=t)

    plan.seen = seen  # type: ignore[attr-defined]
    return plan


def scheduled_for(store: SqlStore, name: str) -> list[datetime]:
    sched = store.schedule_get(name)
    assert sched is not None
    return sorted(
        r.scheduled_for for r in store.run_list(RunFilter(limit=100)) if r.schedule_id == sched.id
    )


# -- a schedule that cannot be evaluated ---------------------------------------------------


def test_a_schedule_that_cannot_be_evaluated_is_set_aside_and_the_others_fire(
    store: SqlStore,
) -> None:
    for name in ("a", "bad", "z"):
        store.schedule_upsert(hourly(name), T0, lambda s: T0)
    now = T0 + timedelta(minutes=30)
    fired = store.schedule_fire_due(now, 10, planner(now, frozenset({"bad"})))
    by_name = {f.schedule.name: f for f in fired}
    assert by_name["bad"].broken_reason == "SpecError: unknown timezone for bad"
    assert by_name["bad"].created_run_ids == ()
    assert by_name["a"].broken_reason is None and len(by_name["a"].created_run_ids) == 1
    assert scheduled_for(store, "a") == scheduled_for(store, "z") == [T0]
    bad = store.schedule_get("bad")
    assert bad is not None
    assert bad.broken_reason == "SpecError: unknown timezone for bad" and bad.broken_at == now
    assert bad.next_fire_at == T0  # untouched: the fire is still owed

    # Set aside: neither picked by the next pass nor waited for.
    later = T0 + timedelta(hours=1)
    again = planner(later)
    store.schedule_fire_due(later, 10, again)
    assert sorted(again.seen) == ["a", "z"]  # type: ignore[attr-defined]
    assert store.schedule_next_due() == T0 + timedelta(hours=2)


def test_an_upsert_or_a_resume_clears_the_broken_state(store: SqlStore) -> None:
    store.schedule_upsert(hourly("bad"), T0, lambda s: T0)
    store.schedule_upsert(hourly("other"), T0, lambda s: T0)
    store.schedule_fire_due(T0, 10, planner(T0, frozenset({"bad", "other"})))
    assert store.schedule_next_due() is None

    fixed = store.schedule_upsert(hourly("bad"), T0, lambda s: T0 + timedelta(days=9))
    assert fixed.broken_reason is None and fixed.broken_at is None
    assert fixed.next_fire_at == T0  # same definition: what it missed is still owed
    resumed = store.schedule_set_paused("other", False, T0, T0 + timedelta(hours=1))
    assert resumed.broken_reason is None and resumed.next_fire_at == T0 + timedelta(hours=1)

    now = T0 + timedelta(hours=1)
    store.schedule_fire_due(now, 10, planner(now))
    assert scheduled_for(store, "bad") == [T0, T0 + timedelta(hours=1)]
    assert scheduled_for(store, "other") == [T0 + timedelta(hours=1)]


def test_overdue_schedules_are_listed_broken_included_paused_not(store: SqlStore) -> None:
    store.schedule_upsert(hourly("late"), T0, lambda s: T0)
    store.schedule_upsert(hourly("later"), T0, lambda s: T0 + timedelta(minutes=20))
    store.schedule_upsert(hourly("bad"), T0, lambda s: T0 - timedelta(hours=1))
    store.schedule_upsert(hourly("paused", paused=True), T0, lambda s: T0)
    store.schedule_upsert(hourly("soon"), T0, lambda s: T0 + timedelta(hours=1))
    store.schedule_fire_due(T0 - timedelta(hours=1), 10, planner(T0, frozenset({"bad"})))
    overdue = store.schedule_overdue(T0 + timedelta(minutes=30), 10)
    assert [s.name for s in overdue] == ["bad", "late", "later"]
    assert overdue[0].broken_reason is not None
    assert [s.name for s in store.schedule_overdue(T0 + timedelta(minutes=30), 1)] == ["bad"]


# -- operator state and declarations ---------------------------------------------------------


def declared(name: str = "s", **kw: object) -> NewSchedule:
    """A schedule as the configuration file declares it at each start."""
    return hourly(name, source="config", **kw)


def test_an_operators_pause_outlives_the_declaration_upserted_again(store: SqlStore) -> None:
    store.schedule_upsert(declared(), T0, lambda s: T0)
    store.schedule_set_paused("s", True, T0, None)
    # A restart: the file still declares it enabled.
    again = store.schedule_upsert(declared(), T0 + timedelta(hours=1), lambda s: T0)
    assert again.paused and again.paused_set_by == "api"
    # The file's definition still applies; the pause stays.
    moved = NewSchedule(name="s", job_name="j", spec="every:2h", source="config")
    row = store.schedule_upsert(moved, T0, lambda s: T0 + timedelta(hours=2))
    assert row.spec == "every:2h" and row.paused
    assert store.schedule_fire_due(T0 + timedelta(days=1), 10, planner(T0)) == []


def test_an_operators_resume_outlives_a_declaration_disabling_it(store: SqlStore) -> None:
    store.schedule_upsert(declared(paused=True), T0, lambda s: T0)
    store.schedule_set_paused("s", False, T0, T0 + timedelta(hours=1))
    row = store.schedule_upsert(declared(paused=True), T0, lambda s: T0)
    assert not row.paused and row.next_fire_at == T0 + timedelta(hours=1)


def test_the_declared_pause_applies_while_no_operator_set_one(store: SqlStore) -> None:
    store.schedule_upsert(declared(paused=True), T0, lambda s: T0)
    enabled = store.schedule_upsert(declared(), T0, lambda s: T0 + timedelta(hours=1))
    assert not enabled.paused and enabled.next_fire_at == T0 + timedelta(hours=1)
    disabled = store.schedule_upsert(declared(paused=True), T0, lambda s: T0)
    assert disabled.paused


def test_a_declaration_leaves_a_schedule_an_operator_defined_as_it_is(store: SqlStore) -> None:
    edited = NewSchedule(name="s", job_name="j", spec="every:2h", args={"by": "operator"})
    store.schedule_upsert(edited, T0, lambda s: T0 + timedelta(hours=2))
    row = store.schedule_upsert(declared(), T0, lambda s: T0)
    assert (row.spec, row.args, row.source) == ("every:2h", {"by": "operator"}, "api")
    assert row.next_fire_at == T0 + timedelta(hours=2) and row.version == 1
    # An operator's edit of a declared schedule takes it over the same way.
    store.schedule_upsert(declared("d"), T0, lambda s: T0)
    store.schedule_upsert(hourly("d", args={"by": "operator"}), T0, lambda s: T0)
    assert store.schedule_upsert(declared("d"), T0, lambda s: T0).args == {"by": "operator"}


# -- a catch-up spanning several passes -------------------------------------------------------


def test_a_catch_up_carries_its_tally_to_the_next_pass_until_it_is_done(store: SqlStore) -> None:
    store.schedule_upsert(hourly("s"), T0, lambda s: T0)
    now = T0 + timedelta(hours=10)
    tally = MisfireTally(3, 3, T0, T0 + timedelta(hours=2))

    def part(sched: ScheduleRow, active: bool) -> FireDecision:
        assert sched.catchup is None
        runs = [PlannedRun(T0 + timedelta(hours=h), RunStatus.MISSED) for h in range(3)]
        return FireDecision(
            runs=runs, next_fire_at=T0 + timedelta(hours=3), misfires=tally, catching_up=True
        )

    store.schedule_fire_due(now, 10, part)
    row = store.schedule_get("s")
    assert row is not None and row.catchup == tally

    def rest(sched: ScheduleRow, active: bool) -> FireDecision:
        assert sched.catchup == tally  # what the earlier pass counted
        return FireDecision(runs=[], next_fire_at=now + timedelta(hours=1), misfires=tally)

    store.schedule_fire_due(now, 10, rest)
    row = store.schedule_get("s")
    assert row is not None and row.catchup is None and row.catchup_late == 0
