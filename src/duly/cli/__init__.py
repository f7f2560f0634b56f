"""The ``duly`` command line (Typer): one module per command group, assembled here.

Each command parses its input, calls the service layer, and prints. Errors in the user's
input print one clear line on stderr and exit with status 2; nothing is changed.
"""

from __future__ import annotations

from typing import Annotated

import typer

from duly.audit import acting_as, cli_actor
from duly.cli.alerts import alerts_app
from duly.cli.audit import audit_app
from duly.cli.balance import balance_app, errors_app
from duly.cli.bank_sim import bank_sim
from duly.cli.banking import accounts_app, customers_app
from duly.cli.common import state
from duly.cli.db import db_app
from duly.cli.history import history_app
from duly.cli.jobs import jobs_app, trigger
from duly.cli.ledger import ledger_app
from duly.cli.notify import deliveries_app, notify_app, reminders_app
from duly.cli.recurring import recurring_app
from duly.cli.runs import runs_app
from duly.cli.schedules import schedule_app
from duly.cli.serve import serve, worker
from duly.cli.simulate import simulate
from duly.cli.tokens import token_app
from duly.cli.transfers import transfers_app
from duly.version import __version__

__all__ = ["app", "main"]

app = typer.Typer(
    name="duly",
    help="duly runs a bank's scheduled operations on time, exactly once, with an audit trail.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _name, _group in (
    ("schedule", schedule_app),
    ("db", db_app),
    ("jobs", jobs_app),
    ("runs", runs_app),
    ("alerts", alerts_app),
    ("errors", errors_app),
    ("balance-check", balance_app),
    ("notify", notify_app),
    ("deliveries", deliveries_app),
    ("reminders", reminders_app),
    ("customers", customers_app),
    ("accounts", accounts_app),
    ("ledger", ledger_app),
    ("transfers", transfers_app),
    ("recurring", recurring_app),
    ("token", token_app),
    ("history", history_app),
    ("audit", audit_app),
):
    app.add_typer(_group, name=_name)

for _name, _command in (
    ("trigger", trigger),
    ("simulate", simulate),
    ("serve", serve),
    ("worker", worker),
    ("bank-sim", bank_sim),
):
    app.command(_name)(_command)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"duly {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", envvar="DULY_CONFIG",
                     help="Path of duly.yaml (default: ./duly.yaml if present)."),
    ] = None,
) -> None:
    """duly: a durable scheduler for scheduled financial operations."""
    state["config"] = config
    # Every change a command makes is recorded as the operating-system user's, until the
    # command ends. ``duly serve``/``duly worker`` act as ``system:<node>`` instead: the
    # node sets that inside its own event loop, which starts after this and overrides it.
    ctx.with_resource(acting_as(cli_actor()))


def main() -> None:
    """Console-script entry point."""
    app()
