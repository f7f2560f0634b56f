"""``duly db …``: the database schema."""

from __future__ import annotations

import typer

from duly.cli.common import load_settings

db_app = typer.Typer(help="The database.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema to this version of duly."""
    from duly.db import current_revision, head_revision, upgrade
    from duly.runtime import db_engine

    settings = load_settings()
    engine = db_engine(settings)
    try:
        before = current_revision(engine)
        after = upgrade(engine)
    finally:
        engine.dispose()
    if before == after:
        typer.echo(f"database already at {head_revision()}")
    else:
        typer.echo(f"database upgraded from {before or 'empty'} to {after}")
