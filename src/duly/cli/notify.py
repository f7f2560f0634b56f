"""``duly notify``, ``duly deliveries`` and ``duly reminders``: notifications from the shell."""

from __future__ import annotations

from typing import Annotated

import typer

from duly.cli.common import fail, open_system

__all__ = ["deliveries_app", "notify_app", "reminders_app"]

notify_app = typer.Typer(help="Notifications: send a test message.", no_args_is_help=True)
deliveries_app = typer.Typer(help="Notification deliveries: list.", no_args_is_help=True)
reminders_app = typer.Typer(
    help="Payment reminders: list; set an operation's own offsets.", no_args_is_help=True
)


@notify_app.command("test-send")
def test_send(
    channel: Annotated[str, typer.Option("--channel", help="email, webhook, sms, push or log.")],
    to: Annotated[str, typer.Option("--to", help="Address, phone, push token or webhook name.")],
    text: Annotated[str, typer.Option("--text", help="The message.")] = "duly test message",
) -> None:
    """Send one message now through a configured channel (prints the outcome)."""
    import httpx

    from duly.notify.channels import ChannelError, Message
    from duly.notify.mask import mask_recipient
    from duly.notify.sender import ChannelSet
    from duly.notify.templates import Templates

    with open_system() as system:
        settings = system.settings.notify
        with httpx.Client() as client:
            channels = ChannelSet.from_settings(settings, client)
            if channel not in channels.available:
                fail(f"channel {channel} is not configured (see notify.* in duly.yaml)")
            key = f"test:{system.clock.now().isoformat()}:{channel}"
            rendered = Templates(default_locale=settings.default_locale).render(
                "test", {"text": text}, locale=settings.default_locale
            )
            message = Message(to=to, subject=rendered.subject, text=rendered.text,
                              short=rendered.short, idempotency_key=key, template="test")  # fmt: skip
            shown = f"webhook:{to}" if channel == "webhook" else mask_recipient(channel, to)
            try:
                result = channels.send(channel, to, message)
            except ChannelError as exc:
                kind = "transient" if exc.transient else "permanent"
                fail(f"{channel} to {shown} failed ({kind}): {exc}", code=1)
    typer.echo(
        f"sent via {channel} to {shown}: {result.code}" + (f" {result.ref}" if result.ref else "")
    )


@deliveries_app.command("list")
def deliveries_list(
    status: Annotated[
        str | None, typer.Option("--status", help="pending, sending, sent, failed, cancelled.")
    ] = None,
    source: Annotated[
        str | None, typer.Option("--source", help="outbox, reminder, alert, test.")
    ] = None,
    channel: Annotated[str | None, typer.Option("--channel")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 50,
) -> None:
    """List deliveries, newest first (recipients masked)."""
    from rich.console import Console
    from rich.table import Table

    from duly.notify.deliveries import list_deliveries

    with open_system() as system:
        rows = list_deliveries(system.store.engine, status=status, source=source,
                               channel=channel, limit=limit)  # fmt: skip
    table = Table("id", "source", "channel", "recipient", "template", "status", "attempts",
                  "code", "due", "sent")  # fmt: skip
    for d in rows:
        table.add_row(str(d.id), d.source, d.channel, d.recipient_masked, d.template, d.status,
                      str(d.attempts), d.provider_code or "", _iso(d.next_attempt_at),
                      _iso(d.sent_at))  # fmt: skip
    Console(width=200).print(table)


@reminders_app.command("list")
def reminders_list(
    status: Annotated[
        str | None, typer.Option("--status", help="planned, cancelled or skipped.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 50,
) -> None:
    """List payment reminders, next first, with their delivery's status."""
    from rich.console import Console
    from rich.table import Table
    from sqlalchemy import select

    from duly.notify.schema import deliveries, reminders

    with open_system() as system, system.store.engine.connect() as conn:
        stmt = (
            select(reminders, deliveries.c.status.label("delivery_status"))
            .outerjoin(deliveries, deliveries.c.id == reminders.c.delivery_id)
            .order_by(reminders.c.send_at, reminders.c.id)
            .limit(limit)
        )
        if status:
            stmt = stmt.where(reminders.c.status == status)
        rows = conn.execute(stmt).all()
    table = Table("id", "occurrence", "v", "offset", "channel", "send at", "executes", "status",
                  "delivery", "reason")  # fmt: skip
    for r in rows:
        table.add_row(str(r.id), r.occurrence_key, str(r.version), r.offset, r.channel,
                      _iso(r.send_at), _iso(r.execute_at), r.status, r.delivery_status or "",
                      r.reason or "")  # fmt: skip
    Console(width=200).print(table)


@reminders_app.command("offsets")
def reminders_offsets(
    offsets: Annotated[
        list[str] | None, typer.Argument(help="Offsets before execution: 30m, 2h, 1d, 1w.")
    ] = None,
    transfer: Annotated[
        int | None, typer.Option("--transfer", help="Scheduled transfer id.")
    ] = None,
    payment: Annotated[int | None, typer.Option("--payment", help="Recurring payment id.")] = None,
    clear: Annotated[
        bool, typer.Option("--clear", help="Back to the customer's or configured offsets.")
    ] = False,
) -> None:
    """Give one scheduled transfer or recurring payment its own reminder offsets (re-plans now)."""
    from duly.operations.reminders.planning import parse_offset
    from duly.operations.reminders.service import ReminderPlanner

    if (transfer is None) == (payment is None):
        fail("name one operation: --transfer ID or --payment ID")
    if bool(offsets) == clear:
        fail("give offsets (e.g. 2d 2h) or --clear")
    for offset in offsets or []:
        try:
            parse_offset(offset)
        except ValueError as exc:
            fail(str(exc))
    kind, ref_id = ("transfer", transfer) if transfer is not None else ("payment", payment)
    assert ref_id is not None
    with open_system() as system:
        s = system.settings.notify
        planner = ReminderPlanner(system.store.engine, system.clock, s.reminders, _channels(s))
        try:
            with system.store.engine.begin() as conn:
                planned = planner.set_offsets(conn, kind, ref_id, None if clear else offsets)
        except ValueError as exc:
            fail(str(exc))
    shown = "default" if clear else " ".join(offsets or [])
    typer.echo(f"{kind} {ref_id}: reminder offsets {shown}; {planned} reminder(s) planned")


def _channels(settings: object) -> set[str]:
    import httpx

    from duly.config import NotifySettings
    from duly.notify.sender import ChannelSet

    assert isinstance(settings, NotifySettings)
    with httpx.Client() as client:
        return ChannelSet.from_settings(settings, client).available


def _iso(value: object) -> str:
    return value.isoformat(timespec="seconds") if hasattr(value, "isoformat") else ""
