"""``duly token …``: create, list and revoke API tokens.

A new token is printed once, alone on stdout (so a script can capture it); the notice that
it will not be shown again goes to stderr.
"""

from __future__ import annotations

from typing import Annotated

import typer

from duly.cli.common import fail, open_system
from duly.cli.formatting import iso

token_app = typer.Typer(help="API tokens: create, list, revoke.", no_args_is_help=True)


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option("--role", help="admin, operator, auditor or channel.")],
    name: Annotated[str, typer.Option("--name", help="Who or what holds it, e.g. ops-bot.")],
    expires_in: Annotated[
        str | None, typer.Option("--expires-in", help="Lifetime: 90d, 12h or 30m (default: none).")
    ] = None,
    by: Annotated[str, typer.Option("--by", help="Who creates it.")] = "cli",
    customer: Annotated[
        list[int] | None,
        typer.Option("--customer", min=1, help="channel only: a customer it acts for (repeatable)."),
    ] = None,
) -> None:
    """Create a token and print it once; a channel token acts for its --customer ids only."""
    from duly.auth.durations import parse_duration
    from duly.auth.roles import parse_role
    from duly.auth.service import TokenService
    from duly.auth.tokens import check_name

    try:
        parsed_role = parse_role(role)
        lifetime = parse_duration(expires_in) if expires_in is not None else None
        check_name(name)
    except ValueError as exc:
        fail(str(exc))
    with open_system() as system:
        try:
            created = TokenService(system.store.engine, system.clock).create(
                name, parsed_role, created_by=by, expires_in=lifetime, customers=customer or ()
            )
        except ValueError as exc:
            fail(str(exc))
    row = created.row
    acts_for = f", for customers {', '.join(map(str, row.customers))}" if row.customers else ""
    typer.echo(
        f"token {row.id} created: {row.name} ({row.role.value}{acts_for}), "
        f"expires {iso(row.expires_at)}",
        err=True,
    )
    typer.echo(created.text)
    typer.echo("warning: this token will not be shown again; store it now.", err=True)


@token_app.command("list")
def token_list() -> None:
    """List tokens (never their secrets), revoked ones included."""
    from rich.console import Console
    from rich.table import Table

    from duly.auth.service import TokenService

    with open_system() as system:
        rows = TokenService(system.store.engine, system.clock).list()
    table = Table("id", "name", "role", "customers", "created", "expires", "last used", "revoked")
    for r in rows:
        revoked = f"{iso(r.revoked_at)} by {r.revoked_by}" if r.revoked_at else "-"
        table.add_row(
            r.id, r.name, r.role.value, ",".join(map(str, r.customers)) or "-",
            iso(r.created_at), iso(r.expires_at),
            iso(r.last_used_at), revoked,
        )  # fmt: skip
    Console(width=200).print(table)


@token_app.command("revoke")
def token_revoke(
    id_or_name: Annotated[str, typer.Argument(help="The token's id, or the name of a live token.")],
    by: Annotated[str, typer.Option("--by", help="Who revokes it.")] = "cli",
) -> None:
    """Revoke a token: it stops working at once."""
    from duly.auth.service import TokenService

    with open_system() as system:
        try:
            row = TokenService(system.store.engine, system.clock).revoke(id_or_name, revoked_by=by)
        except ValueError as exc:
            fail(str(exc))
    typer.echo(f"token {row.id} ({row.name}) revoked")
