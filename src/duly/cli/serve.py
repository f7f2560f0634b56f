"""``duly serve`` and ``duly worker``: run a node in this process until stopped."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer

from duly.cli.common import fail, open_system
from duly.version import __version__

if TYPE_CHECKING:
    from duly.banking.simulator import BankSimulator
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


def _serve(
    roles: tuple[str, ...],
    demo: bool,
    modules: list[str] | None = None,
    listen: tuple[str, int] | None = None,
) -> None:
    """Run a node; with ``listen`` (host, port), the HTTP API beside it in the same process."""
    from duly.runtime import run_node

    _import_job_modules(modules or [])
    sim = _demo_bank_simulator() if demo else None
    with open_system(auto_upgrade=True) as system:
        sock = _bind(*listen) if listen else None
        names = system.sync_schedules()
        if demo:
            names += _demo_schedules(system)  # the sweep again (every minute): named once
            _demo_night(system, sim)
        where = (f"; API on {_url(sock)} (OpenAPI at {_url(sock)}/docs), dashboard on "
                 f"{_url(sock)}/ui/" if sock else "")  # fmt: skip
        typer.echo(
            f"duly {__version__}: node {system.options.node_name} on "
            f"{system.store.dialect}; roles {', '.join(roles)}{where}; schedules: "
            f"{', '.join(dict.fromkeys(names))}. Ctrl-C to stop.",
            err=True,
        )
        if demo and sock is not None:
            _print_demo_welcome(system, sock)
        try:
            if sock is None:
                asyncio.run(run_node(system, roles))
            else:
                asyncio.run(_run_with_api(system, roles, sock))
        finally:
            if sim is not None:
                sim.stop()


def _bind(host: str, port: int) -> socket.socket:
    """Listen on ``host:port`` before anything starts, so a taken port is a clear error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on accepted sockets whose
    # proto says TCP, and with Nagle on every answer after the first on a kept-alive
    # connection waited ~40 ms for the client's delayed ACK before its body went out.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


async def _run_with_api(system: System, roles: tuple[str, ...], sock: socket.socket) -> None:
    """The node and uvicorn on one event loop; SIGTERM/SIGINT stop both, the API first."""
    import anyio.to_thread
    import uvicorn

    from duly.engine.node import Node
    from duly.runtime import run_node

    # The API's sync routes and database calls run on anyio's threads (40 by default): on a
    # small machine that many only contend for the interpreter and the connection pool.
    anyio.to_thread.current_default_thread_limiter().total_tokens = system.settings.api.threads
    nodes: list[Node] = []
    app = http_app(system, health_probe=lambda: nodes[0].loops_alive() if nodes else {})
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                            log_level="warning", server_header=False, http=_http_protocol())  # fmt: skip
    server = _api_server(config)
    stop = asyncio.Event()

    async def stop_api_on_signal() -> None:
        await stop.wait()
        server.should_exit = True

    watcher = asyncio.create_task(stop_api_on_signal())
    node = asyncio.create_task(run_node(system, roles, stop, on_node=nodes.append))
    try:
        await server.serve(sockets=[sock])
    finally:
        stop.set()
        await node
        watcher.cancel()
        sock.close()


def http_app(system: System, *, health_probe: Any = None) -> Any:
    """The API with the dashboard mounted at ``/ui``: what ``duly serve`` answers on HTTP."""
    from duly.api.app import create_app
    from duly.web import create_dashboard

    app = create_app(system.settings, system.store, system.registry, system.clock,
                     health_probe=health_probe)  # fmt: skip
    app.mount("/ui", create_dashboard(system.settings, system.store, system.registry,
                                      system.clock))  # fmt: skip
    return app


def _demo_bank_simulator() -> BankSimulator:
    """The demo's core bank: a simulator on loopback, read by the nightly balance check.

    Set before the settings are read, so the check's ``bank`` is ``http`` at this URL
    (unless the environment already names a bank for it).
    """
    from duly.banking.simulator import BankSimulator

    sim = BankSimulator(seed=1).start()
    if "DULY_JOBS__DAILY_BALANCE_CHECK__BANK" not in os.environ:
        os.environ["DULY_JOBS__DAILY_BALANCE_CHECK__BANK"] = "http"
        os.environ["DULY_BANK_HTTP_URL"] = sim.url
    return sim


def _demo_night(system: System, sim: BankSimulator | None) -> None:
    from duly.operations.demo_night import load_simulator, seed_demo_night

    night = seed_demo_night(system.client)
    if sim is not None:
        load_simulator(sim)
    typer.echo(
        f"demo bank: {night.customers} premium customer(s) added for the nightly check; the "
        f"check of {night.business_date} (run {night.run_id}) reads the bank simulator at "
        f"{sim.url if sim else '(none)'}",
        err=True,
    )


def _print_demo_welcome(system: System, sock: socket.socket) -> None:
    """The dashboard's address and a new admin token, on standard output (shown once)."""
    import secrets

    from duly.auth.roles import Role
    from duly.auth.service import TokenService

    created = TokenService(system.store.engine, system.clock).create(
        f"demo-admin-{secrets.token_hex(3)}", Role.ADMIN, created_by="duly serve --demo"
    )
    typer.echo(f"Dashboard: {_url(sock)}/ui/")
    typer.echo(f"Admin token (shown once; sign in with it): {created.text}")


def _http_protocol() -> str:
    """uvicorn's HTTP/1.1 parser: httptools (C, llhttp) when installed, else h11 (pure Python)."""
    import importlib.util

    return "httptools" if importlib.util.find_spec("httptools") is not None else "h11"


def _api_server(config: Any) -> Any:
    """uvicorn's server, leaving SIGTERM/SIGINT to the node (which then stops the API)."""
    import contextlib

    import uvicorn

    class ApiServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return ApiServer(config)


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
    host: Annotated[
        str | None, typer.Option("--host", help="Listen address (default: api.host, 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", min=0, max=65535, help="Listen port (default: api.port, 8000; 0: any)."),
    ] = None,
) -> None:
    """Run one node: the HTTP API (/api/v1, /health, /metrics), the scheduler and the worker."""
    from duly.cli.common import load_settings

    api = load_settings().api
    _serve(("scheduler", "worker"), demo, modules,
           listen=(host or api.host, api.port if port is None else port))  # fmt: skip


def worker(
    no_scheduler: Annotated[bool, typer.Option("--no-scheduler", help="Only run jobs.")] = False,
    modules: ImportOption = None,
) -> None:
    """Run a node without HTTP: scheduler and worker (or only the worker)."""
    _serve(("worker",) if no_scheduler else ("scheduler", "worker"), False, modules)
