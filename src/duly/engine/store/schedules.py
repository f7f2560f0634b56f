"""Schedules: create, update, pause, delete, and fire the due ones into runs in one transaction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, select, text, update

from duly.engine.auditing import AuditEntry
from duly.engine.errors import NotFound, ScheduleBroken
from duly.engine.states import RunStatus
from duly.engine.store.base import (
    FireDecision,
    FiredSchedule,
    FirePlanner,
    NewSchedule,
    ScheduleRow,
    iter_chunks,
)
from duly.engine.store.events import (
    DECLARED_SOURCES,
    run_cancelled,
    run_fired,
    schedule_changes,
    schedule_entry,
)
from duly.engine.store.plumbing import SqlBase
from duly.engine.store.rows import (
    ACTIVE_VALUES,
    CLAIMABLE_VALUES,
    aware,
    schedule_definition,
    schedule_row,
)
from duly.engine.store.schema import runs, schedules

#: Schedules the scheduler fires: neither paused nor set aside as broken.
_FIREABLE = and_(schedules.c.paused.is_(False), schedules.c.broken_at.is_(None))

#: A broken schedule's reason is an error message: kept to a readable length.
_MAX_REASON = 500

#: An upsert or a resume that computed a next fire has a usable definition again.
_FIXED: dict[str, Any] = {"broken_reason": None, "broken_at": None}


#: The ``source`` of schedules an operator defines or edits, and the ``paused_set_by`` of
#: a pause or resume by one.
OPERATOR = "api"


def _update_values(
    old: ScheduleRow,
    new: NewSchedule,
    values: dict[str, Any],
    now: datetime,
    next_fire_at: Callable[[NewSchedule], datetime | None],
) -> dict[str, Any]:
    """The columns an upsert of ``new`` over ``old`` changes (none: ``old`` stays as it is)."""
    if new.source != OPERATOR and old.source == OPERATOR:
        return {}  # a declaration meets an operator's own definition: theirs stands
    if old.paused_set_by == OPERATOR:
        values["paused"] = old.paused
    changed = schedule_definition(old) != new.definition()
    if changed or old.paused != values["paused"]:
        values["next_fire_at"] = next_fire_at(new)
        values["version"] = old.version + 1
    # An unchanged definition keeps its next fire: fires missed while broken are then
    # caught up under the schedule's misfire policy.
    return {**values, **_FIXED, "updated_at": now}


def _catchup_values(decision: FireDecision) -> dict[str, Any]:
    """The tally a catch-up carries to its next pass; cleared once the catch-up is done."""
    tally = decision.misfires if decision.catching_up else None
    if tally is None:
        return _NO_CATCHUP
    return {
        "catchup_late": tally.late,
        "catchup_missed": tally.missed,
        "catchup_first_late": tally.first_late,
        "catchup_last_late": tally.last_late,
    }


_NO_CATCHUP: dict[str, Any] = {
    "catchup_late": 0,
    "catchup_missed": 0,
    "catchup_first_late": None,
    "catchup_last_late": None,
}


def _upsert_entries(source: str, old: ScheduleRow | None, row: ScheduleRow) -> list[AuditEntry]:
    """``schedule.create``/``update`` by an operator, ``schedule.sync`` by a declaration.

    An upsert that changed no recorded field records nothing (nodes declare their
    configured schedules at every start).
    """
    diff = schedule_changes(old, row)
    if not diff:
        return []
    if source in DECLARED_SOURCES:
        return [schedule_entry("schedule.sync", row, {"created": old is None, **diff})]
    action = "schedule.create" if old is None else "schedule.update"
    return [schedule_entry(action, row, diff)]


def _fired_entries(
    sched: ScheduleRow, decision: FireDecision, created: dict[datetime, int]
) -> list[AuditEntry]:
    """``run.fire`` for each run of ``decision`` that was created (not one that existed)."""
    return [
        run_fired(
            created[planned.scheduled_for],
            sched.job_name,
            planned.scheduled_for,
            "schedule",
            schedule=sched.name,
            status=planned.status,
        )
        for planned in decision.runs
        if planned.scheduled_for in created
    ]


class ScheduleQueries(SqlBase):
    """Schedules and their firing."""

    def schedule_upsert(
        self,
        new: NewSchedule,
        now: datetime,
        next_fire_at: Callable[[NewSchedule], datetime | None],
    ) -> ScheduleRow:
        """Create the schedule ``new.name`` or update it; its next fire moves only if its definition changed.

        An operator's state wins over a declaration (the configuration file, duly's own
        schedules): a schedule paused or resumed by an operator keeps that state, and one
        an operator defined or edited (``source="api"``) is left as it is.
        """
        values = {f.name: getattr(new, f.name) for f in fields(NewSchedule)}
        with self._write(["schedules"]) as conn:
            if self.is_postgres:
                # Nodes starting together upsert the same configured schedules: serialise
                # on the name so the second sees the first's row instead of a unique error.
                conn.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
                    {"k": f"duly.schedule:{new.name}"},
                )
            current = conn.execute(
                select(schedules).where(schedules.c.name == new.name)
            ).one_or_none()
            old = schedule_row(current) if current is not None else None
            if old is None:
                values.update(next_fire_at=next_fire_at(new), created_at=now, updated_at=now)
                conn.execute(insert(schedules).values(**values))
            else:
                changes = _update_values(old, new, values, now, next_fire_at)
                if changes:
                    conn.execute(
                        update(schedules).where(schedules.c.id == old.id).values(**changes)
                    )
            row = schedule_row(
                conn.execute(select(schedules).where(schedules.c.name == new.name)).one()
            )
            self._audit(conn, _upsert_entries(new.source, old, row), now)
        return row

    def schedule_get(self, name: str) -> ScheduleRow | None:
        """The schedule called ``name``, if any."""
        with self._read() as conn:
            row = conn.execute(select(schedules).where(schedules.c.name == name)).one_or_none()
        return schedule_row(row) if row is not None else None

    def schedule_list(self) -> list[ScheduleRow]:
        """Every schedule, by name."""
        with self._read() as conn:
            rows = conn.execute(select(schedules).order_by(schedules.c.name)).all()
        return [schedule_row(r) for r in rows]

    def schedule_set_paused(
        self, name: str, paused: bool, now: datetime, next_fire_at: datetime | None
    ) -> ScheduleRow:
        """Pause or resume ``name`` as an operator; resuming sets the next fire given (fires while paused are not run).

        Later upserts of its definition keep this state.
        """
        with self._write(["schedules"]) as conn:
            values: dict[str, Any] = {
                "paused": paused,
                "paused_set_by": OPERATOR,
                "updated_at": now,
            }
            if not paused:
                values.update(_FIXED, next_fire_at=next_fire_at)
            res = conn.execute(
                update(schedules)
                .where(schedules.c.name == name)
                .values(**values)
                .returning(*schedules.c)
            ).one_or_none()
            if res is None:
                raise NotFound(f"no schedule named {name!r}")
            row = schedule_row(res)
            details = {} if paused else {"next_fire_at": next_fire_at}
            action = "schedule.pause" if paused else "schedule.resume"
            self._audit(conn, [schedule_entry(action, row, details)], now)
        return row

    def schedule_delete(self, name: str, now: datetime) -> bool:
        """Delete ``name`` (its runs stay, detached); report whether it existed."""
        with self._write(["schedules"]) as conn:
            current = conn.execute(select(schedules).where(schedules.c.name == name)).one_or_none()
            if current is None:
                return False
            sched = schedule_row(current)
            detached = conn.execute(
                update(runs).where(runs.c.schedule_id == sched.id).values(schedule_id=None)
            ).rowcount
            conn.execute(delete(schedules).where(schedules.c.id == sched.id))
            details = {"job": sched.job_name, "runs_detached": int(detached)}
            self._audit(conn, [schedule_entry("schedule.delete", sched, details)], now)
        return True

    def schedule_next_due(self) -> datetime | None:
        """The earliest ``next_fire_at`` of a schedule neither paused nor broken."""
        with self._read() as conn:
            value = conn.execute(
                select(func.min(schedules.c.next_fire_at)).where(
                    _FIREABLE, schedules.c.next_fire_at.is_not(None)
                )
            ).scalar()
        return aware(value)

    def schedule_overdue(self, due_before: datetime, limit: int) -> list[ScheduleRow]:
        """Unpaused schedules whose ``next_fire_at`` is before ``due_before``, most overdue first.

        Broken schedules are included: not firing is exactly what makes them overdue.
        """
        with self._read() as conn:
            rows = conn.execute(
                select(schedules)
                .where(schedules.c.paused.is_(False), schedules.c.next_fire_at < due_before)
                .order_by(schedules.c.next_fire_at)
                .limit(limit)
            ).all()
        return [schedule_row(r) for r in rows]

    def schedule_fire_due(
        self, now: datetime, limit: int, planner: FirePlanner
    ) -> list[FiredSchedule]:
        """Fire up to ``limit`` due schedules in one transaction.

        For each, ``planner`` says which runs to insert and the next fire; runs are unique on
        ``(schedule_id, scheduled_for)`` so two nodes firing the same schedule insert one run.
        A schedule the planner cannot evaluate is marked broken and the others still fire.
        """
        with self._write(["runs"]) as conn:
            due = self._lock_due(conn, now, limit)
            if not due:
                return []
            active = self._active_schedule_ids(conn, [s.id for s in due])
            entries: list[AuditEntry] = []
            fired = [self._fire_one(conn, s, planner, s.id in active, now, entries) for s in due]
            self._audit(conn, entries, now)
            return fired

    def _lock_due(self, conn: Connection, now: datetime, limit: int) -> list[ScheduleRow]:
        stmt = (
            select(schedules)
            .where(_FIREABLE, schedules.c.next_fire_at <= now)
            .order_by(schedules.c.next_fire_at)
            .limit(limit)
        )
        if self.is_postgres:
            stmt = stmt.with_for_update(skip_locked=True)
        return [schedule_row(r) for r in conn.execute(stmt).all()]

    def _fire_one(
        self,
        conn: Connection,
        sched: ScheduleRow,
        planner: FirePlanner,
        previous_active: bool,
        now: datetime,
        entries: list[AuditEntry],
    ) -> FiredSchedule:
        """Fire ``sched``; the audit entries of what changed are added to ``entries``."""
        try:
            decision = planner(sched, previous_active)
        except ScheduleBroken as exc:
            # Nothing was written for it yet: set it aside so it is not picked again.
            broken = self._mark_broken(conn, sched, str(exc) or type(exc).__name__, now)
            entries.append(
                schedule_entry("schedule.break", sched, {"reason": broken.broken_reason})
            )
            return broken
        created = self._insert_fired_runs(conn, sched, decision, now, entries)
        if decision.cancel_previous:
            entries += self._cancel_active_of_schedule(conn, sched.id, now, keep=created)
        last = max((r.scheduled_for for r in decision.runs), default=sched.last_fire_at)
        conn.execute(
            update(schedules)
            .where(schedules.c.id == sched.id)
            .values(
                next_fire_at=decision.next_fire_at,
                last_fire_at=last,
                updated_at=now,
                **_catchup_values(decision),
            )
        )
        return FiredSchedule(sched, decision, tuple(created))

    def _mark_broken(
        self, conn: Connection, sched: ScheduleRow, reason: str, now: datetime
    ) -> FiredSchedule:
        reason = reason[:_MAX_REASON]
        conn.execute(
            update(schedules)
            .where(schedules.c.id == sched.id)
            .values(broken_reason=reason, broken_at=now, updated_at=now)
        )
        nothing = FireDecision(runs=(), next_fire_at=sched.next_fire_at)
        return FiredSchedule(sched, nothing, (), broken_reason=reason)

    def _active_schedule_ids(self, conn: Connection, ids: list[int]) -> set[int]:
        rows = conn.execute(
            select(runs.c.schedule_id)
            .where(runs.c.schedule_id.in_(ids), runs.c.status.in_(ACTIVE_VALUES))
            .distinct()
        ).scalars()
        return set(rows)

    def _insert_fired_runs(
        self,
        conn: Connection,
        sched: ScheduleRow,
        decision: Any,
        now: datetime,
        entries: list[AuditEntry],
    ) -> list[int]:
        if not decision.runs:
            return []
        window = decision.window_seconds
        serial = f"s{sched.id}" if sched.overlap == "queue" else None
        values = [
            {
                "job_name": sched.job_name,
                "schedule_id": sched.id,
                "scheduled_for": planned.scheduled_for,
                "idempotency_key": f"{sched.id}:{planned.scheduled_for.isoformat()}",
                "origin": "schedule",
                "args": sched.args,
                "status": planned.status.value,
                "queue": decision.queue or sched.queue,
                "priority": decision.priority if decision.priority is not None else sched.priority,
                "serial_key": serial,
                "max_attempts": decision.max_attempts,
                "not_before": planned.scheduled_for,
                "window_ends_at": planned.scheduled_for + timedelta(seconds=window)
                if window is not None
                else None,
                "finished_at": None if planned.status is RunStatus.QUEUED else now,
                "error_code": "MISFIRE"
                if planned.status is RunStatus.MISSED
                else ("OVERLAP" if planned.status is RunStatus.SKIPPED else None),
                "created_at": now,
                "updated_at": now,
            }
            for planned in decision.runs
        ]
        # The runs created (an existing one keeps its row), by when each is for.
        created: dict[datetime, int] = {}
        for chunk in iter_chunks(values, 500):
            created.update(self._insert_new_runs(conn, chunk))
        if self.audit is not None:
            entries += _fired_entries(sched, decision, created)
        return list(created.values())

    def _cancel_active_of_schedule(
        self, conn: Connection, schedule_id: int, now: datetime, keep: list[int]
    ) -> list[AuditEntry]:
        """Cancel the schedule's waiting runs and ask its running ones to stop; their entries."""
        base = and_(runs.c.schedule_id == schedule_id, runs.c.id.not_in(keep or [-1]))
        cancelled = conn.execute(
            update(runs)
            .where(base, runs.c.status.in_(CLAIMABLE_VALUES))
            .values(
                status=RunStatus.CANCELLED.value,
                finished_at=now,
                updated_at=now,
                error_code="OVERLAP",
                error_message="cancelled by a newer fire (cancel_previous)",
            )
            .returning(runs.c.id)
        ).scalars()
        entries = [run_cancelled(run_id, error_code="OVERLAP") for run_id in cancelled]
        asked = conn.execute(
            update(runs)
            .where(base, runs.c.status == RunStatus.RUNNING.value)
            .values(cancel_requested=True, updated_at=now)
            .returning(runs.c.id)
        ).scalars()
        entries += [run_cancelled(run_id, error_code="OVERLAP", requested=True) for run_id in asked]
        return entries
