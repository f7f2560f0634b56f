"""Raising an engine alert on a connection the caller already holds.

:meth:`duly.engine.store.sql.SqlStore.alert_raise` opens its own transaction. Inside a
job's ``ctx.transaction()`` on SQLite that would wait on the job's own write lock, so the
ledger writes its alerts on the job's connection instead (same row, same dedupe rule: an
open alert with the key is counted again); they commit with the run.
"""

from __future__ import annotations

import structlog
from sqlalchemy import Connection, insert, select, update

from duly.engine.store.base import NewAlert
from duly.engine.store.schema import alerts

__all__ = ["write_alert"]

log = structlog.get_logger("duly.alerts")


def write_alert(conn: Connection, alert: NewAlert) -> int:
    """Open ``alert`` (or count the open one with its key again) on ``conn``; return its id."""
    existing = conn.execute(
        select(alerts.c.id)
        .where(alerts.c.dedupe_key == alert.dedupe_key, alerts.c.status != "resolved")
        .order_by(alerts.c.id.desc())
        .limit(1)
    ).scalar()
    if existing is not None:
        conn.execute(
            update(alerts)
            .where(alerts.c.id == existing)
            .values(
                occurrences=alerts.c.occurrences + 1,
                last_raised_at=alert.now,
                details=alert.details,
            )
        )
        log.warning("alert.repeated", alert_id=existing, rule=alert.rule, title=alert.title)
        return int(existing)
    new_id = conn.execute(
        insert(alerts)
        .values(
            dedupe_key=alert.dedupe_key,
            rule=alert.rule,
            severity=alert.severity,
            status="open",
            title=alert.title,
            details=alert.details,
            run_id=alert.run_id,
            job_name=alert.job_name,
            first_raised_at=alert.now,
            last_raised_at=alert.now,
        )
        .returning(alerts.c.id)
    ).scalar_one()
    log.warning(
        "alert.raised", alert_id=new_id, rule=alert.rule, severity=alert.severity, title=alert.title
    )
    return int(new_id)
