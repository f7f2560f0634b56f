"""``duly errors …`` and ``duly balance-check …``: the error log and the nightly check's results.

Tables show outcomes and codes, never a balance. Bad input prints one line and exits 2.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from duly.cli.common import fail, open_system

__all__ = ["balance_app", "errors_app"]

errors_app = typer.Typer(
    help="The error log: summary by code, trends by hour, top customers, list, resolve.",
    no_args_is_help=True,
)
balance_app = typer.Typer(
    help="The nightly premium balance check: results of a run, missed nights.",
    no_args_is_help=True,
)

Since = Annotated[
    str | None, typer.Option("--since", help="Start of the period (ISO 8601; default: --hours ago).")
]
Until = Annotated[str | None, typer.Option("--until", help="End of the period (ISO 8601; default: now).")]
Hours = Annotated[int, typer.Option("--hours", min=1, max=24 * 366, help="Period length in hours.")]


def _instant(text: str, flag: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{flag} {text!r}: expected an ISO 8601 instant, e.g. 2026-03-02T22:00:00+00:00")
    if value.tzinfo is None:
        fail(f"{flag} {text!r}: give a UTC offset (e.g. +00:00 or Z)")
    return value.astimezone(UTC)


def _period(now: datetime, since: str | None, until: str | None, hours: int) -> tuple[datetime, datetime]:
    end = _instant(until, "--until") if until else now
    start = _instant(since, "--since") if since else end - timedelta(hours=hours)
    if start >= end:
        fail("--since must be before --until")
    return start, end


def _iso(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds") if value else ""


@errors_app.command("summary")
def errors_summary(since: Since = None, until: Until = None, hours: Hours = 24) -> None:
    """Errors by code in a period (default: the last 24 hours)."""
    from rich.console import Console
    from rich.table import Table

    from duly.operations.balance_check.monitoring import error_counts_by_code

    with open_system() as system:
        start, end = _period(system.clock.now(), since, until, hours)
        rows = error_counts_by_code(system.store.engine, start, end)
    table = Table("code", "errors", "unresolved", "severity", "description",
                  title=f"errors {_iso(start)} – {_iso(end)}")
    for r in rows:
        table.add_row(r.code, str(r.count), str(r.unresolved), r.severity, r.description)
    Console(width=160).print(table)
    typer.echo(f"total: {sum(r.count for r in rows)}")


@errors_app.command("trends")
def errors_trends(
    since: Since = None,
    until: Until = None,
    hours: Hours = 24,
    code: Annotated[str | None, typer.Option("--code", help="Only this code.")] = None,
) -> None:
    """Errors per hour (UTC) in a period, every hour listed."""
    from duly.operations.balance_check.monitoring import error_counts_by_hour

    with open_system() as system:
        start, end = _period(system.clock.now(), since, until, hours)
        rows = error_counts_by_hour(system.store.engine, start, end, code=code)
    peak = max((r.count for r in rows), default=0) or 1
    for r in rows:
        bar = "#" * max(1 if r.count else 0, round(40 * r.count / peak))
        typer.echo(f"{_iso(r.hour)}  {r.count:6d}  {bar}")


@errors_app.command("top")
def errors_top(
    since: Since = None,
    until: Until = None,
    hours: Hours = 24 * 7,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 10,
) -> None:
    """The customers with most errors in a period (default: the last 7 days)."""
    from rich.console import Console
    from rich.table import Table

    from duly.operations.balance_check.monitoring import top_customers

    with open_system() as system:
        start, end = _period(system.clock.now(), since, until, hours)
        rows = top_customers(system.store.engine, start, end, limit=limit)
    table = Table("customer", "errors", "last code", "last logged")
    for r in rows:
        table.add_row(str(r.customer_id), str(r.count), r.last_code, _iso(r.last_logged_at))
    Console(width=160).print(table)


@errors_app.command("list")
def errors_list(
    code: Annotated[str | None, typer.Option("--code", help="Only this code.")] = None,
    customer: Annotated[int | None, typer.Option("--customer", help="Only this customer; also prints their check history.")] = None,
    unresolved: Annotated[bool, typer.Option("--unresolved", help="Only unresolved errors.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 50,
    before_id: Annotated[int | None, typer.Option("--before-id", help="Page: errors older than this id.")] = None,
) -> None:
    """Recent errors, newest first (drill down with --customer)."""
    from rich.console import Console
    from rich.table import Table

    from duly.operations.balance_check.monitoring import customer_history, recent_errors

    with open_system() as system:
        engine = system.store.engine
        rows = recent_errors(engine, limit=limit, code=code, customer_id=customer,
                             unresolved_only=unresolved, before_id=before_id)
        history = customer_history(engine, customer) if customer is not None else []
    table = Table("id", "logged", "job", "run", "customer", "date", "code", "retries",
                  "resolved", "message")
    for r in rows:
        table.add_row(str(r.id), _iso(r.logged_at), r.job_name, str(r.run_id or ""),
                      str(r.customer_id or ""), str(r.business_date or ""), r.error_code,
                      str(r.retry_count), f"yes ({r.resolved_by})" if r.resolved else "no",
                      r.message)
    console = Console(width=200)
    console.print(table)
    if customer is not None:
        hist = Table("date", "result", "code", "attempts", "run", "checked",
                     title=f"customer {customer}: balance check history")
        for h in history:
            hist.add_row(h.business_date.isoformat(), h.result, h.error_code or "",
                         str(h.attempts), str(h.run_id), _iso(h.checked_at))
        console.print(hist)


@errors_app.command("resolve")
def errors_resolve(
    error_id: Annotated[int, typer.Argument(help="Error id (see `duly errors list`).")],
    by: Annotated[str, typer.Option("--by", help="Who resolves it.")],
    notes: Annotated[str, typer.Option("--notes", help="What was found and done.")],
) -> None:
    """Mark an error resolved, with notes (recorded with who and when; once only)."""
    from duly.operations.balance_check.monitoring import ResolveError, resolve

    with open_system() as system:
        try:
            row = resolve(system.store.engine, error_id, by=by, notes=notes,
                          now=system.clock.now())
        except ResolveError as exc:
            fail(str(exc))
    typer.echo(f"error {row.id} ({row.error_code}) resolved by {row.resolved_by} "
               f"at {_iso(row.resolved_at)}")


@balance_app.command("results")
def balance_results(
    run_id: Annotated[int, typer.Argument(help="Run id of daily_balance_check.")],
    result: Annotated[str | None, typer.Option("--result", help="Only PASS, FAIL or ERROR.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000)] = 1000,
) -> None:
    """A run's summary and its per-customer results (no amounts)."""
    import json

    from rich.console import Console
    from rich.table import Table

    from duly.operations.balance_check.models import JOB_NAME
    from duly.operations.balance_check.monitoring import run_results

    wanted = result.upper() if result else None
    if wanted is not None and wanted not in ("PASS", "FAIL", "ERROR"):
        fail(f"--result {result!r}: expected PASS, FAIL or ERROR")
    with open_system() as system:
        run = system.store.run_get(run_id)
        if run is None or run.job_name != JOB_NAME:
            fail(f"no {JOB_NAME} run {run_id}")
        rows = run_results(system.store.engine, run_id, result=wanted, limit=limit)
    typer.echo(f"run {run.id} {run.status.value} (attempt {run.attempt}/{run.max_attempts})")
    if isinstance(run.result, dict):
        typer.echo(json.dumps(run.result, indent=2, sort_keys=True))
    table = Table("customer", "date", "result", "code", "attempts", "checked")
    for r in rows:
        table.add_row(str(r.customer_id), r.business_date.isoformat(), r.result,
                      r.error_code or "", str(r.attempts), _iso(r.checked_at))
    Console(width=160).print(table)
    typer.echo(f"{len(rows)} result(s)")


@balance_app.command("missed")
def balance_missed() -> None:
    """Nights in the lookback whose check never completed, with the backfill command."""
    from duly.operations.balance_check.models import JOB_NAME
    from duly.operations.balance_check.service import missed_nights

    with open_system() as system:
        nights = missed_nights(system.store, system.settings.jobs.daily_balance_check,
                               system.clock.now())
    if not nights:
        typer.echo("no missed nights")
        return
    for night in nights:
        typer.echo(f"{night.isoformat()}  duly trigger {JOB_NAME} --arg business_date={night.isoformat()}")
    raise typer.Exit(1)
