"""Misfire and overlap decisions (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from duly.engine.planning import MAX_MISSED_ROWS, Misfire, Overlap, plan_fires
from duly.engine.states import RunStatus

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
GRACE = timedelta(seconds=60)
Q, M, S = RunStatus.QUEUED, RunStatus.MISSED, RunStatus.SKIPPED


def hours_ago(*hs: float) -> list[datetime]:
    return [NOW - timedelta(hours=h) for h in hs]


@pytest.mark.parametrize(
    ("due", "misfire", "overlap", "active", "expected"),
    [
        pytest.param([NOW], Misfire.SKIP, Overlap.QUEUE, False, [Q], id="on-time-always-runs"),
        pytest.param([NOW - timedelta(seconds=59)], Misfire.SKIP, Overlap.QUEUE, False, [Q],
                     id="within-grace-is-on-time"),
        pytest.param(hours_ago(3, 2, 1), Misfire.RUN_ONCE, Overlap.QUEUE, False, [M, M, Q],
                     id="run-once-runs-latest"),
        pytest.param(hours_ago(3, 2, 1), Misfire.RUN_ALL, Overlap.QUEUE, False, [Q, Q, Q],
                     id="run-all-runs-each"),
        pytest.param(hours_ago(3, 2, 1), Misfire.SKIP, Overlap.QUEUE, False, [M, M, M],
                     id="skip-records-missed"),
        pytest.param([*hours_ago(2), NOW], Misfire.RUN_ONCE, Overlap.QUEUE, False, [Q, Q],
                     id="late-and-on-time-both-run"),
        pytest.param([NOW], Misfire.RUN_ONCE, Overlap.SKIP, True, [S], id="overlap-skip-active"),
        pytest.param(hours_ago(3, 2, 1), Misfire.RUN_ALL, Overlap.SKIP, False, [Q, S, S],
                     id="overlap-skip-within-batch"),
        pytest.param([NOW], Misfire.RUN_ONCE, Overlap.ALLOW, True, [Q], id="overlap-allow"),
        pytest.param([NOW], Misfire.RUN_ONCE, Overlap.QUEUE, True, [Q], id="overlap-queue"),
        pytest.param(hours_ago(2, 1), Misfire.RUN_ALL, Overlap.CANCEL_PREVIOUS, True, [S, Q],
                     id="cancel-previous-keeps-last"),
    ],
)
def test_plan_table(due, misfire, overlap, active, expected) -> None:
    plan = plan_fires(due, NOW, misfire=misfire, grace=GRACE, overlap=overlap,
                      previous_active=active)
    assert [r.status for r in plan.runs] == expected
    assert [r.scheduled_for for r in plan.runs] == sorted(due)


def test_cancel_previous_is_requested_only_when_something_runs() -> None:
    yes = plan_fires([NOW], NOW, misfire=Misfire.RUN_ONCE, grace=GRACE,
                     overlap=Overlap.CANCEL_PREVIOUS, previous_active=True)
    no = plan_fires(hours_ago(1), NOW, misfire=Misfire.SKIP, grace=GRACE,
                    overlap=Overlap.CANCEL_PREVIOUS, previous_active=True)
    assert yes.cancel_previous and not no.cancel_previous


def test_missed_rows_are_capped_but_counted() -> None:
    due = [NOW - timedelta(minutes=m) for m in range(500, 1, -1)]
    plan = plan_fires(due, NOW, misfire=Misfire.SKIP, grace=GRACE, overlap=Overlap.QUEUE,
                      previous_active=False)
    assert len(plan.runs) == MAX_MISSED_ROWS
    assert plan.late == len(due) and plan.missed_unrecorded == len(due) - MAX_MISSED_ROWS
    assert plan.runs[-1].scheduled_for == due[-1]  # the most recent are the ones recorded


@given(
    offsets=st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=40,
                     unique=True),
    misfire=st.sampled_from(list(Misfire)),
    overlap=st.sampled_from(list(Overlap)),
    active=st.booleans(),
)
def test_every_due_fire_is_accounted_for_once(offsets, misfire, overlap, active) -> None:
    due = sorted(NOW - timedelta(seconds=o) for o in offsets)
    plan = plan_fires(due, NOW, misfire=misfire, grace=GRACE, overlap=overlap,
                      previous_active=active)
    instants = [r.scheduled_for for r in plan.runs]
    assert len(instants) == len(set(instants))
    assert len(instants) + plan.missed_unrecorded == len(due)
    on_time = [f for f in due if NOW - f <= GRACE]
    # A fire on time is never recorded as missed.
    assert all(r.status is not RunStatus.MISSED for r in plan.runs if r.scheduled_for in on_time)
    if misfire is Misfire.RUN_ALL and overlap in (Overlap.ALLOW, Overlap.QUEUE):
        assert all(r.status is RunStatus.QUEUED for r in plan.runs)


def test_run_once_leaves_its_catch_up_run_to_the_pass_that_reaches_the_latest_fire() -> None:
    kw = {"grace": GRACE, "overlap": Overlap.QUEUE, "previous_active": False}
    early = plan_fires(hours_ago(6, 5, 4), NOW, misfire=Misfire.RUN_ONCE, more_due=True, **kw)
    assert [r.status for r in early.runs] == [M, M, M] and early.missed == 3
    last = plan_fires(hours_ago(3, 2, 1), NOW, misfire=Misfire.RUN_ONCE, **kw)
    assert [r.status for r in last.runs] == [M, M, Q] and last.missed == 2
    # Other policies do not depend on where a pass stops.
    for misfire in (Misfire.RUN_ALL, Misfire.SKIP):
        assert plan_fires(hours_ago(3, 2), NOW, misfire=misfire, more_due=True, **kw) == (
            plan_fires(hours_ago(3, 2), NOW, misfire=misfire, **kw)
        )
