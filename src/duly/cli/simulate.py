"""``duly simulate``: run the configured schedules over days of simulated time, in seconds.

The simulation uses a fresh embedded database (a temporary SQLite file, never the
configured store), the configured schedules and jobs, and a manual clock that jumps from
one due instant to the next, so an operator can see what duly would run, when, and how
long each run would take before changing a schedule in production.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from duly.cli.common import fail, load_settings

if TYPE_CHECKING:
    from duly.clock import ManualClock
    from duly.config import Settings

__all__ = ["simulate"]


def simulate(
    days: Annotated[int, typer.Option("--days", min=1, max=366, help="How many days to run.")] = 7,
    start: Annotated[
        str | None,
        typer.Option("--start", help="First instant, ISO 8601 (default: today 00:00 UTC)."),
    ] = None,
    show: Annotated[
        int, typer.Option("--show", min=0, help="How many runs to list (0: only the summary).")
    ] = 50,
) -> None:
    """Run the configured schedules over DAYS of simulated time and print what ran."""
    from duly.clock import ManualClock, SystemClock, ensure_utc
    from duly.logs import configure_logging

    settings = load_settings()
    configure_logging("warning", settings.logging.format)
    try:
        first = (
            ensure_utc(datetime.fromisoformat(start))
            if start
            else SystemClock().now().replace(hour=0, minute=0, second=0, microsecond=0)
        )
    except ValueError as exc:
        fail(f"--start {start!r}: {exc}")
    with tempfile.TemporaryDirectory(prefix="duly-simulate-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'simulation.db'}"
        clock = ManualClock(first)
        lines = asyncio.run(_simulate(settings.model_copy(update={"database_url": url}),
                                      clock, timedelta(days=days), show))
    for line in lines:
        typer.echo(line)


async def _simulate(
    settings: Settings, clock: ManualClock, span: timedelta, show: int
) -> list[str]:
    from duly.engine.store.base import RunFilter
    from duly.runtime import build_system
    from duly.testing import EngineHarness, test_options

    system = build_system(settings, clock=clock, auto_upgrade=True)
    try:
        names = system.sync_schedules()
        start = clock.now()
        options = replace(test_options(), node_name="simulation",
                          concurrency=system.options.concurrency)
        async with EngineHarness(system.store, system.registry, clock, options) as harness:
            await harness.advance(span)
        runs = sorted(system.store.run_list(RunFilter(limit=100_000)),
                      key=lambda r: (r.scheduled_for, r.id))
    finally:
        system.store.dispose()
    by_job = Counter((r.job_name, r.status.value) for r in runs)
    out = [
        f"simulated {start.isoformat()} → {clock.now().isoformat()} "
        f"({span.days} days); schedules: {', '.join(names)}",
        f"{len(runs)} runs",
    ]
    out += [f"  {job:<28} {status:<10} {n}" for (job, status), n in sorted(by_job.items())]
    if show and runs:
        out.append("runs (scheduled for → started, duration, status):")
        for r in runs[:show]:
            took = (
                f"{(r.finished_at - r.started_at).total_seconds():.0f} s"
                if r.finished_at and r.started_at
                else "-"
            )
            started = r.started_at.astimezone(UTC).isoformat() if r.started_at else "-"
            out.append(f"  {r.scheduled_for.isoformat()} → {started}  {took:>6}  "
                       f"{r.status.value:<10} {r.job_name}")
    return out
