"""``duly jobs list`` and ``duly trigger``: the registered jobs, and running one now."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from duly.cli.common import fail, open_system

jobs_app = typer.Typer(help="Registered jobs.", no_args_is_help=True)


@jobs_app.command("list")
def jobs_list() -> None:
    """List the jobs this installation can run."""
    from rich.console import Console
    from rich.table import Table

    from duly.runtime import job_registry

    table = Table("job", "queue", "timeout", "attempts", "max concurrency", "description")
    for job in job_registry():
        table.add_row(
            job.name,
            job.queue,
            str(job.timeout),
            str(job.retry.max_attempts),
            str(job.max_concurrency or "-"),
            job.description,
        )
    Console().print(table)


def parse_args(pairs: list[str]) -> dict[str, Any]:
    """``k=v`` pairs; a value that reads as JSON (number, true, list…) is taken as such."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            fail(f"--arg {pair!r}: expected key=value")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def trigger(
    job: Annotated[str, typer.Argument(help="Job name (see `duly jobs list`).")],
    arg: Annotated[
        list[str] | None, typer.Option("--arg", help="Argument key=value (repeatable).")
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option("--idempotency-key", help="The same key always gives the same run."),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the run finishes.")] = False,
    wait_timeout: Annotated[float, typer.Option("--wait-timeout", help="Seconds to wait.")] = 3600,
) -> None:
    """Run JOB now (a manual run). Prints the run id; with --wait, its outcome."""
    from duly.engine.errors import UnknownJob
    from duly.engine.states import FINAL, RunStatus

    args = parse_args(arg or [])
    with open_system() as system:
        try:
            run, created = system.client.trigger(job, args, idempotency_key=idempotency_key)
        except UnknownJob as exc:
            fail(str(exc))
        typer.echo(f"run {run.id} {'queued' if created else 'already exists'} ({run.status.value})")
        if not wait:
            return
        deadline = system.clock.now().timestamp() + wait_timeout
        current = run
        while current.status not in FINAL and system.clock.now().timestamp() < deadline:
            system.clock.sleep_blocking(0.2)
            current = system.store.run_get(run.id) or current
    typer.echo(
        f"run {current.id} {current.status.value}"
        + (f": {current.error_code} {current.error_message}" if current.error_code else "")
    )
    if current.result is not None:
        typer.echo(json.dumps(current.result, indent=2, default=str))
    raise typer.Exit(0 if current.status is RunStatus.SUCCEEDED else 1)
