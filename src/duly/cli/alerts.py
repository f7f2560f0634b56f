"""``duly alerts …``: list, acknowledge and resolve operations alerts (through the engine
client, as the API does)."""

from __future__ import annotations

from typing import Annotated

import typer

from duly.cli.common import fail, open_system
from duly.cli.formatting import iso

alerts_app = typer.Typer(help="Operations alerts: list, ack, resolve.", no_args_is_help=True)


@alerts_app.command("list")
def alerts_list(
    status: Annotated[str | None, typer.Option("--status", help="open, acked or resolved.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 50,
) -> None:
    """List alerts, newest first."""
    from rich.console import Console
    from rich.table import Table

    with open_system() as system:
        rows = system.client.alerts(status, limit)
    table = Table("id", "severity", "status", "rule", "title", "count", "last raised")
    for a in rows:
        table.add_row(
            str(a.id),
            a.severity,
            a.status,
            a.rule,
            a.title,
            str(a.occurrences),
            iso(a.last_raised_at),
        )
    Console().print(table)


def _set_alert(alert_id: int, status: str, actor: str) -> None:
    from duly.engine.errors import NotFound, RunConflict

    with open_system() as system:
        try:
            row = system.client.set_alert_status(alert_id, status, actor)
        except (NotFound, RunConflict) as exc:
            fail(str(exc))
    typer.echo(f"alert {row.id} {row.status}")


@alerts_app.command("ack")
def alerts_ack(
    alert_id: int, by: Annotated[str, typer.Option("--by", help="Who.")] = "cli"
) -> None:
    """Acknowledge an alert."""
    _set_alert(alert_id, "acked", by)


@alerts_app.command("resolve")
def alerts_resolve(
    alert_id: int, by: Annotated[str, typer.Option("--by", help="Who.")] = "cli"
) -> None:
    """Resolve an alert."""
    _set_alert(alert_id, "resolved", by)
