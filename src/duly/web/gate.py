"""What every dashboard request passes: the session check, the actor, forms, refusals.

:class:`SessionGate` (ASGI middleware) resolves the session cookie before routing; a page
without a valid session redirects to sign-in, a ``POST`` without one is 401. It then runs
the request as the token's actor (:func:`duly.audit.in_request`), so whatever a service
records is attributed to the person's token. :func:`action_form` reads a ``POST`` form and
refuses it (403) unless its CSRF token is the session's and the role may change things.
Service refusals become 4xx pages (:func:`error_handlers`); nothing is changed by them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, quote

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from duly.audit import Actor, in_request
from duly.auth.service import TokenError
from duly.banking.money import MoneyError
from duly.clock import Clock
from duly.engine import errors as engine_errors
from duly.operations import errors as op_errors
from duly.timing import SpecError
from duly.web.session import COOKIE, Signed, WebSessions

__all__ = [
    "MAX_FORM_BYTES",
    "SessionGate",
    "WebError",
    "action_form",
    "error_handlers",
    "viewer_of",
]

#: The largest form a page sends (a note, a schedule): more is refused before it is read.
MAX_FORM_BYTES = 16 * 1024

#: Paths (inside /ui) reachable without a session.
_OPEN = ("/signin", "/static/")

#: Headers on every answer: no framing, no referrer, scripts and styles from here only.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


class WebError(Exception):
    """A refusal shown as a page: ``status`` (4xx) and a sentence for the person."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _path_in_app(scope: Scope) -> str:
    root = scope.get("root_path", "")
    path: str = scope["path"]
    return path[len(root) :] if root and path.startswith(root) else path


def _cookie(scope: Scope, name: str) -> str | None:
    for key, value in scope.get("headers", []):
        if key == b"cookie":
            for part in value.decode("latin-1").split(";"):
                k, _, v = part.strip().partition("=")
                if k == name:
                    return str(v)
    return None


class SessionGate:
    """Resolves the viewer of every request (see the module docstring)."""

    def __init__(self, app: ASGIApp, sessions: WebSessions, clock: Clock) -> None:
        self.app = app
        self.sessions = sessions
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _with_headers(send)
        path = _path_in_app(scope)
        if path.startswith(_OPEN):
            await self.app(scope, receive, send)
            return
        cookie = _cookie(scope, COOKIE)
        viewer = await anyio.to_thread.run_sync(self.sessions.resolve, cookie, self.clock.now())
        if viewer is None:
            await self._refuse(scope, receive, send, path, had_cookie=cookie is not None)
            return
        scope.setdefault("state", {})["viewer"] = viewer
        who = viewer.principal
        actor = Actor(f"token:{who.token_id}", who.name, who.role.value)
        with in_request(actor, _header(scope, b"x-request-id")):
            await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, path: str,
                      *, had_cookie: bool) -> None:  # fmt: skip
        root = scope.get("root_path", "")
        response: Response
        if scope["method"] in ("GET", "HEAD"):
            query = scope.get("query_string", b"").decode("latin-1")
            target = path + (f"?{query}" if query else "")
            response = RedirectResponse(f"{root}/signin?next={quote(target)}", status_code=303)
        else:
            response = HTMLResponse("<!doctype html><title>Sign in</title><p>Sign in first.",
                                    status_code=401)  # fmt: skip
        if had_cookie:  # a tampered or expired cookie is dropped, not kept around
            response.delete_cookie(COOKIE, path=root or "/")
        await response(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))[:200]
    return None


def _with_headers(send: Send) -> Send:
    async def sending(message: Any) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            present = {k.lower() for k, _ in headers}
            for name, value in SECURITY_HEADERS.items():
                if name.encode() not in present:
                    headers.append((name.encode(), value.encode()))
            if b"cache-control" not in present:
                headers.append((b"cache-control", b"no-store"))
            message = {**message, "headers": headers}
        await send(message)

    return sending


def viewer_of(request: Request) -> Signed:
    """The signed-in viewer of ``request`` (the gate let it through)."""
    viewer = request.scope.get("state", {}).get("viewer")
    if not isinstance(viewer, Signed):
        raise WebError(401, "Sign in first.")
    return viewer


async def read_form(request: Request) -> dict[str, str]:
    """A urlencoded form's fields (the first value of each), bounded in size; 4xx otherwise."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise WebError(415, "Send the form as the page does (application/x-www-form-urlencoded).")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_FORM_BYTES):
        raise WebError(413, "That form is too large.")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise WebError(413, "That form is too large.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebError(400, "The form is not UTF-8.") from None
    try:
        fields = parse_qs(text, keep_blank_values=True, max_num_fields=50, strict_parsing=False)
    except ValueError:
        raise WebError(413, "That form has too many fields.") from None
    # A field sent more than once (the weekdays' checkboxes) arrives comma-joined.
    form = {k: ",".join(v) for k, v in fields.items() if v}
    if any("\x00" in v for v in form.values()):
        raise WebError(422, "The form contains a NUL character.")
    return form


async def action_form(request: Request) -> tuple[Signed, dict[str, str]]:
    """The viewer and form of an action: 403 without the session's CSRF token or the role."""
    viewer = viewer_of(request)
    form = await read_form(request)
    dash = request.app.state.dashboard
    if not dash.sessions.csrf_ok(viewer, form.get("csrf")):
        raise WebError(403, "The form's security token is missing or stale; reload the page.")
    if not viewer.can_change:
        raise WebError(403, f"The {viewer.principal.role.value} role may look but not change.")
    return viewer, form


def _page(request: Request, status: int, message: str) -> Response:
    dash = request.app.state.dashboard
    viewer = request.scope.get("state", {}).get("viewer")
    html = dash.templates.get_template("message.html").render(
        status=status, message=message, viewer=viewer, root=request.scope.get("root_path", ""),
        csrf=dash.sessions.csrf_token(viewer) if isinstance(viewer, Signed) else "",
    )  # fmt: skip
    return HTMLResponse(html, status_code=status)


#: A service's refusal → its status (the first matching class wins), as in the API.
_REFUSALS: list[tuple[type[Exception], int]] = [
    (op_errors.NotFound, 404),
    (op_errors.StateConflict, 409),
    (op_errors.OperationError, 422),
    (engine_errors.NotFound, 404),
    (engine_errors.UnknownJob, 422),
    (engine_errors.RunConflict, 409),
    (engine_errors.ScheduleExists, 409),
    (TokenError, 422),
    (SpecError, 422),
    (MoneyError, 422),
]


def error_handlers() -> dict[Any, Any]:
    """Starlette exception handlers: refusals and HTTP errors as pages with their 4xx."""

    async def refused(request: Request, exc: Exception) -> Response:
        if isinstance(exc, WebError):
            return _page(request, exc.status, exc.message)
        for cls, status in _REFUSALS:
            if isinstance(exc, cls):
                return _page(request, status, str(exc))
        status = int(getattr(exc, "status_code", 500))
        return _page(request, status, {404: "No such page.", 405: "Not allowed here."}.get(
            status, "That did not work."))  # fmt: skip

    handlers: dict[Any, Any] = {WebError: refused, 404: refused, 405: refused}
    for cls, _ in _REFUSALS:
        handlers[cls] = refused
    return handlers
