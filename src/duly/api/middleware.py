"""The gate every HTTP request passes before routing.

In order: a request id (``X-Request-ID`` honoured when sane, else generated; returned and
bound to every log line of the request), the body size limit (413 before the body is read
when ``Content-Length`` says so, and while reading otherwise), authentication of
``/api/v1`` calls (401), the per-token rate limit (429 with ``Retry-After``), NUL characters
in the path or query (422), and request counts and latencies by route for ``/metrics``. It is a plain ASGI middleware, so it adds
no task or copy per request.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio.to_thread
import structlog
from prometheus_client import Counter, Histogram
from starlette.exceptions import HTTPException

from duly.api.errors import error_body
from duly.api.paths import API_PREFIX
from duly.api.ratelimit import RateLimiter
from duly.audit import Actor, in_request
from duly.auth.service import Principal, TokenService
from duly.clock import Clock

__all__ = ["HTTP_LATENCY", "HTTP_REQUESTS", "RequestGate"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]



HTTP_REQUESTS = Counter(
    "duly_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "duly_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class _BodyTooLarge(HTTPException):
    """Raised while reading a body past the limit; FastAPI passes HTTP exceptions through."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes")


class RequestGate:
    """Request id, body limit, authentication, rate limit and HTTP metrics around ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: TokenService,
        clock: Clock,
        limiter: RateLimiter,
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.clock = clock
        self.limiter = limiter
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        started = time.perf_counter()
        status_seen = [500]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen[0] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self._gate(scope, receive, send_with_id, request_id)
            finally:
                self._observe(scope, status_seen[0], time.perf_counter() - started)

    async def _gate(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        acting: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await _refuse(send, 413, "BODY_TOO_LARGE", self._too_large())
            return
        if scope["path"].startswith(API_PREFIX):
            principal = await self._authenticate(scope)
            if principal is None:
                await _refuse(send, 401, "UNAUTHENTICATED",
                              "a valid bearer token is required (Authorization: Bearer duly_…)",
                              {"www-authenticate": "Bearer"})  # fmt: skip
                return
            scope.setdefault("state", {})["principal"] = principal
            wait = self.limiter.take(principal.token_id, self.clock.now().timestamp())
            if wait > 0:
                retry = RateLimiter.retry_after(wait)
                await _refuse(send, 429, "RATE_LIMITED",
                              f"too many requests for this token; retry in {retry} s",
                              {"retry-after": str(retry)})  # fmt: skip
                return
            structlog.contextvars.bind_contextvars(token_id=principal.token_id)
            # Every audit event the request writes carries the token and the request id.
            actor = Actor(f"token:{principal.token_id}", principal.name, principal.role.value)
            acting = in_request(actor, request_id)
            if _has_nul(scope):
                # PostgreSQL cannot store or even compare text with NUL in it (a driver error,
                # so a 500); refused here once rather than in every route taking a string.
                await _refuse(send, 422, "VALIDATION_ERROR",
                              "the path or query contains a NUL character (%00)")  # fmt: skip
                return
        started = [False]

        async def send_tracking(message: Message) -> None:
            if message["type"] == "http.response.start":
                started[0] = True
            await send(message)

        try:
            with acting:
                await self.app(scope, self._limited(receive), send_tracking)
        except _BodyTooLarge:
            if not started[0]:
                await _refuse(send, 413, "BODY_TOO_LARGE", self._too_large())

    def _too_large(self) -> str:
        return f"request body over {self.max_body_bytes} bytes"

    def _limited(self, receive: Receive) -> Receive:
        seen = [0]
        limit = self.max_body_bytes

        async def counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > limit:
                    raise _BodyTooLarge(limit)
            return message

        return counted

    async def _authenticate(self, scope: Scope) -> Principal | None:
        header = _header(scope, b"authorization")
        if header is None:
            return None
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            return None
        now = self.clock.now()
        token = credential.strip()
        cached = self.tokens.cached(token, now)  # no thread, no database: the common case
        if cached is not None:
            return cached
        return await anyio.to_thread.run_sync(self.tokens.authenticate, token, now)

    @staticmethod
    def _observe(scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        label = getattr(route, "path", None) or "unmatched"
        method = scope.get("method", "")
        HTTP_REQUESTS.labels(method, label, str(status)).inc()
        HTTP_LATENCY.labels(method, label).observe(seconds)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            try:
                return bytes(value).decode("latin-1")
            except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
                return None
    return None


def _request_id(scope: Scope) -> str:
    given = _header(scope, b"x-request-id")
    if given is not None and _REQUEST_ID.match(given):
        return given
    return uuid.uuid4().hex


def _has_nul(scope: Scope) -> bool:
    query = bytes(scope.get("query_string", b""))
    return "\x00" in scope["path"] or b"%00" in query or b"\x00" in query


def _content_length(scope: Scope) -> int | None:
    raw = _header(scope, b"content-length")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


async def _refuse(
    send: Send, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps(error_body(code, message)).encode()
    raw_headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]  # fmt: skip
    raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
