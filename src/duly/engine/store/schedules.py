"""Schedules: create, update, pause, delete, and fire the due ones into runs in one transaction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, select, text, update

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
            if current is None:
                values.update(next_fire_at=next_fire_at(new), created_at=now, updated_at=now)
                conn.execute(insert(schedules).values(**values))
            else:
                old = schedule_row(current)
                changes = _update_values(old, new, values, now, next_fire_at)
                if changes:
                    conn.execute(
                        update(schedules).where(schedules.c.id == old.id).values(**changes)
                    )
            row = conn.execute(select(schedules).where(schedules.c.name == new.name)).one()
        return schedule_row(row)

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
        return schedule_row(res)

    def schedule_delete(self, name: str) -> bool:
        """Delete ``name`` (its runs stay, detached); report whether it existed."""
        with self._write(["schedules"]) as conn:
            sid = conn.execute(select(schedules.c.id).where(schedules.c.name == name)).scalar()
            if sid is None:
                return False
            conn.execute(update(runs).where(runs.c.schedule_id == sid).values(schedule_id=None))
            conn.execute(delete(schedules).where(schedules.c.id == sid))
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
            return [self._fire_one(conn, s, planner, s.id in active, now) for s in due]

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
    ) -> FiredSchedule:
        try:
            decision = planner(sched, previous_active)
        except ScheduleBroken as exc:
            # Nothing was written for it yet: set it aside so it is not picked again.
            return self._mark_broken(conn, sched, str(exc) or type(exc).__name__, now)
        created = self._insert_fired_runs(conn, sched, decision, now)
        if decision.cancel_previous:
            self._cancel_active_of_schedule(conn, sched.id, now, keep=created)
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
        self, conn: Connection, sched: ScheduleRow, decision: Any, now: datetime
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
        stmt = self._insert(runs).on_conflict_do_nothing().returning(runs.c.id)
        created: list[int] = []
        for chunk in iter_chunks(values, 500):
            created.extend(
                conn.execute(stmt, list(chunk)).scalars().all()
                if len(chunk) == 1
                else self._insert_many(conn, chunk)
            )
        return created

    def _cancel_active_of_schedule(
        self, conn: Connection, schedule_id: int, now: datetime, keep: list[int]
    ) -> None:
        base = and_(runs.c.schedule_id == schedule_id, runs.c.id.not_in(keep or [-1]))
        conn.execute(
            update(runs)
            .where(base, runs.c.status.in_(CLAIMABLE_VALUES))
            .values(
                status=RunStatus.CANCELLED.value,
                finished_at=now,
                updated_at=now,
                error_code="OVERLAP",
                error_message="cancelled by a newer fire (cancel_previous)",
            )
        )
        conn.execute(
            update(runs)
            .where(base, runs.c.status == RunStatus.RUNNING.value)
            .values(cancel_requested=True, updated_at=now)
        )
