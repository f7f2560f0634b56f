"""The scheduler and the watchdog when schedules go wrong, on a manual clock over a real store."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from duly.clock import ManualClock
from duly.config import Settings
from duly.engine.alerts import StoreAlertSink
from duly.engine.client import EngineClient
from duly.engine.planning import MAX_MISSED_ROWS
from duly.engine.registry import JobRegistry
from duly.engine.services.base import Env
from duly.engine.services.watchdog import WatchdogService
from duly.engine.states import RunStatus
from duly.engine.store.base import NewSchedule, RunFilter
from duly.engine.store.sql import SqlStore
from duly.runtime import System, engine_options, job_registry
from duly.testing import EngineHarness, test_options

T0 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday


@pytest.fixture
def registry() -> JobRegistry:
    reg = JobRegistry()
    reg.job("tick")(lambda ctx: None)
    return reg


def fires_of(store: SqlStore, name: str) -> list[tuple[datetime, RunStatus]]:
    sched = store.schedule_get(name)
    assert sched is not None
    runs = store.run_list(RunFilter(limit=10_000))
    return sorted((r.scheduled_for, r.status) for r in runs if r.schedule_id == sched.id)


def hours(*hs: int) -> list[datetime]:
    return [T0 + timedelta(hours=h) for h in hs]


@pytest.mark.parametrize(
    ("field", "value"), [("timezone", "Atlantis/Lost_City"), ("spec", "every:1 fortnight")]
)
async def test_a_broken_schedule_is_set_aside_with_an_alert_and_the_others_keep_firing(
    store: SqlStore, clock: ManualClock, registry: JobRegistry, field: str, value: str
) -> None:
    async with EngineHarness(store, registry, clock) as h:
        h.client.upsert_schedule(NewSchedule(name="good", job_name="tick", spec="every:1h"))
        # Saved while valid; the system changed under it since (a zone dropped from tzdata,
        # a spec form withdrawn). The store takes it as it is, as a row written long ago.
        fields = {"spec": "every:1h", field: value}
        bad = NewSchedule(name="bad", job_name="tick", **fields)  # type: ignore[arg-type]
        store.schedule_upsert(bad, clock.now(), lambda s: T0 + timedelta(hours=1))
        await h.advance(timedelta(hours=3))

        assert [t for t, _ in fires_of(store, "good")] == hours(1, 2, 3)
        assert fires_of(store, "bad") == []
        row = store.schedule_get("bad")
        assert row is not None and row.broken_at == T0 + timedelta(hours=1)
        assert value in (row.broken_reason or "")
        alerts = {a.rule: a for a in store.alert_list()}
        assert alerts["schedule.broken"].details["schedule"] == "bad"
        assert alerts["schedule.broken"].occurrences == 1  # set aside: not retried every pass
        # Not firing, it falls behind: the watchdog says so too.
        assert alerts["schedule.overdue"].details["schedule"] == "bad"
        assert set(alerts) == {"schedule.broken", "schedule.overdue"}

        # Fixed by an upsert with a valid definition: it fires again from then on.
        h.client.upsert_schedule(NewSchedule(name="bad", job_name="tick", spec="daily:04:30"))
        await h.advance(timedelta(hours=2))
    row = store.schedule_get("bad")
    assert row is not None and row.broken_reason is None and row.broken_at is None
    assert fires_of(store, "bad") == [(T0 + timedelta(hours=4, minutes=30), RunStatus.SUCCEEDED)]
    assert [t for t, _ in fires_of(store, "good")] == hours(1, 2, 3, 4, 5)


def watchdog(store: SqlStore, clock: ManualClock, **options: object) -> WatchdogService:
    env = Env(store, clock, JobRegistry(), test_options(**options), StoreAlertSink(store))
    return WatchdogService(env)


def test_the_watchdog_alerts_on_a_schedule_whose_next_fire_is_overdue(
    store: SqlStore, clock: ManualClock
) -> None:
    # No scheduler fires it (all scheduler nodes stuck, say): only the watchdog can tell.
    store.schedule_upsert(NewSchedule(name="s", job_name="tick", spec="every:1h"), T0, lambda s: T0)
    paused = NewSchedule(name="p", job_name="tick", spec="every:1h", paused=True)
    store.schedule_upsert(paused, T0, lambda s: T0)
    dog = watchdog(store, clock, watchdog_overdue_minutes=2)
    clock.set(T0 + timedelta(minutes=10))
    dog.check_once()  # just started: the scheduler gets the threshold to catch up first
    clock.advance(timedelta(minutes=1))
    dog.check_once()
    assert store.alert_list() == []
    clock.advance(timedelta(minutes=1))
    dog.check_once()
    (alert,) = store.alert_list()
    assert alert.rule == "schedule.overdue" and alert.details["schedule"] == "s"
    assert alert.details["next_fire_at"] == T0.isoformat()
    assert alert.details["threshold_minutes"] == 2


async def test_the_watchdog_is_quiet_while_schedules_fire_on_time(
    store: SqlStore, clock: ManualClock, registry: JobRegistry
) -> None:
    async with EngineHarness(store, registry, clock) as h:
        h.client.upsert_schedule(NewSchedule(name="s", job_name="tick", spec="every:10m"))
        await h.advance(timedelta(hours=2))
    assert len(fires_of(store, "s")) == 12
    assert store.alert_list() == []


# -- operator state across restarts -------------------------------------------------------


def restart(store: SqlStore, clock: ManualClock, **schedule: object) -> None:
    """What a node does as it starts: sync the schedules declared in the configuration."""
    declared = {"name": "report", "job": "duly.noop", "spec": "every:1h", **schedule}
    settings = Settings(schedules=[declared])  # type: ignore[list-item]
    System(
        settings, store, job_registry(settings), clock, engine_options(settings)
    ).sync_schedules()


def test_a_restart_keeps_an_operators_pause_and_edits(store: SqlStore, clock: ManualClock) -> None:
    restart(store, clock)
    client = EngineClient(store, job_registry(Settings()), clock)
    client.pause("report")
    clock.advance(timedelta(hours=3))
    restart(store, clock)
    row = store.schedule_get("report")
    assert row is not None and row.paused
    restart(store, clock, spec="every:2h")  # the file may still change the definition
    row = store.schedule_get("report")
    assert row is not None and row.paused and row.spec == "every:2h"

    client.resume("report")
    client.upsert_schedule(NewSchedule(name="report", job_name="duly.noop", spec="daily:06:00"))
    restart(store, clock, spec="every:2h", enabled=False)
    row = store.schedule_get("report")
    assert row is not None and not row.paused and row.spec == "daily:06:00"


# -- catch-ups longer than one pass ----------------------------------------------------------


async def down_for(
    store: SqlStore, clock: ManualClock, registry: JobRegistry, down: timedelta, **sched: object
) -> Counter[RunStatus]:
    """A node fires a schedule, stops for ``down``, starts again; the statuses of the fires since."""
    options = test_options(max_fires_per_pass=3)
    async with EngineHarness(store, registry, clock, options) as h:
        h.client.upsert_schedule(NewSchedule(name="t", job_name="tick", **sched))  # type: ignore[arg-type]
        await h.advance(timedelta(minutes=30))
    clock.advance(down)
    async with EngineHarness(store, registry, clock, options):
        pass
    return Counter(status for t, status in fires_of(store, "t") if t > T0)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("run_once", {RunStatus.MISSED: 9, RunStatus.SUCCEEDED: 1}),
        ("run_all", {RunStatus.SUCCEEDED: 10}),
        ("skip", {RunStatus.MISSED: 10}),
    ],
)
async def test_a_catch_up_over_several_passes_follows_its_policy_and_alerts_once_with_all_fires(
    store: SqlStore,
    clock: ManualClock,
    registry: JobRegistry,
    policy: str,
    expected: dict[RunStatus, int],
) -> None:
    # Ten fires missed, three a pass: four passes.
    got = await down_for(
        store, clock, registry, timedelta(hours=10), spec="every:1h", misfire=policy
    )
    assert got == expected
    if policy == "run_once":  # the one catch-up run is for the latest late fire
        ran = [t for t, s in fires_of(store, "t") if s is RunStatus.SUCCEEDED and t > T0]
        assert ran == [T0 + timedelta(hours=10)]
    (alert,) = store.alert_list()
    assert alert.rule == "schedule.misfired" and alert.occurrences == 1
    assert alert.details["late_fires"] == 10
    assert alert.details["recorded_missed"] == expected.get(RunStatus.MISSED, 0)
    assert alert.details["first_late"] == (T0 + timedelta(hours=1)).isoformat()
    assert alert.details["last_late"] == (T0 + timedelta(hours=10)).isoformat()
    row = store.schedule_get("t")
    assert row is not None and row.catchup is None  # done: nothing carried over


async def test_the_misfire_alert_counts_late_fires_beyond_the_rows_it_writes(
    store: SqlStore, clock: ManualClock, registry: JobRegistry
) -> None:
    # One pass, more missed fires than are written as rows (MAX_MISSED_ROWS).
    options = test_options()
    async with EngineHarness(store, registry, clock, options) as h:
        spec = NewSchedule(name="t", job_name="tick", spec="every:1m", misfire="skip")
        h.client.upsert_schedule(spec)
        await h.advance(timedelta(seconds=30))
    clock.advance(timedelta(minutes=150))
    async with EngineHarness(store, registry, clock, options):
        pass
    # Fires 00:01 … 02:30; the last is within the grace, so on time and run.
    got = Counter(status for _, status in fires_of(store, "t"))
    assert got == {RunStatus.MISSED: MAX_MISSED_ROWS, RunStatus.SUCCEEDED: 1}
    (alert,) = store.alert_list()
    assert alert.details["late_fires"] == 149 and alert.details["recorded_missed"] == 149
