"""What the reaper and the watchdog ask of the store: expired leases, late starts, window overruns."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select, update

from duly.engine.auditing import AuditEntry
from duly.engine.states import FINAL, RunStatus
from duly.engine.store.base import RunRow
from duly.engine.store.events import run_lease_expired
from duly.engine.store.plumbing import SqlBase
from duly.engine.store.rows import ACTIVE_VALUES, run_row
from duly.engine.store.schema import job_executions, runs


class SupervisionQueries(SqlBase):
    """Reaping expired leases and flagging late or overrunning runs."""

    def run_reap_expired(
        self, now: datetime, limit: int, decide: Callable[[RunRow], tuple[RunStatus, datetime]]
    ) -> list[RunRow]:
        """Take back running runs whose lease expired (their node died): ``decide`` says retrying or failed."""
        with self._write(["runs"]) as conn:
            stmt = (
                select(runs)
                .where(runs.c.status == RunStatus.RUNNING.value, runs.c.lease_expires_at < now)
                .order_by(runs.c.lease_expires_at)
                .limit(limit)
            )
            if self.is_postgres:
                stmt = stmt.with_for_update(skip_locked=True)
            expired = [run_row(r) for r in conn.execute(stmt).all()]
            out = []
            entries: list[AuditEntry] = []
            for run in expired:
                status, not_before = decide(run)
                message = f"lease held by {run.lease_owner} expired at {run.lease_expires_at}"
                row = conn.execute(
                    update(runs)
                    .where(
                        runs.c.id == run.id,
                        runs.c.fencing_token == run.fencing_token,
                        runs.c.status == RunStatus.RUNNING.value,
                    )
                    .values(
                        status=status.value,
                        not_before=not_before,
                        lease_owner=None,
                        lease_expires_at=None,
                        error_code="LEASE_EXPIRED",
                        error_message=message,
                        finished_at=now if status in FINAL else None,
                        updated_at=now,
                    )
                    .returning(*runs.c)
                ).one_or_none()
                if row is not None:
                    conn.execute(
                        update(job_executions)
                        .where(
                            job_executions.c.job_id == run.id,
                            job_executions.c.attempt == run.attempt,
                        )
                        .values(
                            status="lost",
                            completed_at=now,
                            error_code="LEASE_EXPIRED",
                            error_message=message,
                        )
                    )
                    out.append(run_row(row))
                    entries.append(run_lease_expired(out[-1], run.attempt, run.lease_owner))
            self._audit(conn, entries, now)
        return out

    def run_mark_late_starts(self, started_before: datetime, limit: int) -> list[RunRow]:
        """Queued runs due before ``started_before`` and not yet reported; marks them reported.

        A run created late (a catch-up after downtime, reported by the misfire alert) counts
        from its creation, so it is reported only if it then waits as long again.
        """
        return self._mark_once(
            and_(
                runs.c.status == RunStatus.QUEUED.value,
                runs.c.attempt == 0,
                runs.c.scheduled_for < started_before,
                runs.c.created_at < started_before,
                runs.c.start_alerted.is_(False),
            ),
            "start_alerted",
            limit,
            started_before,
        )

    def run_mark_window_overruns(self, now: datetime, limit: int) -> list[RunRow]:
        """Active runs past their job's window and not yet reported; marks them reported."""
        return self._mark_once(
            and_(
                runs.c.status.in_(ACTIVE_VALUES),
                runs.c.window_ends_at < now,
                runs.c.window_alerted.is_(False),
            ),
            "window_alerted",
            limit,
            now,
        )

    def _mark_once(self, cond: Any, flag: str, limit: int, now: datetime) -> list[RunRow]:
        with self._write() as conn:
            ids = (
                conn.execute(select(runs.c.id).where(cond).order_by(runs.c.id).limit(limit))
                .scalars()
                .all()
            )
            if not ids:
                return []
            rows = conn.execute(
                update(runs)
                .where(runs.c.id.in_(ids), runs.c[flag].is_(False))
                .values({flag: True})
                .returning(*runs.c)
            ).all()
        return [run_row(r) for r in rows]
