"""Job executions, the per-run history rows: pruning by age."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select

from duly.engine.auditing import AuditEntry
from duly.engine.store.connect import allow_long_statements
from duly.engine.store.plumbing import SqlBase
from duly.engine.store.schema import job_executions

#: Longest statement of one pruning batch: finding old rows reads ``completed_at``, which
#: has no index, so on a large backlog the scan may outlast the default statement timeout.
PRUNE_STATEMENT_SECONDS = 600.0


def _pruned(count: int, cutoff: datetime) -> AuditEntry:
    details = {"table": "job_executions", "count": count, "cutoff": cutoff}
    return AuditEntry("retention.prune", "table", "job_executions", details)


class ExecutionQueries(SqlBase):
    """Execution history retention."""

    def execution_prune(self, before: datetime, batch: int = 5000, *, now: datetime) -> int:
        """Delete attempts of finished runs that completed before ``before``, in batches.

        Each batch is recorded (``retention.prune``) in its own transaction at ``now``.
        """
        total = 0
        while True:
            with self._write() as conn, allow_long_statements(conn, PRUNE_STATEMENT_SECONDS):
                ids = (
                    conn.execute(
                        select(job_executions.c.id)
                        .where(job_executions.c.completed_at < before)
                        .limit(batch)
                    )
                    .scalars()
                    .all()
                )
                if not ids:
                    return total
                removed = conn.execute(
                    delete(job_executions).where(job_executions.c.id.in_(ids))
                ).rowcount
                self._audit(conn, [_pruned(int(removed), before)], now)
            total += len(ids)
