"""Routes operations alerts to channels by severity, with a dedupe window.

An alert row (raised by engine rules, the balance check, failing deliveries) is queued as
deliveries to the routes of its severity when it opens. While it stays open and is raised
again, it is re-sent at most once per ``repeat_minutes`` (its dedupe window); an
acknowledged or resolved alert is not re-sent. Each round's deliveries are keyed
``alert:<id>:r<round>:<channel>:<recipient>``, so a dispatcher running twice queues once.
"""

from __future__ import annotations

from datetime import timedelta

import structlog
from sqlalchemy import Engine, and_, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from duly.clock import Clock
from duly.engine.store.schema import alerts
from duly.notify import metrics
from duly.notify.deliveries import NewDelivery, enqueue
from duly.notify.recipients import OpsDirectory
from duly.notify.schema import alert_notifications

__all__ = ["AlertDispatcher"]

log = structlog.get_logger("duly.notify")

_A = alerts
_N = alert_notifications


class AlertDispatcher:
    """Queues alert notifications; call :meth:`dispatch` every few seconds."""

    def __init__(
        self, engine: Engine, clock: Clock, ops: OpsDirectory, repeat: timedelta, batch: int = 100
    ) -> None:
        self.engine, self.clock, self.ops = engine, clock, ops
        self.repeat, self.batch = repeat, batch

    def dispatch(self) -> int:
        """Queue the deliveries of alerts that opened or are due a repeat; returns how many alerts."""
        now = self.clock.now()
        done = 0
        with self.engine.begin() as conn:
            rows = conn.execute(
                select(_A, _N.c.rounds, _N.c.occurrences.label("notified_occurrences"))
                .outerjoin(_N, _N.c.alert_id == _A.c.id)
                .where(
                    _A.c.status == "open",
                    or_(
                        _N.c.alert_id.is_(None),
                        and_(
                            _A.c.occurrences > _N.c.occurrences,
                            _N.c.notified_at <= now - self.repeat,
                        ),
                    ),
                )
                .order_by(_A.c.id)
                .limit(self.batch)
            ).all()
            insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
            for row in rows:
                rounds = int(row.rounds or 0) + 1
                context = {
                    "alert_id": int(row.id),
                    "severity": row.severity,
                    "rule": row.rule,
                    "title": row.title,
                    "occurrences": int(row.occurrences),
                    "first_raised_at": row.first_raised_at.isoformat(),
                    "last_raised_at": row.last_raised_at.isoformat(),
                    "details": dict(row.details or {}),
                    "round": rounds,
                }
                for target in self.ops.targets(row.severity):
                    enqueue(
                        conn,
                        NewDelivery(
                            dedupe_key=f"alert:{row.id}:r{rounds}:{target.channel}:{target.recipient_ref}",
                            source="alert",
                            source_ref=str(row.id),
                            channel=target.channel,
                            recipient_ref=target.recipient_ref,
                            recipient_masked=target.recipient_masked,
                            template="ops_alert",
                            context=context,
                        ),
                        now,
                    )
                if row.rounds is None:
                    conn.execute(
                        insert(_N)
                        .values(
                            alert_id=row.id, notified_at=now, rounds=1, occurrences=row.occurrences
                        )
                        .on_conflict_do_nothing()
                    )
                else:
                    conn.execute(
                        update(_N)
                        .where(_N.c.alert_id == row.id)
                        .values(notified_at=now, rounds=rounds, occurrences=row.occurrences)
                    )
                metrics.ALERTS_ROUTED.labels(severity=row.severity).inc()
                log.info("alert.routed", alert_id=row.id, severity=row.severity, round=rounds)
                done += 1
        return done
