"""``duly audit …``: verify, export, list, checkpoint and prune the audit trail; make its key.

Every command goes through :class:`duly.audit.AuditLog` (as the API and the node's sealer
do). ``duly audit verify --file EXPORT --public-key KEY`` needs no database and no
configuration: it is how an export is checked on another machine. ``verify`` exits 0 when
the chain verifies and 1 when it does not (2, as every command, for a usage error).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

import typer

from duly.cli.common import fail, load_settings, open_system
from duly.cli.formatting import iso, parse_instant

if TYPE_CHECKING:
    from duly.audit import AuditLog, VerifyReport

audit_app = typer.Typer(
    help="The audit trail: verify, export, list, checkpoint, prune; keygen.",
    no_args_is_help=True,
)


@contextmanager
def _audit_log() -> Iterator[AuditLog]:
    with open_system() as system:
        yield system.audit


@audit_app.command("keygen")
def audit_keygen(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="The private key file (default: audit.signing_key_file)."),
    ] = None,
) -> None:
    """Write a new Ed25519 key pair for signing checkpoints (never overwriting one)."""
    from duly.audit.signing import AuditKeyError, generate_key_pair

    path = out if out is not None else load_settings().audit.signing_key_file
    try:
        key = generate_key_pair(path)
    except (AuditKeyError, OSError) as exc:
        fail(str(exc))
    typer.echo(f"private key: {path} (readable by its owner only; give it to every node)")
    typer.echo(f"public key:  {path.with_suffix('.pub')} (give it to whoever verifies)")
    typer.echo(f"key id:      {key.key_id}")


def _report_text(report: VerifyReport) -> list[str]:
    if report.problem is not None:
        lines = [f"FAILED at event {report.problem.seq}: {report.problem.reason}"]
        if report.events:
            lines.append(
                f"  (events {report.first_seq}..{report.last_seq} verified before it, "
                f"{report.checkpoints} checkpoints)"
            )
    elif report.events == 0:
        lines = ["verified 0 events: the chain is empty"]
    else:
        last = report.last_checkpoint if report.last_checkpoint is not None else "none"
        lines = [
            f"verified {report.events} events {report.first_seq}..{report.last_seq}, "
            f"{report.checkpoints} checkpoints, last checkpoint {last}"
        ]
    lines.append(
        f"unsealed: {report.unsealed}; unsigned tail: {report.unsigned_tail} events "
        "after the last checkpoint"
    )
    if not report.signatures_checked:
        lines.append("warning: signatures not checked (no key)")
    lines += [f"note: {note}" for note in report.notes]
    return lines


def _verify_file(path: Path, public_key: Path) -> VerifyReport:
    from duly.audit.export import verify_file
    from duly.audit.signing import AuditKeyError, load_verify_key

    try:
        key = load_verify_key(public_key)
    except AuditKeyError as exc:
        fail(str(exc))
    try:
        source: IO[str] = sys.stdin if str(path) == "-" else path.open(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}")
    with source:
        return verify_file(source, key)


@audit_app.command("verify")
def audit_verify(
    from_seq: Annotated[
        int | None, typer.Option("--from", min=1, help="Start at this sequence number.")
    ] = None,
    public_key: Annotated[
        Path | None,
        typer.Option("--public-key", help="Check signatures with this public key (PEM)."),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", help="Verify this export file instead of the database ('-': stdin)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Recompute the chain and check every checkpoint's signature; exit 1 if anything is wrong."""
    from duly.audit import AuditKeyError

    if file is not None:
        if public_key is None:
            fail("--file needs --public-key: an export is checked against the key alone")
        if from_seq is not None:
            fail("--from applies to the database; an export is verified whole")
        report = _verify_file(file, public_key)
    else:
        with _audit_log() as audit:
            try:
                key = audit.verify_key(public_key)
            except AuditKeyError as exc:
                fail(str(exc))
            report = audit.verify(from_seq, key)
    if as_json:
        typer.echo(json.dumps(report.as_json(), indent=2))
    else:
        for line in _report_text(report):
            typer.echo(line)
    raise typer.Exit(0 if report.ok else 1)


@audit_app.command("export")
def audit_export(
    output: Annotated[
        str, typer.Option("--output", "-o", help="A new file to write ('-': stdout).")
    ],
    from_seq: Annotated[
        int | None, typer.Option("--from", min=1, help="First sequence number.")
    ] = None,
    to_seq: Annotated[int | None, typer.Option("--to", min=1, help="Last sequence number.")] = None,
) -> None:
    """Write events and their checkpoints as JSON lines, verifiable without the database."""
    if from_seq is not None and to_seq is not None and to_seq < from_seq:
        fail("--to must not be before --from")

    def progress(count: int) -> None:
        typer.echo(f"exported {count:,} events…", err=True)

    with _audit_log() as audit:
        if output == "-":
            count = audit.export(sys.stdout, from_seq, to_seq, progress=progress)
        else:
            try:
                out = Path(output).open("x", encoding="utf-8")  # noqa: SIM115 - closed below
            except OSError as exc:
                fail(f"cannot write {output}: {exc.strerror or exc}")
            with out:
                count = audit.export(out, from_seq, to_seq, progress=progress)
    where = "stdout" if output == "-" else output
    typer.echo(f"exported {count:,} events to {where}", err=True)


@audit_app.command("list")
def audit_list(
    actor: Annotated[
        str | None, typer.Option("--actor", help="e.g. token:7f3k2m9q, cli:ana.")
    ] = None,
    action: Annotated[str | None, typer.Option("--action", help="e.g. transfer.create.")] = None,
    object_type: Annotated[str | None, typer.Option("--object-type", help="e.g. schedule.")] = None,
    object_id: Annotated[str | None, typer.Option("--object-id")] = None,
    since: Annotated[str | None, typer.Option("--since", help="At or after (ISO).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Before (ISO).")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List events, newest first."""
    from duly.audit import AuditFilter

    flt = AuditFilter(
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=object_id,
        since=parse_instant(since, "--since") if since else None,
        until=parse_instant(until, "--until") if until else None,
        limit=limit,
    )
    with _audit_log() as audit:
        events = audit.list(flt)
    if as_json:
        for event in events:
            typer.echo(json.dumps({"id": event.id, **event.record.as_json()}, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("seq", "at", "actor", "action", "object", "request", "details")
    for event in events:
        r = event.record
        obj = r.object_type if r.object_id is None else f"{r.object_type}/{r.object_id}"
        table.add_row(
            "-" if r.seq is None else str(r.seq), iso(event.at), r.actor, r.action, obj,
            r.request_id or "-", r.details,
        )  # fmt: skip
    Console(width=200).print(table)


@audit_app.command("checkpoint")
def audit_checkpoint() -> None:
    """Seal what can be sealed and sign a checkpoint of the head now."""
    from duly.audit import AuditKeyError

    with _audit_log() as audit:
        sealed = audit.seal()
        try:
            checkpoint = audit.checkpoint(force=True)
        except AuditKeyError as exc:
            fail(str(exc))
        status = audit.status()
    typer.echo(f"sealed {sealed} events; {status.unsealed} still unsealed")
    if checkpoint is None:
        signed = status.last_checkpoint.seq if status.last_checkpoint else None
        typer.echo(f"no new checkpoint: the head ({status.head.seq}) is signed already"
                   if signed == status.head.seq and signed is not None
                   else "no new checkpoint: the chain is empty")  # fmt: skip
        return
    typer.echo(f"checkpoint at {checkpoint.seq} signed by key {checkpoint.key_id}")


@audit_app.command("prune")
def audit_prune(
    retention_days: Annotated[
        int | None,
        typer.Option(
            "--retention-days", min=1, help="Keep this many days (default: audit.retention_days)."
        ),
    ] = None,
) -> None:
    """Delete whole checkpointed ranges older than the retention (the pruning is recorded)."""
    from duly.audit import acting_as, cli_actor

    with _audit_log() as audit, acting_as(cli_actor()):
        removed, through = audit.prune(retention_days)
        days = retention_days if retention_days is not None else audit.settings.retention_days
    if through is None:
        typer.echo(f"nothing to prune: no checkpoint older than {days} days")
        return
    typer.echo(f"pruned {removed} events through {through} (older than {days} days)")
