"""``duly recurring …``: list, preview, pause, resume and cancel recurring payments."""

from __future__ import annotations

from typing import Annotated

import typer

from duly.cli.common import fail, open_system
from duly.cli.formatting import iso, mask, money

recurring_app = typer.Typer(
    help="Recurring payments: list, preview, pause, resume, cancel.", no_args_is_help=True
)


@recurring_app.command("list")
def recurring_list(
    status: Annotated[str | None, typer.Option("--status", help="Only this status.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 50,
) -> None:
    """List recurring payments."""
    from rich.console import Console
    from rich.table import Table

    from duly.operations import RecurringPayments

    with open_system() as system:
        rows = RecurringPayments(system.client).find(status=status, limit=limit)
    table = Table("id", "from", "to", "amount", "frequency", "next (UTC)", "status")
    for r in rows:
        table.add_row(
            str(r.id),
            mask(r.from_account),
            mask(r.to_account),
            money(r.amount_minor, r.currency),
            r.rrule or f"{r.frequency}/{r.interval}",
            iso(r.next_execute_at),
            r.status,
        )
    Console().print(table)


@recurring_app.command("preview")
def recurring_preview(
    payment_id: Annotated[int, typer.Argument(help="Payment id.")],
    count: Annotated[int, typer.Option("--count", min=1, max=1000)] = 10,
) -> None:
    """Print the next occurrences: unadjusted date, execution date, instant (UTC)."""
    from duly.operations import OperationError, RecurringPayments

    with open_system() as system:
        try:
            occurrences = RecurringPayments(system.client).preview(payment_id, count)
        except OperationError as exc:
            fail(str(exc))
    for o in occurrences:
        typer.echo(
            f"{o.unadjusted_date.isoformat()} {o.execution_date.isoformat()} {iso(o.execute_at)}"
        )


def _recurring_change(payment_id: int, verb: str) -> None:
    from duly.operations import OperationError, RecurringPayments

    with open_system() as system:
        payments = RecurringPayments(system.client)
        try:
            row = getattr(payments, verb)(payment_id)
        except OperationError as exc:
            fail(str(exc))
    typer.echo(f"recurring payment {row.id} {row.status}")


@recurring_app.command("pause")
def recurring_pause(payment_id: Annotated[int, typer.Argument(help="Payment id.")]) -> None:
    """Pause: occurrences falling due while paused are skipped."""
    _recurring_change(payment_id, "pause")


@recurring_app.command("resume")
def recurring_resume(payment_id: Annotated[int, typer.Argument(help="Payment id.")]) -> None:
    """Resume paying from now on."""
    _recurring_change(payment_id, "resume")


@recurring_app.command("cancel")
def recurring_cancel(payment_id: Annotated[int, typer.Argument(help="Payment id.")]) -> None:
    """Cancel for good; pending occurrences are cancelled."""
    _recurring_change(payment_id, "cancel")
