"""``duly serve`` and ``duly worker``: run a node in this process until stopped."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer

from duly.cli.common import fail, open_system
from duly.version import __version__

if TYPE_CHECKING:
    from duly.runtime import System


ImportOption = Annotated[
    list[str] | None,
    typer.Option(
        "--import",
        "-i",
        metavar="MODULE",
        help="Import this module first, so its @duly.job functions can run (repeatable).",
    ),
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
        typer.echo(
            f"duly {__version__}: node {system.options.node_name} on "
            f"{system.store.dialect}; roles {', '.join(roles)}; schedules: "
            f"{', '.join(dict.fromkeys(names))}. Ctrl-C to stop.",
            err=True,
        )
        asyncio.run(run_node(system, roles))


def _demo_schedules(system: System) -> list[str]:
    from duly.engine.store.base import NewSchedule
    from duly.operations.demo import seed_demo_bank

    seeded = seed_demo_bank(system.client)  # idempotent: a second start adds nothing
    typer.echo(
        f"demo bank: {seeded.customers} customer(s), {seeded.accounts} account(s), "
        f"{seeded.transfers} scheduled transfer(s), {seeded.recurring} recurring "
        "payment(s) added (`duly customers list`, `duly transfers list`)",
        err=True,
    )

    demo = [
        NewSchedule(name="demo.heartbeat", job_name="duly.noop", spec="every:1m", source="demo"),
        NewSchedule(
            name="demo.sleep",
            job_name="duly.sleep",
            spec="every:5m",
            args={"seconds": 3},
            source="demo",
        ),
    ]
    for new in demo:
        system.client.upsert_schedule(new)
    return [d.name for d in demo] + seeded.schedules


def serve(
    demo: Annotated[
        bool, typer.Option("--demo", help="Add demo schedules to try duly out.")
    ] = False,
    modules: ImportOption = None,
) -> None:
    """Run one node: scheduler and worker (HTTP API and dashboard come later)."""
    _serve(("scheduler", "worker"), demo, modules)


def worker(
    no_scheduler: Annotated[bool, typer.Option("--no-scheduler", help="Only run jobs.")] = False,
    modules: ImportOption = None,
) -> None:
    """Run a node without HTTP: scheduler and worker (or only the worker)."""
    _serve(("worker",) if no_scheduler else ("scheduler", "worker"), False, modules)
