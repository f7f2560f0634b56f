"""The scheduler loop: turns due schedule fires into runs.

It sleeps until the earliest ``next_fire_at`` (not a fixed poll), and wakes at once when a
schedule changes (in-process event; PostgreSQL NOTIFY from other nodes). Each pass fires a
batch of due schedules in one transaction: runs are inserted, unique on
``(schedule_id, scheduled_for)``, and ``next_fire_at`` advances in the same transaction, so
any number of nodes can run this loop without a duplicate run.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from duly.engine.errors import ScheduleBroken
from duly.engine.planning import FirePlan, Misfire, Overlap, plan_fires
from duly.engine.services.base import Env, Service
from duly.engine.store.base import (
    FireDecision,
    FiredSchedule,
    MisfireTally,
    NewAlert,
    ScheduleRow,
)
from duly.engine.triggers import trigger_for

__all__ = ["SchedulerService"]


class SchedulerService(Service):
    """Fires due schedules."""

    name = "scheduler"

    def __init__(self, env: Env) -> None:
        super().__init__(env)
        self.wakeup = env.listen("schedules")
        self._first_pass = True
        self.last_fired = 0

    async def run(self) -> None:
        """Fire, then sleep until the next due instant or a wake-up."""
        opts = self.env.options
        while not self.stopping.is_set():
            self.wakeup.clear()
            self._begin_pass()
            now = self.env.clock.now()
            fired = await self.env.db(self.fire_due, now)
            self.last_fired = len(fired)
            self._mark_pass()
            if len(fired) >= opts.fire_batch:
                continue
            next_due = await self.env.db(self.env.store.schedule_next_due)
            until = now + timedelta(seconds=opts.max_idle_seconds)
            if next_due is not None:
                until = min(until, next_due)
            await self.env.clock.sleep_until(until, self.wakeup)

    def fire_due(self, now: datetime) -> list[FiredSchedule]:
        """One pass: fire every due schedule (blocking; runs in a thread)."""
        fired = self.env.store.schedule_fire_due(
            now, self.env.options.fire_batch, lambda s, active: self.decide(s, active, now)
        )
        for item in fired:
            self._report(item, now)
        if self._first_pass:
            self._first_pass = False
            late = [
                f
                for f in fired
                if any(now - r.scheduled_for > self._grace(f.schedule) for r in f.decision.runs)
            ]
            if late:
                self.log.warning(
                    "scheduler.missed_while_down",
                    schedules=len(late),
                    names=[f.schedule.name for f in late[:20]],
                )
        if fired:
            self.env.wake("runs")
        return fired

    def decide(self, sched: ScheduleRow, previous_active: bool, now: datetime) -> FireDecision:
        """The runs for one due schedule, and its next fire.

        :raises ScheduleBroken: if the schedule's definition cannot be evaluated.
        """
        due, fire = self._due_fires(sched, now)
        # The pass stopped at its bound with fires still due: the catch-up goes on next pass.
        more_due = fire is not None and fire <= now
        plan = plan_fires(
            due,
            now,
            misfire=Misfire(sched.misfire),
            grace=self._grace(sched),
            overlap=Overlap(sched.overlap),
            previous_active=previous_active,
            more_due=more_due,
        )
        max_attempts, window = 3, None
        if sched.job_name in self.env.registry:
            job = self.env.registry.get(sched.job_name)
            max_attempts = job.retry.max_attempts
            window = job.window.total_seconds() if job.window is not None else None
        return FireDecision(
            runs=plan.runs,
            next_fire_at=fire,
            cancel_previous=plan.cancel_previous,
            max_attempts=max_attempts,
            window_seconds=window,
            misfires=self._tally(sched, due, plan, now),
            catching_up=more_due,
        )

    def _tally(
        self, sched: ScheduleRow, due: list[datetime], plan: FirePlan, now: datetime
    ) -> MisfireTally | None:
        """The catch-up's late fires: those of earlier passes and this pass's."""
        late = [f for f in due if now - f > self._grace(sched)]
        this = MisfireTally(plan.late, plan.missed, late[0], late[-1]) if late else None
        before = sched.catchup
        if before is None or this is None:
            return before or this
        return before + this

    def _due_fires(
        self, sched: ScheduleRow, now: datetime
    ) -> tuple[list[datetime], datetime | None]:
        """The schedule's fires due by ``now`` (at most a pass's worth), and the fire after them."""
        try:
            trigger = trigger_for(sched)
            due: list[datetime] = []
            fire = sched.next_fire_at
            while (
                fire is not None and fire <= now and len(due) < self.env.options.max_fires_per_pass
            ):
                due.append(fire)
                fire = trigger.next_fire(fire)
        except Exception as exc:
            # The definition was valid when saved; the system changed under it (a time zone
            # or calendar gone, a grammar tightened). Whatever the timing code raises is
            # about this schedule alone, so it is set aside rather than failing the batch.
            raise ScheduleBroken(f"{type(exc).__name__}: {exc}") from exc
        return due, fire

    def _grace(self, sched: ScheduleRow) -> timedelta:
        return timedelta(seconds=sched.misfire_grace_seconds)

    def _report(self, item: FiredSchedule, now: datetime) -> None:
        if item.broken_reason is not None:
            self._report_broken(item.schedule, item.broken_reason, now)
            return
        sched, decision = item.schedule, item.decision
        tally = decision.misfires
        self.log.info(
            "schedule.fired",
            schedule=sched.name,
            job=sched.job_name,
            runs=len(item.created_run_ids),
            late=tally.late if tally else 0,
            catching_up=decision.catching_up,
            next_fire_at=decision.next_fire_at.isoformat() if decision.next_fire_at else None,
        )
        # A catch-up spanning several passes is reported once, when it is done, with all
        # the fires it counted.
        if tally is not None and not decision.catching_up:
            self._report_misfire(sched, tally, now)

    def _report_misfire(self, sched: ScheduleRow, tally: MisfireTally, now: datetime) -> None:
        severity = "high" if sched.misfire == "skip" else "medium"
        self.env.alerts.raise_alert(
            NewAlert(
                dedupe_key=f"misfire:{sched.name}",
                rule="schedule.misfired",
                severity=severity,
                title=f"schedule {sched.name} missed {tally.late} fire(s); policy {sched.misfire}",
                now=now,
                details={
                    "schedule": sched.name,
                    "late_fires": tally.late,
                    "recorded_missed": tally.missed,
                    "first_late": tally.first_late.isoformat(),
                    "last_late": tally.last_late.isoformat(),
                    "policy": sched.misfire,
                },
                job_name=sched.job_name,
            )
        )

    def _report_broken(self, sched: ScheduleRow, reason: str, now: datetime) -> None:
        self.log.error("schedule.broken", schedule=sched.name, job=sched.job_name, reason=reason)
        due = sched.next_fire_at.isoformat() if sched.next_fire_at else None
        self.env.alerts.raise_alert(
            NewAlert(
                dedupe_key=f"schedule.broken:{sched.name}",
                rule="schedule.broken",
                severity="high",
                title=f"schedule {sched.name} cannot fire and is set aside until fixed: {reason}",
                now=now,
                details={"schedule": sched.name, "reason": reason, "next_fire_at": due},
                job_name=sched.job_name,
            )
        )
