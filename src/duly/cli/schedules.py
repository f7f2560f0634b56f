"""``duly schedule …``: preview a spec's next fires, list, pause and resume schedules."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from duly.cli.common import fail, open_system
from duly.cli.formatting import iso, parse_after

schedule_app = typer.Typer(
    help="Schedules: preview specs, list, pause, resume.", no_args_is_help=True
)


@schedule_app.command("preview")
def schedule_preview(
    spec: Annotated[
        str, typer.Argument(help="A schedule spec, e.g. 'daily:02:30' or 'cron:*/15 * * * *'.")
    ],
    tz: Annotated[str, typer.Option("--tz", help="IANA timezone the spec is read in.")] = "UTC",
    after: Annotated[
        str | None, typer.Option("--after", help="ISO instant to start after (default: now).")
    ] = None,
    count: Annotated[
        int, typer.Option("--count", min=1, max=100_000, help="How many fire times.")
    ] = 10,
    calendar: Annotated[
        str | None,
        typer.Option("--calendar", help="Holiday calendar, CC or CC-SUBDIV (e.g. GB-ENG)."),
    ] = None,
    adjust: Annotated[
        str,
        typer.Option(
            "--adjust",
            help="Business-day convention: none, following, modified_following, "
            "preceding, modified_preceding.",
        ),
    ] = "none",
) -> None:
    """Print the next COUNT fire times of SPEC, one ISO-8601 instant per line in the schedule's offset."""
    from zoneinfo import ZoneInfo

    from duly.clock import SystemClock
    from duly.engine.triggers import next_fires
    from duly.timing import SpecError, parse_trigger

    try:
        trigger = parse_trigger(spec, tz, calendar=calendar, adjust=adjust)
        start = parse_after(after, tz) if after else SystemClock().now()
    except SpecError as exc:
        fail(str(exc))
    zone = ZoneInfo(tz)
    lines = [fire.astimezone(zone).isoformat() for fire in next_fires(trigger, start, count)]
    sys.stdout.write("".join(f"{line}\n" for line in lines))


@schedule_app.command("list")
def schedule_list() -> None:
    """List schedules with their next fire."""
    from rich.console import Console
    from rich.table import Table

    with open_system() as system:
        rows = system.store.schedule_list()
    table = Table("name", "job", "spec", "timezone", "state", "next fire (UTC)", "source")
    for r in rows:
        table.add_row(
            r.name,
            r.job_name,
            r.spec,
            r.timezone,
            "broken" if r.broken_at else ("paused" if r.paused else "active"),
            iso(r.next_fire_at),
            r.source,
        )
    Console().print(table)


@schedule_app.command("pause")
def schedule_pause(name: Annotated[str, typer.Argument(help="Schedule name.")]) -> None:
    """Stop a schedule firing until it is resumed."""
    from duly.engine.errors import NotFound

    with open_system() as system:
        try:
            row = system.client.pause(name)
        except NotFound as exc:
            fail(str(exc))
    typer.echo(f"paused {row.name}")


@schedule_app.command("resume")
def schedule_resume(name: Annotated[str, typer.Argument(help="Schedule name.")]) -> None:
    """Fire a paused schedule again, from now on."""
    from duly.engine.errors import NotFound

    with open_system() as system:
        try:
            row = system.client.resume(name)
        except NotFound as exc:
            fail(str(exc))
    typer.echo(f"resumed {row.name}; next fire {iso(row.next_fire_at)}")
