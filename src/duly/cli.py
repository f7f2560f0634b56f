"""The ``duly`` command line (Typer).

Each command parses its input, calls the library, and prints. Errors in the user's input
print one clear line on stderr and exit with status 2; nothing is changed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from duly.commands.balance import balance_app, errors_app
from duly.commands.banking import accounts_app, customers_app
from duly.commands.common import fail, load_settings, open_system, state
from duly.commands.notify import deliveries_app, notify_app, reminders_app
from duly.commands.simulate import simulate
from duly.version import __version__

if TYPE_CHECKING:
    from duly.runtime import System

app = typer.Typer(
    name="duly",
    help="duly runs a bank's scheduled operations on time, exactly once, with an audit trail.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
schedule_app = typer.Typer(help="Schedules: preview specs, list, pause, resume.",
                           no_args_is_help=True)
db_app = typer.Typer(help="The database.", no_args_is_help=True)
jobs_app = typer.Typer(help="Registered jobs.", no_args_is_help=True)
runs_app = typer.Typer(help="Runs: list, show, retry, cancel.", no_args_is_help=True)
alerts_app = typer.Typer(help="Operations alerts: list, ack, resolve.", no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")
app.add_typer(db_app, name="db")
app.add_typer(jobs_app, name="jobs")
app.add_typer(runs_app, name="runs")
app.add_typer(alerts_app, name="alerts")
app.add_typer(errors_app, name="errors")
app.add_typer(balance_app, name="balance-check")
app.add_typer(notify_app, name="notify")
app.add_typer(deliveries_app, name="deliveries")
app.add_typer(reminders_app, name="reminders")
app.add_typer(customers_app, name="customers")
app.add_typer(accounts_app, name="accounts")

def _version(value: bool) -> None:
    if value:
        typer.echo(f"duly {__version__}")
        raise typer.Exit()


@app.callback()
def root(
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


@schedule_app.command("preview")
def schedule_preview(
    spec: Annotated[str, typer.Argument(help="A schedule spec, e.g. 'daily:02:30' or 'cron:*/15 * * * *'.")],
    tz: Annotated[str, typer.Option("--tz", help="IANA timezone the spec is read in.")] = "UTC",
    after: Annotated[
        str | None, typer.Option("--after", help="ISO instant to start after (default: now).")
    ] = None,
    count: Annotated[int, typer.Option("--count", min=1, max=100_000, help="How many fire times.")] = 10,
    calendar: Annotated[
        str | None, typer.Option("--calendar", help="Holiday calendar, CC or CC-SUBDIV (e.g. GB-ENG).")
    ] = None,
    adjust: Annotated[
        str,
        typer.Option("--adjust", help="Business-day convention: none, following, modified_following, "
                     "preceding, modified_preceding."),
    ] = "none",
) -> None:
    """Print the next COUNT fire times of SPEC, one ISO-8601 instant per line in the schedule's offset."""
    from zoneinfo import ZoneInfo

    from duly.clock import SystemClock
    from duly.timing import SpecError, parse_trigger

    try:
        trigger = parse_trigger(spec, tz, calendar=calendar, adjust=adjust)
        start = _parse_after(after, tz) if after else SystemClock().now()
    except SpecError as exc:
        fail(str(exc))
    zone = ZoneInfo(tz)
    lines = []
    for fire in trigger.fires(start):
        lines.append(fire.astimezone(zone).isoformat())
        if len(lines) >= count:
            break
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
        table.add_row(r.name, r.job_name, r.spec, r.timezone, "paused" if r.paused else "active",
                      _iso(r.next_fire_at), r.source)
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
    typer.echo(f"resumed {row.name}; next fire {_iso(row.next_fire_at)}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema to this version of duly."""
    from duly.db import current_revision, head_revision, upgrade
    from duly.engine.store.sql import create_db_engine

    settings = load_settings()
    engine = create_db_engine(settings.database_url)
    try:
        before = current_revision(engine)
        after = upgrade(engine)
    finally:
        engine.dispose()
    if before == after:
        typer.echo(f"database already at {head_revision()}")
    else:
        typer.echo(f"database upgraded from {before or 'empty'} to {after}")


@jobs_app.command("list")
def jobs_list() -> None:
    """List the jobs this installation can run."""
    from rich.console import Console
    from rich.table import Table

    from duly.runtime import job_registry

    table = Table("job", "queue", "timeout", "attempts", "max concurrency", "description")
    for job in job_registry():
        table.add_row(job.name, job.queue, str(job.timeout), str(job.retry.max_attempts),
                      str(job.max_concurrency or "-"), job.description)
    Console().print(table)


def _parse_args(pairs: list[str]) -> dict[str, Any]:
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


@app.command("trigger")
def trigger(
    job: Annotated[str, typer.Argument(help="Job name (see `duly jobs list`).")],
    arg: Annotated[list[str] | None, typer.Option("--arg", help="Argument key=value (repeatable).")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", help="The same key always gives the same run.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the run finishes.")] = False,
    wait_timeout: Annotated[float, typer.Option("--wait-timeout", help="Seconds to wait.")] = 3600,
) -> None:
    """Run JOB now (a manual run). Prints the run id; with --wait, its outcome."""
    from duly.engine.errors import UnknownJob
    from duly.engine.states import FINAL, RunStatus

    args = _parse_args(arg or [])
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
    typer.echo(f"run {current.id} {current.status.value}"
               + (f": {current.error_code} {current.error_message}" if current.error_code else ""))
    if current.result is not None:
        typer.echo(json.dumps(current.result, indent=2, default=str))
    raise typer.Exit(0 if current.status is RunStatus.SUCCEEDED else 1)


@runs_app.command("list")
def runs_list(
    job: Annotated[str | None, typer.Option("--job", help="Only this job.")] = None,
    status: Annotated[str | None, typer.Option("--status", help="Only this status.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Scheduled at or after (ISO).")] = None,
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
    since_at = _parse_instant(since, "--since") if since else None
    with open_system() as system:
        rows = system.store.run_list(RunFilter(job_name=job, status=st, since=since_at, limit=limit))
    table = Table("id", "job", "scheduled for", "status", "attempt", "origin", "error")
    for r in rows:
        table.add_row(str(r.id), r.job_name, _iso(r.scheduled_for), r.status.value,
                      f"{r.attempt}/{r.max_attempts}", r.origin, r.error_code or "")
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
        f"  scheduled for  {_iso(run.scheduled_for)}",
        f"  origin         {run.origin}   idempotency key {run.idempotency_key}",
        f"  attempts       {run.attempt}/{run.max_attempts}",
        f"  started        {_iso(run.started_at)}",
        f"  finished       {_iso(run.finished_at)}",
    ]
    if run.progress_done is not None:
        total = f"/{run.progress_total}" if run.progress_total is not None else ""
        lines.append(f"  progress       {run.progress_done}{total}")
    if run.lease_owner:
        lines.append(f"  lease          {run.lease_owner} until {_iso(run.lease_expires_at)}")
    if run.error_code:
        lines.append(f"  error          {run.error_code}: {run.error_message}")
    if run.args:
        lines.append(f"  args           {json.dumps(run.args, default=str)}")
    lines.append("  attempts:")
    lines.extend(_attempt_line(a) for a in attempts)
    if run.result is not None:
        lines.append("  summary:")
        lines.extend("    " + ln for ln in json.dumps(run.result, indent=2, default=str).splitlines())
    typer.echo("\n".join(lines))


@runs_app.command("retry")
def runs_retry(run_id: Annotated[int, typer.Argument(help="Run id.")]) -> None:
    """Queue a failed, cancelled or missed run again."""
    from duly.engine.errors import NotFound, RunConflict

    with open_system() as system:
        try:
            run = system.store.run_retry(run_id, system.clock.now())
        except (NotFound, RunConflict) as exc:
            fail(str(exc))
    typer.echo(f"run {run.id} queued again")


@runs_app.command("cancel")
def runs_cancel(run_id: Annotated[int, typer.Argument(help="Run id.")]) -> None:
    """Cancel a queued or retrying run; ask a running one to stop."""
    from duly.engine.errors import NotFound, RunConflict

    with open_system() as system:
        try:
            run = system.store.run_cancel(run_id, system.clock.now())
        except (NotFound, RunConflict) as exc:
            fail(str(exc))
    typer.echo(f"run {run.id} " + ("cancel requested (running)" if run.cancel_requested
                                   else run.status.value))


@alerts_app.command("list")
def alerts_list(
    status: Annotated[str | None, typer.Option("--status", help="open, acked or resolved.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 50,
) -> None:
    """List alerts, newest first."""
    from rich.console import Console
    from rich.table import Table

    with open_system() as system:
        rows = system.store.alert_list(status, limit)
    table = Table("id", "severity", "status", "rule", "title", "count", "last raised")
    for a in rows:
        table.add_row(str(a.id), a.severity, a.status, a.rule, a.title, str(a.occurrences),
                      _iso(a.last_raised_at))
    Console().print(table)


def _set_alert(alert_id: int, status: str, actor: str) -> None:
    from duly.engine.errors import NotFound, RunConflict

    with open_system() as system:
        try:
            row = system.store.alert_set_status(alert_id, status, actor, system.clock.now())
        except (NotFound, RunConflict) as exc:
            fail(str(exc))
    typer.echo(f"alert {row.id} {row.status}")


@alerts_app.command("ack")
def alerts_ack(alert_id: int, by: Annotated[str, typer.Option("--by", help="Who.")] = "cli") -> None:
    """Acknowledge an alert."""
    _set_alert(alert_id, "acked", by)


@alerts_app.command("resolve")
def alerts_resolve(alert_id: int, by: Annotated[str, typer.Option("--by", help="Who.")] = "cli") -> None:
    """Resolve an alert."""
    _set_alert(alert_id, "resolved", by)


ImportOption = Annotated[
    list[str] | None,
    typer.Option("--import", "-i", metavar="MODULE",
                 help="Import this module first, so its @duly.job functions can run (repeatable)."),
]


def _import_job_modules(modules: list[str]) -> None:
    import importlib

    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # any failure of user code at import is the user's error
            fail(f"cannot import job module {module!r}: {type(exc).__name__}: {exc}")


def _serve(roles: tuple[str, ...], demo: bool, modules: list[str] | None = None) -> None:
    from duly.runtime import run_node

    _import_job_modules(modules or [])
    with open_system(auto_upgrade=True) as system:
        names = system.sync_schedules()
        if demo:
            names += _demo_schedules(system)  # the sweep again (every minute): named once
        typer.echo(f"duly {__version__}: node {system.options.node_name} on "
                   f"{system.store.dialect}; roles {', '.join(roles)}; schedules: "
                   f"{', '.join(dict.fromkeys(names))}. Ctrl-C to stop.", err=True)
        asyncio.run(run_node(system, roles))


def _demo_schedules(system: System) -> list[str]:
    from duly.engine.store.base import NewSchedule
    from duly.operations.demo import seed_demo_bank

    seeded = seed_demo_bank(system.client)  # idempotent: a second start adds nothing
    typer.echo(f"demo bank: {seeded.customers} customer(s), {seeded.accounts} account(s), "
               f"{seeded.transfers} scheduled transfer(s), {seeded.recurring} recurring "
               "payment(s) added (`duly customers list`, `duly transfers list`)", err=True)

    demo = [
        NewSchedule(name="demo.heartbeat", job_name="duly.noop", spec="every:1m", source="demo"),
        NewSchedule(name="demo.sleep", job_name="duly.sleep", spec="every:5m", args={"seconds": 3},
                    source="demo"),
    ]
    for new in demo:
        system.client.upsert_schedule(new)
    return [d.name for d in demo] + seeded.schedules


app.command("simulate")(simulate)


@app.command("serve")
def serve(
    demo: Annotated[bool, typer.Option("--demo", help="Add demo schedules to try duly out.")] = False,
    modules: ImportOption = None,
) -> None:
    """Run one node: scheduler and worker (HTTP API and dashboard come later)."""
    _serve(("scheduler", "worker"), demo, modules)


@app.command("worker")
def worker(
    no_scheduler: Annotated[bool, typer.Option("--no-scheduler", help="Only run jobs.")] = False,
    modules: ImportOption = None,
) -> None:
    """Run a node without HTTP: scheduler and worker (or only the worker)."""
    _serve(("worker",) if no_scheduler else ("scheduler", "worker"), False, modules)


# -- money movement (issue 4) ---------------------------------------------------------

ledger_app = typer.Typer(help="The built-in ledger.", no_args_is_help=True)
transfers_app = typer.Typer(help="Scheduled transfers: schedule, list, cancel, return.", no_args_is_help=True)
recurring_app = typer.Typer(
    help="Recurring payments: list, preview, pause, resume, cancel.", no_args_is_help=True
)
app.add_typer(ledger_app, name="ledger")
app.add_typer(transfers_app, name="transfers")
app.add_typer(recurring_app, name="recurring")


@app.command("bank-sim")
def bank_sim(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="0 picks a free port.")] = 8099,
    latency_ms: Annotated[float, typer.Option("--latency-ms", min=0, help="Delay of every answer.")] = 0.0,
    fault_rate: Annotated[
        float, typer.Option("--fault-rate", min=0.0, max=1.0, help="Share of requests that get a fault.")
    ] = 0.0,
    faults: Annotated[
        str, typer.Option("--faults", help="Comma-separated: timeout,5xx,malformed,missing,null,negative.")
    ] = "timeout,5xx,malformed,missing,null,negative",
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the fault generator.")] = None,
    hang_seconds: Annotated[float, typer.Option("--hang-seconds", min=0, help="How long a timeout hangs.")] = 60.0,
    token: Annotated[
        str | None, typer.Option("--token", envvar="DULY_BANK_SIM_TOKEN", help="Require this bearer token.")
    ] = None,
    accounts: Annotated[
        list[str] | None,
        typer.Option("--account", help="An account ID:CURRENCY:BALANCE[:OVERDRAFT] (repeatable)."),
    ] = None,
) -> None:
    """Serve a simulated core bank (the http adapter's protocol) until Ctrl-C."""
    from duly.banking.money import MoneyError, to_minor
    from duly.banking.simulator import BankSimulator

    chosen = [f.strip() for f in faults.split(",") if f.strip()]
    try:
        sim = BankSimulator(host, port, latency_ms=latency_ms, fault_rate=fault_rate, faults=chosen,
                            seed=seed, hang_seconds=hang_seconds, token=token)
        for spec in accounts or []:
            parts = spec.split(":")
            if len(parts) not in (3, 4):
                raise ValueError(f"--account {spec!r}: expected ID:CURRENCY:BALANCE[:OVERDRAFT]")
            limit = to_minor(parts[3], parts[1]) if len(parts) == 4 else 0
            sim.add_account(parts[0], parts[1], to_minor(parts[2], parts[1]), overdraft_limit_minor=limit)
    except (ValueError, MoneyError, OSError) as exc:
        fail(str(exc))
    typer.echo(f"bank-sim listening on {sim.url} (latency {latency_ms:g} ms, fault rate {fault_rate:g}"
               f" of {', '.join(chosen) or 'none'}). Ctrl-C to stop.", err=True)
    try:
        sim.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()


@ledger_app.command("check")
def ledger_check() -> None:
    """Check the ledger's invariants; exit 1 if one fails."""
    from duly.banking.ledger import LedgerBank

    with open_system() as system:
        check = LedgerBank(system.store.engine, system.clock).check()
    typer.echo(f"accounts {check.accounts}, transfers {check.transfers}")
    typer.echo(f"Σ debits posted {check.debits_posted} = Σ credits posted {check.credits_posted}: "
               f"{'ok' if check.debits_posted == check.credits_posted else 'FAIL'}")
    typer.echo(f"Σ debits pending {check.debits_pending} = Σ credits pending {check.credits_pending}: "
               f"{'ok' if check.debits_pending == check.credits_pending else 'FAIL'}")
    for problem in check.problems:
        typer.echo(f"FAIL {problem}")
    typer.echo("ledger ok" if check.ok else f"ledger has {len(check.problems)} problem(s)")
    raise typer.Exit(0 if check.ok else 1)


@transfers_app.command("schedule")
def transfers_schedule(
    from_account: Annotated[str, typer.Option("--from", help="Account to debit.")],
    to_account: Annotated[str, typer.Option("--to", help="Account to credit.")],
    amount: Annotated[str, typer.Option("--amount", help="Decimal amount, e.g. 125.50.")],
    currency: Annotated[str, typer.Option("--currency", help="ISO 4217 code.")],
    on: Annotated[str, typer.Option("--date", help="Local date YYYY-MM-DD.")],
    at: Annotated[str, typer.Option("--time", help="Local time HH:MM.")] = "09:00",
    tz: Annotated[str | None, typer.Option("--tz", help="Timezone (default: the customer's).")] = None,
    calendar: Annotated[str | None, typer.Option("--calendar", help="Rail (US-FED, GB-BACS, TARGET) or calendar.")] = None,
    adjust: Annotated[str, typer.Option("--adjust", help="Business-day convention.")] = "following",
    memo: Annotated[str | None, typer.Option("--memo")] = None,
    key: Annotated[str | None, typer.Option("--idempotency-key", help="Same key, same transfer.")] = None,
    bank: Annotated[str, typer.Option("--bank", help="ledger, or http (DULY_BANK_HTTP_URL).")] = "ledger",
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
            row, created = ScheduledTransfers(system.client).create(NewTransfer(
                request_key=key or f"cli-{uuid.uuid4()}", from_account=from_account,
                to_account=to_account, amount=amount, currency=currency, local_date=local_date,
                local_time=at, timezone=tz, convention=adjust, calendar=calendar, memo=memo, bank=bank,
            ))
        except OperationError as exc:
            fail(str(exc))
    typer.echo(f"transfer {row.id} {'scheduled' if created else 'already exists'}: "
               f"{_money(row.amount_minor, row.currency)} {_mask(row.from_account)} → "
               f"{_mask(row.to_account)} at {_iso(row.execute_at)} ({row.status})")


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
        table.add_row(str(r.id), _mask(r.from_account), _mask(r.to_account),
                      _money(r.amount_minor, r.currency), _iso(r.execute_at), r.status,
                      str(r.attempts), r.error_code or "")
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
    returned_at: Annotated[str | None, typer.Option("--at", help="When it was returned (ISO, default now).")] = None,
    new_authorization: Annotated[bool, typer.Option("--new-authorization", help="R08: the customer authorised it again.")] = False,
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
        table.add_row(str(r.id), _mask(r.from_account), _mask(r.to_account),
                      _money(r.amount_minor, r.currency), r.rrule or f"{r.frequency}/{r.interval}",
                      _iso(r.next_execute_at), r.status)
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
        typer.echo(f"{o.unadjusted_date.isoformat()} {o.execution_date.isoformat()} {_iso(o.execute_at)}")


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


def _money(minor: int, currency: str) -> str:
    from duly.banking.money import format_money

    return format_money(minor, currency)


def _mask(account_id: str) -> str:
    from duly.banking.money import mask_account

    return mask_account(account_id)


def _attempt_line(a: Any) -> str:
    ms = a.execution_time_ms if a.execution_time_ms is not None else "-"
    error = f" {a.error_code}: {a.error_message}" if a.error_code else ""
    return f"    #{a.attempt} {a.status:<11} node={a.node} started={_iso(a.started_at)} ms={ms}{error}"


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else "-"


def _parse_instant(text: str, flag: str) -> datetime:
    from datetime import UTC

    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{flag} {text!r} is not an ISO-8601 date-time")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _parse_after(text: str, tz: str) -> datetime:
    """Read ``--after``: an aware ISO instant, or a naive one read in the schedule's zone."""
    from zoneinfo import ZoneInfo

    from duly.timing import SpecError

    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise SpecError(f"--after {text!r} is not an ISO-8601 date-time") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(tz))
    return value


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
