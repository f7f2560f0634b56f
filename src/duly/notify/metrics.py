"""Prometheus metrics of notifications (on the default registry; served by :mod:`duly.metrics`)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["ALERTS_ROUTED", "DELIVERIES", "DELIVERY_LATENESS", "REMINDERS_PLANNED"]

DELIVERIES = Counter(
    "duly_notify_deliveries_total", "Delivery outcomes by channel and status", ["channel", "status"]
)
DELIVERY_LATENESS = Histogram(
    "duly_notify_delivery_lateness_seconds",
    "Seconds between a delivery's due time and its successful send",
    ["source"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
REMINDERS_PLANNED = Counter(
    "duly_notify_reminders_planned_total", "Reminders planned, by outcome", ["status"]
)
ALERTS_ROUTED = Counter(
    "duly_notify_alerts_routed_total", "Alert notifications queued, by severity", ["severity"]
)
