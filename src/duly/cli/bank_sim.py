"""``duly bank-sim``: the core-banking simulator over HTTP, for trying duly out and for tests."""

from __future__ import annotations

from typing import Annotated

import typer

from duly.cli.common import fail


def bank_sim(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="0 picks a free port.")
    ] = 8099,
    latency_ms: Annotated[
        float, typer.Option("--latency-ms", min=0, help="Delay of every answer.")
    ] = 0.0,
    fault_rate: Annotated[
        float,
        typer.Option("--fault-rate", min=0.0, max=1.0, help="Share of requests that get a fault."),
    ] = 0.0,
    faults: Annotated[
        str,
        typer.Option(
            "--faults", help="Comma-separated: timeout,5xx,malformed,missing,null,negative."
        ),
    ] = "timeout,5xx,malformed,missing,null,negative",
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the fault generator.")] = None,
    hang_seconds: Annotated[
        float, typer.Option("--hang-seconds", min=0, help="How long a timeout hangs.")
    ] = 60.0,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="DULY_BANK_SIM_TOKEN", help="Require this bearer token."),
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
        sim = BankSimulator(
            host,
            port,
            latency_ms=latency_ms,
            fault_rate=fault_rate,
            faults=chosen,
            seed=seed,
            hang_seconds=hang_seconds,
            token=token,
        )
        for spec in accounts or []:
            parts = spec.split(":")
            if len(parts) not in (3, 4):
                raise ValueError(f"--account {spec!r}: expected ID:CURRENCY:BALANCE[:OVERDRAFT]")
            limit = to_minor(parts[3], parts[1]) if len(parts) == 4 else 0
            sim.add_account(
                parts[0], parts[1], to_minor(parts[2], parts[1]), overdraft_limit_minor=limit
            )
    except (ValueError, MoneyError, OSError) as exc:
        fail(str(exc))
    typer.echo(
        f"bank-sim listening on {sim.url} (latency {latency_ms:g} ms, fault rate {fault_rate:g}"
        f" of {', '.join(chosen) or 'none'}). Ctrl-C to stop.",
        err=True,
    )
    try:
        sim.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
