"""``duly transfers …``: schedule, list, cancel and return scheduled transfers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from duly.cli.common import fail, open_system
from duly.cli.formatting import iso, mask, money

transfers_app = typer.Typer(
    help="Scheduled transfers: schedule, list, cancel, return.", no_args_is_help=True
)


@transfers_app.command("schedule")
def transfers_schedule(
    from_account: Annotated[str, typer.Option("--from", help="Account to debit.")],
    to_account: Annotated[str, typer.Option("--to", help="Account to credit.")],
    amount: Annotated[str, typer.Option("--amount", help="Decimal amount, e.g. 125.50.")],
    currency: Annotated[str, typer.Option("--currency", help="ISO 4217 code.")],
    on: Annotated[str, typer.Option("--date", help="Local date YYYY-MM-DD.")],
    at: Annotated[str, typer.Option("--time", help="Local time HH:MM.")] = "09:00",
    tz: Annotated[
        str | None, typer.Option("--tz", help="Timezone (default: the customer's).")
    ] = None,
    calendar: Annotated[
        str | None, typer.Option("--calendar", help="Rail (US-FED, GB-BACS, TARGET) or calendar.")
    ] = None,
    adjust: Annotated[str, typer.Option("--adjust", help="Business-day convention.")] = "following",
    memo: Annotated[str | None, typer.Option("--memo")] = None,
    key: Annotated[
        str | None, typer.Option("--idempotency-key", help="Same key, same transfer.")
    ] = None,
    bank: Annotated[
        str, typer.Option("--bank", help="ledger, or http (DULY_BANK_HTTP_URL).")
    ] = "ledger",
) -> None:
    """Schedule a one-off transfer."""
    import uuid
    from datetime import date as date_type

    from duly.operations import NewTransfer, OperationError, ScheduledTransfers

    try:
        local_date = date_type.fromisoformat(on)
    except ValueError:
        fail(f"--date {on!r} is not YYYY-MM-DD")
    with open_system() as system:
        try:
            row, created = ScheduledTransfers(system.client).create(
                NewTransfer(
                    request_key=key or f"cli-{uuid.uuid4()}",
                    from_account=from_account,
                    to_account=to_account,
                    amount=amount,
                    currency=currency,
                    local_date=local_date,
                    local_time=at,
                    timezone=tz,
                    convention=adjust,
                    calendar=calendar,
                    memo=memo,
                    bank=bank,
                )
            )
        except OperationError as exc:
            fail(str(exc))
    typer.echo(
        f"transfer {row.id} {'scheduled' if created else 'already exists'}: "
        f"{money(row.amount_minor, row.currency)} {mask(row.from_account)} → "
        f"{mask(row.to_account)} at {iso(row.execute_at)} ({row.status})"
    )


@transfers_app.command("list")
def transfers_list(
    status: Annotated[str | None, typer.Option("--status", help="Only this status.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 50,
) -> None:
    """List scheduled transfers (account numbers masked)."""
    from rich.console import Console
    from rich.table import Table

    from duly.operations import ScheduledTransfers

    with open_system() as system:
        rows = ScheduledTransfers(system.client).find(status=status, limit=limit)
    table = Table("id", "from", "to", "amount", "executes at (UTC)", "status", "attempts", "error")
    for r in rows:
        table.add_row(
            str(r.id),
            mask(r.from_account),
            mask(r.to_account),
            money(r.amount_minor, r.currency),
            iso(r.execute_at),
            r.status,
            str(r.attempts),
            r.error_code or "",
        )
    Console().print(table)


@transfers_app.command("cancel")
def transfers_cancel(transfer_id: Annotated[int, typer.Argument(help="Transfer id.")]) -> None:
    """Cancel a transfer that has not started."""
    from duly.operations import OperationError, ScheduledTransfers

    with open_system() as system:
        try:
            row = ScheduledTransfers(system.client).cancel(transfer_id)
        except OperationError as exc:
            fail(str(exc))
    typer.echo(f"transfer {row.id} {row.status}")


@transfers_app.command("return")
def transfers_return(
    transfer_id: Annotated[int, typer.Argument(help="The executed transfer that came back.")],
    code: Annotated[str, typer.Option("--code", help="Nacha return code, e.g. R01.")],
    returned_at: Annotated[
        str | None, typer.Option("--at", help="When it was returned (ISO, default now).")
    ] = None,
    new_authorization: Annotated[
        bool, typer.Option("--new-authorization", help="R08: the customer authorised it again.")
    ] = False,
) -> None:
    """Record an ACH return; reinitiate it when Nacha allows (R01/R09: twice within 180 days)."""
    from duly.operations import OperationError, ScheduledTransfers
    from duly.operations.transfers.returns import AchReturns

    when = None
    if returned_at is not None:
        try:
            when = datetime.fromisoformat(returned_at)
        except ValueError:
            fail(f"--at {returned_at!r} is not an ISO date-time")
        if when.tzinfo is None:
            fail(f"--at {returned_at!r} needs a UTC offset, e.g. 2026-03-05T14:00:00+00:00")
    with open_system() as system:
        try:
            decision = AchReturns(ScheduledTransfers(system.client)).record(
                transfer_id, code, returned_at=when, new_authorization=new_authorization
            )
        except OperationError as exc:
            fail(str(exc))
    verdict = (f"reinitiated as transfer {decision.reinitiation_id}" if decision.reinitiated
               else "not reinitiated")  # fmt: skip
    typer.echo(f"transfer {transfer_id} returned {decision.code}: {verdict} ({decision.reason})")
