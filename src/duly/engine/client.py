"""Operations on the engine for the CLI and the API: trigger, schedules, runs, alerts."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from duly.clock import Clock
from duly.engine.errors import NotFound, ScheduleExists
from duly.engine.overview import OperationsOverview, operations_overview
from duly.engine.registry import JobRegistry
from duly.engine.states import FINAL
from duly.engine.store.base import (
    AlertRow,
    AttemptRow,
    NewRun,
    NewSchedule,
    RunFilter,
    RunRow,
    ScheduleRow,
)
from duly.engine.store.sql import SqlStore
from duly.engine.triggers import first_fire, next_fires, trigger_for
from duly.timing import parse_trigger

__all__ = ["EngineClient"]


class EngineClient:
    """A synchronous façade over the store, with the clock and the job registry."""

    def __init__(self, store: SqlStore, registry: JobRegistry, clock: Clock) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock

    def trigger(
        self,
        job_name: str,
        args: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        scheduled_for: datetime | None = None,
        origin: str = "manual",
    ) -> tuple[RunRow, bool]:
        """Enqueue a run of ``job_name`` now (or at ``scheduled_for``).

        The same ``idempotency_key`` always gives the same run. Returns the run and whether
        it was created by this call.

        :raises UnknownJob: if no such job is registered.
        """
        now = self.clock.now()
        new = self._new_run(job_name, args, idempotency_key, scheduled_for or now, origin)
        return self.store.run_enqueue(new, now)

    def trigger_many(
        self,
        job_name: str,
        args: Sequence[dict[str, Any]],
        *,
        idempotency_keys: Sequence[str] | None = None,
        scheduled_for: datetime | None = None,
        origin: str = "manual",
    ) -> list[int]:
        """Enqueue one run of ``job_name`` per element of ``args``, all in one transaction.

        ``idempotency_keys`` (one per run) make a repeated call give the same runs. Returns
        the run ids, in the order of ``args``.

        :raises UnknownJob: if no such job is registered.
        :raises ValueError: the keys are not one per run, or repeat.
        """
        keys = list(idempotency_keys or [f"manual:{uuid.uuid4()}" for _ in args])
        if len(keys) != len(args) or len(set(keys)) != len(keys):
            raise ValueError("idempotency_keys: one distinct key per run")
        now = self.clock.now()
        at = scheduled_for or now
        news = [self._new_run(job_name, a, k, at, origin) for a, k in zip(args, keys, strict=True)]
        ids = self.store.run_enqueue_many(news, now)
        return [ids[k] for k in keys]

    def _new_run(
        self,
        job_name: str,
        args: dict[str, Any] | None,
        key: str | None,
        scheduled_for: datetime,
        origin: str,
    ) -> NewRun:
        job = self.registry.get(job_name)
        return NewRun(
            job_name=job.name,
            scheduled_for=scheduled_for,
            idempotency_key=key or f"manual:{uuid.uuid4()}",
            args=args or {},
            queue=job.queue,
            priority=job.priority,
            max_attempts=job.retry.max_attempts,
            window_seconds=job.window.total_seconds() if job.window else None,
            origin=origin,
        )

    def upsert_schedule(self, new: NewSchedule) -> ScheduleRow:
        """Create or update a schedule by name (validates its spec and job first)."""
        self.registry.get(new.job_name)
        trigger_for(new)  # raises SpecError on a bad spec, before anything is written
        now = self.clock.now()
        return self.store.schedule_upsert(new, now, lambda s: first_fire(s, now))

    def create_schedule(self, new: NewSchedule) -> tuple[ScheduleRow, bool]:
        """Create a schedule; returns it and whether this call created it.

        The same definition made again (a request replayed after a crash) answers the
        existing schedule, unchanged.

        :raises ScheduleExists: a schedule of that name has another definition.
        :raises UnknownJob: no such job. :raises SpecError: a bad spec.
        """
        existing = self.store.schedule_get(new.name)
        if existing is not None:
            same = NewSchedule(**{f.name: getattr(existing, f.name) for f in fields(NewSchedule)})
            if same == new:
                return existing, False
            raise ScheduleExists(f"a schedule named {new.name!r} exists")
        return self.upsert_schedule(new), True

    def preview(
        self,
        spec: str,
        tz: str = "UTC",
        *,
        after: datetime | None = None,
        count: int = 10,
        calendar: str | None = None,
        adjust: str = "none",
    ) -> list[datetime]:
        """The next ``count`` fires of ``spec`` in ``tz`` after ``after`` (default now), in ``tz``.

        :raises SpecError: a bad spec, zone, calendar or convention.
        """
        trigger = parse_trigger(spec, tz, calendar=calendar, adjust=adjust)
        zone = ZoneInfo(tz)
        return [f.astimezone(zone) for f in next_fires(trigger, after or self.clock.now(), count)]

    def schedule_preview(
        self, row: ScheduleRow, *, after: datetime | None = None, count: int = 10
    ) -> list[datetime]:
        """The next ``count`` fires of a stored schedule, in its zone.

        :raises SpecError: its definition no longer makes a trigger.
        """
        zone = ZoneInfo(row.timezone)
        fires = next_fires(trigger_for(row), after or self.clock.now(), count)
        return [f.astimezone(zone) for f in fires]

    def overview(self) -> OperationsOverview:
        """The operations overview now (see :mod:`duly.engine.overview`)."""
        return operations_overview(self.store, self.clock.now())

    def pause(self, name: str) -> ScheduleRow:
        """Stop firing ``name``."""
        return self.store.schedule_set_paused(name, True, self.clock.now(), None)

    def resume(self, name: str) -> ScheduleRow:
        """Fire ``name`` again from now on (fires while paused are not caught up)."""
        sched = self.store.schedule_get(name)
        if sched is None:
            raise NotFound(f"no schedule named {name!r}")
        now = self.clock.now()
        return self.store.schedule_set_paused(name, False, now, first_fire(sched, now))

    def delete_schedule(self, name: str) -> None:
        """Delete the schedule ``name``; its runs stay in the history.

        :raises NotFound: if there is no such schedule.
        """
        if not self.store.schedule_delete(name, self.clock.now()):
            raise NotFound(f"no schedule named {name!r}")

    def runs(self, flt: RunFilter) -> list[RunRow]:
        """Runs, newest first."""
        return self.store.run_list(flt)

    def run(self, run_id: int) -> RunRow:
        """The run ``run_id``.

        :raises NotFound: if there is no such run.
        """
        run = self.store.run_get(run_id)
        if run is None:
            raise NotFound(f"no run {run_id}")
        return run

    def attempts(self, run_id: int) -> list[AttemptRow]:
        """The attempts of run ``run_id``, in order."""
        return self.store.run_attempts(run_id)

    def retry(self, run_id: int) -> RunRow:
        """Queue a failed, cancelled or missed run again, with a fresh set of attempts.

        :raises NotFound: no such run. :raises RunConflict: it is not in a final failed state.
        """
        return self.store.run_retry(run_id, self.clock.now())

    def cancel(self, run_id: int) -> RunRow:
        """Cancel a queued or retrying run; ask a running one to stop.

        :raises NotFound: no such run. :raises RunConflict: it has finished.
        """
        return self.store.run_cancel(run_id, self.clock.now())

    def alert(self, alert_id: int) -> AlertRow:
        """The alert ``alert_id``.

        :raises NotFound: if there is no such alert.
        """
        alert = self.store.alert_get(alert_id)
        if alert is None:
            raise NotFound(f"no alert {alert_id}")
        return alert

    def alerts(
        self, status: str | None = None, limit: int = 100, before_id: int | None = None
    ) -> list[AlertRow]:
        """Alerts, newest first, optionally of one status; ``before_id`` pages on."""
        return self.store.alert_list(status, limit, before_id)

    def set_alert_status(self, alert_id: int, status: str, actor: str) -> AlertRow:
        """Acknowledge (``acked``) or resolve (``resolved``) an alert as ``actor``.

        :raises NotFound: no such alert. :raises RunConflict: the move is not allowed.
        """
        return self.store.alert_set_status(alert_id, status, actor, self.clock.now())

    def is_final(self, run_id: int) -> bool:
        """Whether run ``run_id`` has finished."""
        run = self.store.run_get(run_id)
        return run is not None and run.status in FINAL
