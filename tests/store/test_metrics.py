"""``/metrics`` over HTTP on a real port, and the Prometheus rule file names only real metrics."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import yaml
from prometheus_client import CollectorRegistry

from duly.clock import ManualClock
from duly.engine.alerts import StoreAlertSink
from duly.engine.store.base import NewAlert
from duly.engine.store.sql import SqlStore
from duly.metrics import start_metrics_server
from duly.operations.outbox import emit

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "duly-rules.yml"


def test_metrics_endpoint(store: SqlStore, clock: ManualClock) -> None:
    StoreAlertSink(store).raise_alert(
        NewAlert(dedupe_key="k", rule="node.lost", severity="critical", title="t", now=clock.now())
    )
    with store.engine.begin() as conn:
        emit(conn, event_type="x", aggregate="a", aggregate_id=1, dedupe_key="d", payload={},
             now=clock.now())  # fmt: skip
    clock.advance(90)
    server = start_metrics_server(store, clock, 0, registry=CollectorRegistry())
    try:
        text = httpx.get(f"http://127.0.0.1:{server.port}/metrics").text
    finally:
        server.stop()
    assert 'duly_alerts_open{severity="critical"} 1.0' in text
    assert "duly_outbox_unpublished 1.0" in text
    assert "duly_outbox_oldest_unpublished_seconds 90.0" in text
    assert "duly_scrape_error 0.0" in text
    assert "duly_oldest_due_run_seconds 0.0" in text


def test_rule_file_uses_exposed_metrics() -> None:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert len(rules) >= 8
    exposed = {
        "duly_runs", "duly_run_attempts_total", "duly_queue_depth", "duly_oldest_due_run_seconds",
        "duly_alerts_open", "duly_deliveries", "duly_reminders", "duly_outbox_unpublished",
        "duly_outbox_oldest_unpublished_seconds", "duly_node_heartbeat_age_seconds",
        "duly_scrape_error", "up", "duly_run_fire_lateness_seconds_bucket",
        "duly_balance_check_results", "duly_runs_finished_total",
    }  # fmt: skip
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "high", "medium", "low")
        names = set(re.findall(r"\b(duly_[a-z_]+|up)\b", rule["expr"]))
        assert names and names <= exposed, (rule["alert"], names - exposed)
