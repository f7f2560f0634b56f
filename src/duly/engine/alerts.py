"""Alerts raised by engine rules: the :class:`AlertSink` interface and its stored default."""

from __future__ import annotations

from typing import Protocol

import structlog

from duly.engine.store.base import AlertRow, NewAlert
from duly.engine.store.sql import SqlStore

__all__ = ["AlertSink", "StoreAlertSink"]

log = structlog.get_logger("duly.alerts")


class AlertSink(Protocol):
    """Where engine rules send alerts. Channels (e-mail, webhook, …) implement it later."""

    def raise_alert(self, alert: NewAlert) -> AlertRow | None:
        """Record or deliver ``alert``; deduplicate by its key."""
        ...


class StoreAlertSink:
    """Stores each alert as a row (deduplicated by key while open) and logs one line."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def raise_alert(self, alert: NewAlert) -> AlertRow:
        """Store the alert; log it the first time it opens."""
        row, new = self._store.alert_raise(alert)
        log.warning(
            "alert.raised" if new else "alert.repeated",
            alert_id=row.id,
            rule=alert.rule,
            severity=alert.severity,
            title=alert.title,
            run_id=alert.run_id,
            job=alert.job_name,
            occurrences=row.occurrences,
        )
        return row
