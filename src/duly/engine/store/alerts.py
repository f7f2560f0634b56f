"""Alerts: raised once per open key, acknowledged and resolved by a named actor."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update

from duly.engine.auditing import AuditEntry
from duly.engine.errors import NotFound, RunConflict
from duly.engine.store.base import AlertRow, NewAlert
from duly.engine.store.plumbing import SqlBase
from duly.engine.store.rows import alert_row
from duly.engine.store.schema import alerts


class AlertQueries(SqlBase):
    """Alerts."""

    def alert_raise(self, alert: NewAlert) -> tuple[AlertRow, bool]:
        """Open an alert, or count one more occurrence of the open alert with the same key."""
        with self._write() as conn:
            existing = conn.execute(
                select(alerts.c.id)
                .where(alerts.c.dedupe_key == alert.dedupe_key, alerts.c.status != "resolved")
                .order_by(alerts.c.id.desc())
                .limit(1)
            ).scalar()
            if existing is not None:
                row = conn.execute(
                    update(alerts)
                    .where(alerts.c.id == existing)
                    .values(
                        occurrences=alerts.c.occurrences + 1,
                        last_raised_at=alert.now,
                        details=alert.details,
                    )
                    .returning(*alerts.c)
                ).one()
                return alert_row(row), False
            row = conn.execute(
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
                .returning(*alerts.c)
            ).one()
        return alert_row(row), True

    def alert_get(self, alert_id: int) -> AlertRow | None:
        """One alert, if it exists."""
        with self._read() as conn:
            row = conn.execute(select(alerts).where(alerts.c.id == alert_id)).one_or_none()
        return alert_row(row) if row is not None else None

    def alert_list(
        self, status: str | None = None, limit: int = 100, before_id: int | None = None
    ) -> list[AlertRow]:
        """Alerts, newest first, optionally of one status; ``before_id`` pages on."""
        conds = [alerts.c.status == status] if status else []
        if before_id is not None:
            conds.append(alerts.c.id < before_id)
        with self._read() as conn:
            rows = conn.execute(
                select(alerts).where(*conds).order_by(alerts.c.id.desc()).limit(limit)
            ).all()
        return [alert_row(r) for r in rows]

    def alert_set_status(self, alert_id: int, status: str, actor: str, now: datetime) -> AlertRow:
        """Acknowledge or resolve an alert."""
        if status not in ("acked", "resolved"):
            raise ValueError(f"an alert can be set to acked or resolved, not {status!r}")
        values: dict[str, Any] = {"status": status}
        values.update(
            {"acked_at": now, "acked_by": actor}
            if status == "acked"
            else {"resolved_at": now, "resolved_by": actor}
        )
        with self._write() as conn:
            row = conn.execute(
                update(alerts)
                .where(alerts.c.id == alert_id, alerts.c.status != "resolved")
                .values(**values)
                .returning(*alerts.c)
            ).one_or_none()
            if row is None:
                exists = conn.execute(select(alerts.c.id).where(alerts.c.id == alert_id)).scalar()
                if exists is None:
                    raise NotFound(f"no alert {alert_id}")
                raise RunConflict(f"alert {alert_id} is already resolved")
            updated = alert_row(row)
            action = "alert.ack" if status == "acked" else "alert.resolve"
            details = {"rule": updated.rule, "by": actor}
            self._audit(conn, [AuditEntry(action, "alert", alert_id, details)], now)
        return updated
