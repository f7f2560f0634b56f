"""The reaper: takes back runs whose lease expired (their node died) and reports lost nodes."""

from __future__ import annotations

from datetime import datetime, timedelta

from duly.engine.services.base import Service
from duly.engine.states import RunStatus
from duly.engine.store.base import NewAlert, RunRow

__all__ = ["ReaperService"]


REAP_BATCH = 500  # expired leases taken back per transaction


class ReaperService(Service):
    """Returns expired leases to the queue (``LEASE_EXPIRED``) or fails them when attempts are spent."""

    name = "reaper"

    async def run(self) -> None:
        """Reap every ``reaper_interval_seconds``."""
        interval = self.env.options.reaper_interval_seconds
        while not self.stopping.is_set():
            self._begin_pass()
            reaped = await self.env.db(self.reap_once)
            self._mark_pass()
            if len(reaped) >= REAP_BATCH:
                continue  # a dead node left more: take them back now, not an interval later
            await self.env.clock.sleep_until(
                self.env.clock.now() + timedelta(seconds=interval), self.wakeup
            )

    def reap_once(self) -> list[RunRow]:
        """One pass (blocking)."""
        now = self.env.clock.now()
        reaped = self.env.store.run_reap_expired(now, REAP_BATCH, lambda run: self._decide(run, now))
        for run in reaped:
            self.log.warning(
                "run.lease_expired",
                run_id=run.id,
                job=run.job_name,
                attempt=run.attempt,
                status=run.status.value,
            )
            if run.status is RunStatus.FAILED:
                self.env.alerts.raise_alert(
                    NewAlert(
                        dedupe_key=f"run.failed:{run.job_name}:{run.id}",
                        rule="run.failed",
                        severity="high",
                        title=f"{run.job_name} run {run.id} failed: its node was lost on the last attempt",
                        now=now,
                        details={"error_code": "LEASE_EXPIRED", "attempts": run.attempt},
                        run_id=run.id,
                        job_name=run.job_name,
                    )
                )
        if reaped:
            self.env.wake("runs")
        self._report_lost_nodes(now)
        return reaped

    def _decide(self, run: RunRow, now: datetime) -> tuple[RunStatus, datetime]:
        # A lost node is not the job's failure: the run goes back to the queue at once, in
        # its old place (no backoff, ahead of runs queued since), so another node takes it
        # over within the lease time even under a backlog. The attempt still counts, so a
        # job that kills its node every time stops at its last attempt.
        if run.attempt < run.max_attempts:
            return RunStatus.RETRYING, min(run.not_before, now)
        return RunStatus.FAILED, now

    def _report_lost_nodes(self, now: datetime) -> None:
        cutoff = now - timedelta(seconds=self.env.options.node_lost_seconds)
        me = self.env.options.node_name
        for node in self.env.store.node_list():
            # This node is alive by definition (its heartbeat may just be due).
            if node.name != me and node.state == "running" and node.heartbeat_at < cutoff:
                self.env.alerts.raise_alert(
                    NewAlert(
                        dedupe_key=f"node.lost:{node.name}",
                        rule="node.lost",
                        severity="high",
                        title=f"node {node.name} stopped heartbeating at {node.heartbeat_at.isoformat()}",
                        now=now,
                        details={
                            "node": node.name,
                            "hostname": node.hostname,
                            "heartbeat_at": node.heartbeat_at.isoformat(),
                        },
                    )
                )
