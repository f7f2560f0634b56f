"""The dashboard's ASGI application: :func:`create_dashboard`, mounted at ``/ui`` by ``duly serve``.

Pages are rendered on the server from Jinja2 templates (``templates/``) with plain HTML
forms; ``static/`` holds the stylesheet and the small script that refreshes live regions
and the schedule preview. Every page reads through the same service functions as the API
and the CLI (the engine client, the operations services, the monitoring reads, the audit
log), and every action goes through them too, so it is checked and recorded the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from importlib.resources import files
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from duly.audit import AuditLog
from duly.auth.service import TokenService
from duly.auth.sessions import SessionSigner, load_session_secret
from duly.clock import Clock
from duly.config import Settings
from duly.engine.client import EngineClient
from duly.engine.registry import JobRegistry
from duly.engine.store.sql import SqlStore
from duly.web import filters, pages
from duly.web.gate import SessionGate, error_handlers
from duly.web.session import WebSessions

__all__ = ["DEFAULT_SESSION_LIFETIME", "Dashboard", "create_dashboard"]

#: How long a sign-in lasts (the cookie's expiry and the session's, checked on the server).
DEFAULT_SESSION_LIFETIME = timedelta(hours=8)


@dataclass
class Dashboard:
    """The running system's parts the pages call, and the templates."""

    settings: Settings
    store: SqlStore
    client: EngineClient
    sessions: WebSessions
    audit: AuditLog
    templates: Environment

    @property
    def clock(self) -> Clock:
        """The injected clock."""
        return self.client.clock


def _templates(clock: Clock) -> Environment:
    env = Environment(
        loader=PackageLoader("duly.web", "templates"),
        autoescape=select_autoescape(["html", "svg"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    filters.install(env)
    env.globals["clock"] = clock  # the footer's "rendered at", from the injected clock
    return env


def create_dashboard(
    settings: Settings,
    store: SqlStore,
    registry: JobRegistry,
    clock: Clock,
    *,
    session_lifetime: timedelta = DEFAULT_SESSION_LIFETIME,
    secret: bytes | None = None,
) -> Starlette:
    """The dashboard over ``store``, to mount at ``/ui``.

    ``secret`` signs sessions and CSRF tokens; by default the installation's own, kept in
    the database (:func:`~duly.auth.sessions.load_session_secret`).
    """
    signer = SessionSigner(secret or load_session_secret(store.engine, clock))
    sessions = WebSessions(TokenService(store.engine, clock), signer, session_lifetime)
    dash = Dashboard(
        settings=settings,
        store=store,
        client=EngineClient(store, registry, clock),
        sessions=sessions,
        audit=AuditLog(store.engine, clock, settings.audit),
        templates=_templates(clock),
    )
    static = StaticFiles(directory=str(files("duly.web") / "static"))
    routes: list[Any] = [*pages.routes(), Mount("/static", app=static, name="static")]
    app = Starlette(routes=routes, exception_handlers=error_handlers())
    app.state.dashboard = dash
    app.add_middleware(SessionGate, sessions=sessions, clock=clock)
    return app
