"""Prometheus metrics: the store's state, read at scrape time, plus in-process counters.

Served on ``api.metrics_port`` by ``duly worker`` (and ``duly serve`` until the API mounts
``/metrics`` itself). Everything a rule needs to tell that duly is late, stuck or down
from *outside* duly is here; the rules are in ``deploy/prometheus/duly-rules.yml``.

From the store (gauges unless noted): ``duly_runs{job,status}``,
``duly_run_attempts_total{job,status}`` (counter), ``duly_queue_depth{queue}`` (runs due
and waiting), ``duly_oldest_due_run_seconds``, ``duly_alerts_open{severity}``,
``duly_deliveries{channel,status}``, ``duly_outbox_unpublished``,
``duly_outbox_oldest_unpublished_seconds``, ``duly_reminders{status}``,
``duly_node_heartbeat_age_seconds{node}`` (running nodes),
``duly_balance_check_results{result,code}`` (the latest business date's outcomes; ``code``
is the taxonomy code of an ``ERROR``, empty otherwise), ``duly_scrape_error``.
In process: ``duly_runs_finished_total{job,status}`` (outcomes written by this node's
worker), ``duly_run_fire_lateness_seconds{job}`` (histogram of ``started - scheduled_for``
at a run's first attempt), both fed by :func:`with_run_metrics`; ``duly_notify_*``
(:mod:`duly.notify.metrics`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from typing import Any

import structlog
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from duly.clock import Clock
from duly.engine.options import EngineOptions
from duly.engine.store.base import RunRow
from duly.engine.store.schema import alerts, job_executions, nodes, runs
from duly.engine.store.sql import SqlStore
from duly.notify.schema import deliveries, reminders
from duly.operations.balance_check.models import balance_check_results
from duly.operations.outbox import outbox

__all__ = [
    "FIRE_LATENESS",
    "RUNS_FINISHED",
    "MetricsServer",
    "StoreCollector",
    "start_metrics_server",
    "with_run_metrics",
]

log = structlog.get_logger("duly.metrics")

RUNS_FINISHED = Counter(
    "duly_runs_finished", "Run outcomes written by this node, by job and status",
    ["job", "status"],
)  # fmt: skip
FIRE_LATENESS = Histogram(
    "duly_run_fire_lateness_seconds",
    "Seconds between a run's scheduled time and the start of its first attempt",
    ["job"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)


def _run_started(run: RunRow, started: datetime) -> None:
    if run.attempt <= 1:  # a retry's wait is its backoff, not lateness
        late = (started - run.scheduled_for).total_seconds()
        FIRE_LATENESS.labels(job=run.job_name).observe(max(late, 0.0))


def _run_finished(run: RunRow, status: str, finished: datetime) -> None:
    RUNS_FINISHED.labels(job=run.job_name, status=status).inc()


def with_run_metrics(options: EngineOptions) -> EngineOptions:
    """``options`` with the worker hooks that feed the in-process run metrics."""
    return replace(options, on_run_started=_run_started, on_run_finished=_run_finished)


class StoreCollector(Collector):
    """Reads counts from the store on each scrape (a few GROUP BY queries)."""

    def __init__(self, store: SqlStore, clock: Clock) -> None:
        self.store, self.clock = store, clock

    def collect(self) -> Iterator[Any]:
        """Yield the metric families."""
        error = GaugeMetricFamily("duly_scrape_error", "1 if the store could not be read")
        try:
            yield from self._collect()
            error.add_metric([], 0)
        except Exception:
            log.exception("metrics.scrape_failed")
            error.add_metric([], 1)
        yield error

    def _collect(self) -> Iterator[Any]:
        now = self.clock.now()
        with self.store.engine.connect() as conn:
            fam = GaugeMetricFamily("duly_runs", "Runs by job and status", labels=["job", "status"])
            for row in conn.execute(
                select(runs.c.job_name, runs.c.status, func.count()).group_by(
                    runs.c.job_name, runs.c.status
                )
            ):
                fam.add_metric([row[0], row[1]], row[2])
            yield fam
            cnt = CounterMetricFamily(
                "duly_run_attempts", "Attempts by job and status", labels=["job", "status"]
            )
            for row in conn.execute(
                select(job_executions.c.job_name, job_executions.c.status, func.count()).group_by(
                    job_executions.c.job_name, job_executions.c.status
                )
            ):
                cnt.add_metric([row[0], row[1]], row[2])
            yield cnt
            due = runs.c.status.in_(("queued", "retrying")) & (runs.c.not_before <= now)
            depth = GaugeMetricFamily("duly_queue_depth", "Runs due and waiting", labels=["queue"])
            for row in conn.execute(
                select(runs.c.queue, func.count()).where(due).group_by(runs.c.queue)
            ):
                depth.add_metric([row[0]], row[1])
            yield depth
            oldest = conn.execute(select(func.min(runs.c.not_before)).where(due)).scalar()
            yield GaugeMetricFamily(
                "duly_oldest_due_run_seconds",
                "How long the oldest due run has waited (0: none waiting)",
                value=(now - oldest).total_seconds() if oldest else 0.0,
            )
            fam = GaugeMetricFamily("duly_alerts_open", "Open alerts", labels=["severity"])
            counts = dict.fromkeys(("critical", "high", "medium", "low"), 0)
            for row in conn.execute(
                select(alerts.c.severity, func.count())
                .where(alerts.c.status == "open")
                .group_by(alerts.c.severity)
            ):
                counts[row[0]] = row[1]
            for severity, n in counts.items():
                fam.add_metric([severity], n)
            yield fam
            fam = GaugeMetricFamily(
                "duly_deliveries", "Deliveries by channel and status", labels=["channel", "status"]
            )
            for row in conn.execute(
                select(deliveries.c.channel, deliveries.c.status, func.count()).group_by(
                    deliveries.c.channel, deliveries.c.status
                )
            ):
                fam.add_metric([row[0], row[1]], row[2])
            yield fam
            fam = GaugeMetricFamily("duly_reminders", "Reminders by status", labels=["status"])
            for row in conn.execute(
                select(reminders.c.status, func.count()).group_by(reminders.c.status)
            ):
                fam.add_metric([row[0]], row[1])
            yield fam
            pending = outbox.c.published_at.is_(None)
            n, first = conn.execute(
                select(func.count(), func.min(outbox.c.created_at)).where(pending)
            ).one()
            yield GaugeMetricFamily("duly_outbox_unpublished", "Outbox events not yet relayed",
                                    value=n)  # fmt: skip
            yield GaugeMetricFamily(
                "duly_outbox_oldest_unpublished_seconds",
                "Age of the oldest unrelayed outbox event (0: none)",
                value=(now - first).total_seconds() if first else 0.0,
            )
            fam = GaugeMetricFamily(
                "duly_node_heartbeat_age_seconds", "Seconds since a running node's heartbeat",
                labels=["node"],
            )  # fmt: skip
            for row in conn.execute(
                select(nodes.c.name, nodes.c.heartbeat_at).where(nodes.c.state == "running")
            ):
                fam.add_metric([row[0]], (now - row[1]).total_seconds())
            yield fam
            fam = GaugeMetricFamily(
                "duly_balance_check_results",
                "Nightly balance check outcomes of the latest business date, by result and code",
                labels=["result", "code"],
            )
            bcr = balance_check_results.c
            latest = select(func.max(bcr.business_date)).scalar_subquery()
            for row in conn.execute(
                select(bcr.result, bcr.error_code, func.count())
                .where(bcr.business_date == latest)
                .group_by(bcr.result, bcr.error_code)
            ):
                fam.add_metric([row[0], row[1] or ""], row[2])
            yield fam


class MetricsServer:
    """A running ``/metrics`` listener; :meth:`stop` closes it."""

    def __init__(self, server: Any, thread: threading.Thread, registry: CollectorRegistry,
                 collector: StoreCollector) -> None:  # fmt: skip
        self.server, self.thread = server, thread
        self.registry, self.collector = registry, collector

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.server.server_address[1])

    def stop(self) -> None:
        """Stop listening and drop the store collector."""
        self.server.shutdown()
        self.server.server_close()
        self.registry.unregister(self.collector)


def start_metrics_server(
    store: SqlStore, clock: Clock, port: int, host: str = "127.0.0.1",
    registry: CollectorRegistry = REGISTRY,
) -> MetricsServer:  # fmt: skip
    """Serve ``/metrics`` on ``host:port`` (0: any free port) from a background thread."""
    collector = StoreCollector(store, clock)
    registry.register(collector)
    server, thread = start_http_server(port, addr=host, registry=registry)
    log.info("metrics.listening", host=host, port=server.server_address[1])
    return MetricsServer(server, thread, registry, collector)
