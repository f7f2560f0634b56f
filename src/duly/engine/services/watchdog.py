"""The watchdog: runs that did not start on time, runs past their job's window, and
schedules whose next fire is long past (the scheduler is not firing them)."""

from __future__ import annotations

from datetime import datetime, timedelta

from duly.engine.services.base import Env, Service
from duly.engine.store.base import NewAlert, ScheduleRow

__all__ = ["WatchdogService"]


class WatchdogService(Service):
    """Raises each alert once per run."""

    name = "watchdog"

    def __init__(self, env: Env) -> None:
        super().__init__(env)
        self._watching_since: datetime | None = None

    async def run(self) -> None:
        """Check every ``watchdog_interval_seconds``."""
        interval = self.env.options.watchdog_interval_seconds
        while not self.stopping.is_set():
            self._begin_pass()
            await self.env.db(self.check_once)
            self._mark_pass()
            await self.env.clock.sleep_until(
                self.env.clock.now() + timedelta(seconds=interval), self.wakeup
            )

    def check_once(self) -> int:
        """One pass (blocking); returns the number of alerts raised."""
        now = self.env.clock.now()
        store, alerts = self.env.store, self.env.alerts
        threshold = timedelta(minutes=self.env.options.watchdog_start_minutes)
        raised = 0
        for run in store.run_mark_late_starts(now - threshold, 500):
            raised += 1
            alerts.raise_alert(
                NewAlert(
                    dedupe_key=f"run.not_started:{run.id}",
                    rule="run.not_started",
                    severity="high",
                    title=f"{run.job_name} run {run.id} due {run.scheduled_for.isoformat()} has not "
                    f"started within {threshold}",
                    now=now,
                    run_id=run.id,
                    job_name=run.job_name,
                    details={
                        "scheduled_for": run.scheduled_for.isoformat(),
                        "threshold_minutes": threshold.total_seconds() / 60,
                    },
                )
            )
        for run in store.run_mark_window_overruns(now, 500):
            raised += 1
            alerts.raise_alert(
                NewAlert(
                    dedupe_key=f"run.window_exceeded:{run.id}",
                    rule="run.window_exceeded",
                    severity="high",
                    title=f"{run.job_name} run {run.id} is still {run.status.value} past its window "
                    f"(ended {run.window_ends_at.isoformat() if run.window_ends_at else '?'})",
                    now=now,
                    run_id=run.id,
                    job_name=run.job_name,
                    details={
                        "scheduled_for": run.scheduled_for.isoformat(),
                        "status": run.status.value,
                        "progress_done": run.progress_done,
                        "progress_total": run.progress_total,
                    },
                )
            )
        return raised + self._check_overdue(now)

    def _check_overdue(self, now: datetime) -> int:
        threshold = timedelta(minutes=self.env.options.watchdog_overdue_minutes)
        if self._watching_since is None:
            self._watching_since = now
        # A node that just started (after downtime, say) gives the scheduler the threshold
        # to catch up first: what it then fires late is the misfire alert's to report.
        if now - self._watching_since < threshold:
            return 0
        overdue = self.env.store.schedule_overdue(now - threshold, 500)
        for sched in overdue:
            self.env.alerts.raise_alert(self._overdue_alert(sched, threshold, now))
        return len(overdue)

    def _overdue_alert(self, sched: ScheduleRow, threshold: timedelta, now: datetime) -> NewAlert:
        due = sched.next_fire_at.isoformat() if sched.next_fire_at else "?"
        return NewAlert(
            dedupe_key=f"schedule.overdue:{sched.name}",
            rule="schedule.overdue",
            severity="high",
            title=f"schedule {sched.name} has not fired: its next fire {due} is more than "
            f"{threshold} past",
            now=now,
            job_name=sched.job_name,
            details={
                "schedule": sched.name,
                "next_fire_at": due,
                "threshold_minutes": threshold.total_seconds() / 60,
                "broken_reason": sched.broken_reason,
            },
        )
