"""``duly alerts list|ack|resolve`` (CliRunner on a migrated SQLite file), through the engine client."""

from __future__ import annotations

from datetime import UTC, datetime

from typer.testing import CliRunner

from duly.cli import app
from duly.engine.store.base import NewAlert
from duly.engine.store.sql import SqlStore

RUN = CliRunner()
T0 = datetime(2026, 3, 2, 22, 0, tzinfo=UTC)


def test_ack_resolve_and_their_refusals(cli_store: SqlStore) -> None:
    alert, _ = cli_store.alert_raise(NewAlert(dedupe_key="k", rule="node.lost", severity="high",
                                              title="node n1 lost", now=T0))  # fmt: skip
    listed = RUN.invoke(app, ["alerts", "list", "--status", "open"])
    assert listed.exit_code == 0 and "node.lost" in listed.output, listed.output
    acked = RUN.invoke(app, ["alerts", "ack", str(alert.id), "--by", "ana"])
    assert acked.exit_code == 0 and f"alert {alert.id} acked" in acked.output
    row = cli_store.alert_get(alert.id)
    assert row is not None and (row.status, row.acked_by) == ("acked", "ana")
    assert row.acked_at is not None
    done = RUN.invoke(app, ["alerts", "resolve", str(alert.id)])
    assert done.exit_code == 0 and f"alert {alert.id} resolved" in done.output
    row = cli_store.alert_get(alert.id)
    assert row is not None and (row.status, row.resolved_by) == ("resolved", "cli")
    again = RUN.invoke(app, ["alerts", "ack", str(alert.id)])
    assert again.exit_code == 2 and "already resolved" in again.output
    unknown = RUN.invoke(app, ["alerts", "resolve", "999"])
    assert unknown.exit_code == 2 and "no alert 999" in unknown.output
    assert "node.lost" not in RUN.invoke(app, ["alerts", "list", "--status", "open"]).output
