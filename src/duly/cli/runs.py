"""``duly runs …``: list runs, show one with its attempts, retry, cancel."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from duly.cli.common import fail, open_system
from duly.cli.formatting import attempt_line, iso, parse_instant

runs_app = typer.Typer(help="Runs: list, show, retry, cancel.", no_args_is_help=True)


@runs_app.command("list")
def runs_list(
    job: Annotated[str | None, typer.Option("--job", help="Only this job.")] = None,
    status: Annotated[str | None, typer.Option("--status", help="Only this status.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Scheduled at or after (ISO).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 50,
) -> None:
    """List runs, newest first."""
    from rich.console import Console
    from rich.table import Table

    from duly.engine.states import RunStatus
    from duly.engine.store.base import RunFilter

    try:
        st = RunStatus(status) if status else None
    except ValueError:
        fail(f"--status {status!r}: expected one of {', '.join(s.value for s in RunStatus)}")
    since_at = parse_instant(since, "--since") if since else None
    with open_system() as system:
        rows = system.client.runs(RunFilter(job_name=job, status=st, since=since_at, limit=limit))
    table = Table("id", "job", "scheduled for", "status", "attempt", "origin", "error")
    for r in rows:
        table.add_row(
            str(r.id),
            r.job_name,
            iso(r.scheduled_for),
            r.status.value,
            f"{r.attempt}/{r.max_attempts}",
            r.origin,
            r.error_code or "",
        )
    Console().print(table)


@runs_app.command("show")
def runs_show(run_id: Annotated[int, typer.Argument(help="Run id.")]) -> None:
    """Show one run: state, progress, attempts, error, summary."""
    with open_system() as system:
        run = system.store.run_get(run_id)
        if run is None:
            fail(f"no run {run_id}")
        attempts = system.store.run_attempts(run_id)
    lines = [
        f"run {run.id}  {run.job_name}  {run.status.value}",
        f"  scheduled for  {iso(run.scheduled_for)}",
        f"  origin         {run.origin}   idempotency key {run.idempotency_key}",
        f"  attempts       {run.attempt}/{run.max_attempts}",
        f"  started        {iso(run.started_at)}",
        f"  finished       {iso(run.finished_at)}",
    ]
    if run.progress_done is not None:
        total = f"/{run.progress_total}" if run.progress_total is not None else ""
        lines.append(f"  progress       {run.progress_done}{total}")
    if run.lease_owner:
        lines.append(f"  lease          {run.lease_owner} until {iso(run.lease_expires_at)}")
    if run.error_code:
        lines.append(f"  error          {run.error_code}: {run.error_message}")
    if run.args:
        lines.append(f"  args           {json.dumps(run.args, default=str)}")
    lines.append("  attempts:")
    lines.extend(attempt_line(a) for a in attempts)
    if run.result is not None:
        lines.append("  summary:")
        lines.extend(
            "    " + ln for ln in json.dumps(run.result, indent=2, default=str).splitlines()
        )
    typer.echo("\n".join(lines))


@runs_app.command("retry")
def runs_retry(run_id: Annotated[int, typer.Argument(help="Run id.")]) -> None:
    """Queue a failed, cancelled or missed run again."""
    from duly.engine.errors import NotFound, RunConflict

    with open_system() as system:
        try:
            run = system.client.retry(run_id)
        except (NotFound, RunConflict) as exc:
            fail(str(exc))
    typer.echo(f"run {run.id} queued again")


@runs_app.command("cancel")
def runs_cancel(run_id: Annotated[int, typer.Argument(help="Run id.")]) -> None:
    """Cancel a queued or retrying run; ask a running one to stop."""
    from duly.engine.errors import NotFound, RunConflict

    with open_system() as system:
        try:
            run = system.client.cancel(run_id)
        except (NotFound, RunConflict) as exc:
            fail(str(exc))
    typer.echo(
        f"run {run.id} "
        + ("cancel requested (running)" if run.cancel_requested else run.status.value)
    )
