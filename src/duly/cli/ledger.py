"""``duly ledger check``: the built-in ledger's invariants."""

from __future__ import annotations

import typer

from duly.cli.common import open_system

ledger_app = typer.Typer(help="The built-in ledger.", no_args_is_help=True)


@ledger_app.command("check")
def ledger_check() -> None:
    """Check the ledger's invariants; exit 1 if one fails."""
    from duly.banking.ledger import LedgerBank

    with open_system() as system:
        check = LedgerBank(system.store.engine, system.clock).check()
    typer.echo(f"accounts {check.accounts}, transfers {check.transfers}")
    typer.echo(
        f"Σ debits posted {check.debits_posted} = Σ credits posted {check.credits_posted}: "
        f"{'ok' if check.debits_posted == check.credits_posted else 'FAIL'}"
    )
    typer.echo(
        f"Σ debits pending {check.debits_pending} = Σ credits pending {check.credits_pending}: "
        f"{'ok' if check.debits_pending == check.credits_pending else 'FAIL'}"
    )
    for problem in check.problems:
        typer.echo(f"FAIL {problem}")
    typer.echo("ledger ok" if check.ok else f"ledger has {len(check.problems)} problem(s)")
    raise typer.Exit(0 if check.ok else 1)
