"""A small asyncio HTTP/1.1 client for the JSON POSTs of the webhook, SMS and push channels.

Why not ``httpx.AsyncClient``: on this stack it costs more CPU per request than the
blocking client (its connection pool scans every connection per request, and without the
optional ``sniffio`` package httpcore retries a failing import on every lock), so a sender
with many requests in flight was slower with it (~200–350 requests/s against ~1,000/s
for ``httpx.Client`` in one thread). This client does only what the channels need:

* ``POST`` of a JSON body with extra headers, over ``http`` or ``https`` (TLS with the
  default or a given :class:`ssl.SSLContext`, server name checked);
* keep-alive connections pooled per origin, at most ``max_connections`` each;
* responses with ``Content-Length``, ``Transfer-Encoding: chunked`` or read until close;
* one time limit for the whole request (``time_limit``, seconds); a reused connection that the server had closed is
  retried once on a new one (before anything was read back, so the request was not seen).

Errors are :class:`HttpError` (network, protocol or timeout). No proxies, redirects or
cookies: where the environment names a proxy, the notification wiring does not use this
client (:func:`duly.operations.notifications.wiring.build_notifications`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl as ssl_module
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["AsyncHttp", "HttpError", "Response"]

_MAX_HEAD = 64 * 1024
_MAX_BODY = 1024 * 1024


class HttpError(Exception):
    """The request failed on the network, timed out, or the answer was not HTTP/1.x."""


@dataclass(frozen=True, slots=True)
class Response:
    """A response: status, headers (lower-case names), body."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.content)


@dataclass(frozen=True, slots=True)
class _Origin:
    scheme: str
    host: str
    port: int


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


class _Stale(Exception):
    """A pooled connection was closed by the server before it answered."""


def _check_header(name: str, value: str) -> None:
    if any(c in name for c in "\r\n:") or "\r" in value or "\n" in value:
        raise HttpError(f"invalid header {name!r}")


class AsyncHttp:
    """Pooled keep-alive HTTP/1.1 connections; one instance per event loop."""

    def __init__(
        self,
        *,
        max_connections: int = 64,
        ssl_context: ssl_module.SSLContext | None = None,
        user_agent: str = "duly",
    ) -> None:
        self.max_connections = max_connections
        self.ssl_context = ssl_context
        self.user_agent = user_agent
        self._idle: dict[_Origin, list[_Conn]] = {}
        self._limits: dict[_Origin, asyncio.Semaphore] = {}
        self._targets: dict[tuple[str, str], tuple[_Origin, str]] = {}
        self._closed = False

    async def post_json(
        self, url: str, body: Any, *, headers: Mapping[str, str] | None = None,
        time_limit: float = 10.0,
    ) -> Response:  # fmt: skip
        """POST ``body`` as JSON to ``url``.

        :raises HttpError: not answered (network, timeout, protocol).
        """
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        return await self.request("POST", url, payload, headers=headers,
                                  content_type="application/json", time_limit=time_limit)  # fmt: skip

    async def request(
        self, method: str, url: str, payload: bytes = b"", *,
        headers: Mapping[str, str] | None = None, content_type: str | None = None,
        time_limit: float = 10.0,
    ) -> Response:  # fmt: skip
        """Send one request and read its response."""
        if self._closed:
            raise HttpError("client closed")
        origin, head = self._target(method, url)
        lines = [head, f"Content-Length: {len(payload)}"]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        for name, value in (headers or {}).items():
            _check_header(name, value)
            lines.append(f"{name}: {value}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload
        limit = self._limits.get(origin)
        if limit is None:
            limit = self._limits[origin] = asyncio.Semaphore(self.max_connections)
        try:
            async with asyncio.timeout(time_limit), limit:
                for attempt in (0, 1):
                    conn, reused = await self._connection(origin)
                    try:
                        response, keep = await self._exchange(conn, raw, method, reused)
                    except _Stale:
                        conn.close()
                        if attempt:
                            raise HttpError("connection closed by the server") from None
                        continue
                    except BaseException:
                        conn.close()
                        raise
                    if keep and not self._closed:
                        self._idle.setdefault(origin, []).append(conn)
                    else:
                        conn.close()
                    return response
        except TimeoutError:
            raise HttpError("timed out") from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError,
                ssl_module.SSLError) as exc:  # fmt: skip
            raise HttpError(type(exc).__name__) from None
        raise HttpError("no response")  # pragma: no cover (the loop returns or raises)

    def _target(self, method: str, url: str) -> tuple[_Origin, str]:
        """The origin of ``url`` and the request's first header lines (request line, Host,
        User-Agent, Accept), parsed once per (method, URL): a channel posts to one URL."""
        found = self._targets.get((method, url))
        if found is not None:
            return found
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise HttpError(f"unsupported URL scheme {scheme!r}")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise HttpError("invalid port") from None
        origin = _Origin(scheme, parts.hostname, port)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        default_port = port == (443 if scheme == "https" else 80)
        host = parts.hostname if default_port else f"{parts.hostname}:{port}"
        if ":" in parts.hostname:  # IPv6 literal
            host = f"[{parts.hostname}]" if default_port else f"[{parts.hostname}]:{port}"
        head = "\r\n".join([f"{method} {target} HTTP/1.1", f"Host: {host}",
                             f"User-Agent: {self.user_agent}", "Accept: */*"])  # fmt: skip
        if len(self._targets) >= 256:
            self._targets.clear()
        self._targets[(method, url)] = origin, head
        return origin, head

    async def _connection(self, origin: _Origin) -> tuple[_Conn, bool]:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if conn.usable():
                return conn, True
            conn.close()
        ctx: ssl_module.SSLContext | None = None
        if origin.scheme == "https":
            ctx = self.ssl_context or ssl_module.create_default_context()
        reader, writer = await asyncio.open_connection(
            origin.host, origin.port, ssl=ctx, server_hostname=origin.host if ctx else None,
            limit=_MAX_HEAD,
        )  # fmt: skip
        return _Conn(reader, writer), False

    async def _exchange(
        self, conn: _Conn, raw: bytes, method: str, reused: bool
    ) -> tuple[Response, bool]:
        try:
            conn.writer.write(raw)
            await conn.writer.drain()
            head = await conn.reader.readuntil(b"\r\n\r\n")
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            if reused and (not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial):
                raise _Stale from None
            raise
        status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        version, _, rest = status_line.partition(" ")
        if not version.startswith("HTTP/1."):
            raise HttpError("not an HTTP/1.x response")
        status = int(rest[:3])
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        if version == "HTTP/1.0":
            keep = "keep-alive" in headers.get("connection", "").lower()
        reader = conn.reader
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            chunks = []
            size_total = 0
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                        pass
                    break
                size_total += size
                if size_total > _MAX_BODY:
                    raise HttpError("response too large")
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
            body = b"".join(chunks)
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if length > _MAX_BODY:
                raise HttpError("response too large")
            body = await reader.readexactly(length)
        else:
            body = await reader.read(_MAX_BODY)
            keep = False
        return Response(status, headers, body), keep

    async def aclose(self) -> None:
        """Close every pooled connection."""
        self._closed = True
        conns = [c for idle in self._idle.values() for c in idle]
        self._idle.clear()
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(OSError, ssl_module.SSLError):
                await conn.writer.wait_closed()
