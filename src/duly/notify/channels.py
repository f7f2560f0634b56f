"""Channels: e-mail over SMTP, webhooks, SMS and push through HTTP gateways, and the log.

Every channel sends one :class:`Message` and returns a :class:`SendResult`, or raises
:class:`ChannelError` saying whether trying again may help (``transient``). Each message
carries an idempotency key (the delivery's dedupe key): HTTP channels send it as the
``Idempotency-Key`` header and in the body, e-mail derives its ``Message-ID`` from it, so a
receiver that honours keys sees a resend after a crash as the same message.
"""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
import ssl as ssl_module
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Protocol

import httpx
import structlog

from duly.notify.ahttp import AsyncHttp, HttpError

__all__ = [
    "AsyncChannel",
    "Channel",
    "ChannelError",
    "EmailChannel",
    "GatewayChannel",
    "LogChannel",
    "Message",
    "SendResult",
    "WebhookChannel",
]

log = structlog.get_logger("duly.notify")


@dataclass(frozen=True, slots=True)
class Message:
    """One rendered message for one recipient.

    :ivar to: the address on the channel (e-mail, URL, phone number, device token).
    :ivar short: the text for SMS and push (one or two sentences).
    :ivar data: structured fields for JSON channels (no personal data beyond what is shown).
    """

    to: str
    subject: str
    text: str
    idempotency_key: str
    html: str | None = None
    short: str | None = None
    template: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SendResult:
    """The provider's answer: a status code and, if it gave one, its message id."""

    code: str
    ref: str | None = None


class ChannelError(Exception):
    """A message could not be sent; ``transient`` says whether a retry may succeed."""

    def __init__(self, message: str, *, transient: bool, code: str = "") -> None:
        super().__init__(message)
        self.transient = transient
        self.code = code


class Channel(Protocol):
    """Sends messages of one kind."""

    name: str

    def send(self, message: Message) -> SendResult:
        """Send ``message``.

        :raises ChannelError: it was not sent (or it is unknown whether it was).
        """
        ...


class AsyncChannel(Channel, Protocol):
    """A channel that can also send from the event loop, many messages in flight."""

    async def asend(self, message: Message) -> SendResult:
        """:meth:`send`, without blocking the event loop."""
        ...


def message_id(key: str, domain: str = "duly") -> str:
    """A ``Message-ID`` that is the same for every send of one delivery."""
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"


class EmailChannel:
    """E-mail through an SMTP server: plain text and HTML, STARTTLS or implicit TLS, login."""

    name = "email"

    def __init__(
        self,
        host: str,
        port: int = 587,
        *,
        sender: str,
        starttls: bool = True,
        use_ssl: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        ssl_context: ssl_module.SSLContext | None = None,
    ) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.starttls, self.use_ssl = starttls, use_ssl
        self.username, self.password = username, password
        self.timeout = timeout
        # smtplib's own default context verifies nothing: always check the server's
        # certificate and name (the system's CAs unless the caller trusts its own)
        self.ssl_context = ssl_context or ssl_module.create_default_context()

    def _message(self, message: Message) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = message.to
        mail["Subject"] = message.subject
        mail["Message-ID"] = message_id(message.idempotency_key)
        mail["Date"] = formatdate(usegmt=True)
        mail["X-Duly-Idempotency-Key"] = message.idempotency_key
        mail.set_content(message.text)
        if message.html:
            mail.add_alternative(message.html, subtype="html")
        return mail

    def send(self, message: Message) -> SendResult:
        """Send over one SMTP session."""
        mail = self._message(message)
        try:
            if self.use_ssl:
                server: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=self.ssl_context
                )
            else:
                server = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with server:
                if self.starttls and not self.use_ssl:
                    server.starttls(context=self.ssl_context)
                if self.username:
                    server.login(self.username, self.password or "")
                refused = server.send_message(mail)
        except smtplib.SMTPResponseException as exc:
            raise ChannelError(
                f"SMTP {exc.smtp_code}",
                transient=400 <= exc.smtp_code < 500,
                code=str(exc.smtp_code),
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            transient = all(400 <= c < 500 for c in codes)
            raise ChannelError(
                "recipient refused", transient=transient, code=str(codes[0] if codes else "")
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise ChannelError(f"SMTP: {exc}", transient=False, code="unsupported") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise ChannelError(
                f"SMTP: {type(exc).__name__}", transient=True, code="network"
            ) from None
        if refused:
            raise ChannelError("recipient refused", transient=False, code="refused")
        return SendResult(code="250", ref=mail["Message-ID"])


def _http_error(exc: httpx.HTTPError) -> ChannelError:
    return ChannelError(f"HTTP: {type(exc).__name__}", transient=True, code="network")


class _Answer(Protocol):
    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    def json(self) -> Any: ...


def _check(response: _Answer) -> SendResult:
    code = response.status_code
    if 200 <= code < 300:
        ref = None
        if response.headers.get("content-type", "").startswith("application/json"):
            try:
                body = response.json()
            except ValueError:
                body = None
            if isinstance(body, dict):
                found = body.get("id") or body.get("message_id")
                ref = str(found)[:200] if found is not None else None
        return SendResult(code=str(code), ref=ref)
    transient = code in (408, 409, 425, 429) or code >= 500
    raise ChannelError(f"HTTP {code}", transient=transient, code=str(code))


class WebhookChannel:
    """A JSON POST to a URL; ``slack`` sends Slack's ``{"text": ...}`` form.

    ``aclient`` (optional) lets :meth:`asend` send from the event loop.
    """

    name = "webhook"

    def __init__(
        self,
        client: httpx.Client,
        *,
        fmt: str = "json",
        timeout: float = 10.0,
        aclient: AsyncHttp | None = None,
    ) -> None:
        self.client, self.fmt, self.timeout = client, fmt, timeout
        self.aclient = aclient

    def _body(self, message: Message) -> dict[str, Any]:
        if self.fmt == "slack":
            return {"text": f"*{message.subject}*\n{message.text}"}
        return {
            "template": message.template,
            "subject": message.subject,
            "text": message.text,
            "data": dict(message.data),
            "idempotency_key": message.idempotency_key,
        }

    def send(self, message: Message) -> SendResult:
        """POST to ``message.to`` (the webhook's URL)."""
        try:
            response = self.client.post(
                message.to,
                json=self._body(message),
                headers={"Idempotency-Key": message.idempotency_key},
                timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
            raise _http_error(exc) from None
        return _check(response)

    async def asend(self, message: Message) -> SendResult:
        """:meth:`send` on the event loop (through ``aclient``)."""
        if self.aclient is None:
            return await asyncio.to_thread(self.send, message)
        try:
            response = await self.aclient.post_json(
                message.to,
                self._body(message),
                headers={"Idempotency-Key": message.idempotency_key},
                time_limit=self.timeout,
            )
        except HttpError as exc:
            raise ChannelError(f"HTTP: {exc}", transient=True, code="network") from None
        return _check(response)


class GatewayChannel:
    """SMS or push through an HTTP gateway: a JSON POST with a bearer token.

    SMS body: ``{"to", "from", "text", "idempotency_key"}``; push body:
    ``{"token", "title", "body", "data", "idempotency_key"}``. ``aclient`` (optional) lets
    :meth:`asend` send from the event loop.
    """

    def __init__(
        self,
        name: str,
        client: httpx.Client,
        url: str,
        *,
        token: str | None = None,
        sender: str = "duly",
        timeout: float = 10.0,
        aclient: AsyncHttp | None = None,
    ) -> None:
        if name not in ("sms", "push"):
            raise ValueError(f"a gateway channel is sms or push, not {name!r}")
        self.name, self.client, self.url = name, client, url
        self.token, self.sender, self.timeout = token, sender, timeout
        self.aclient = aclient

    def _request(self, message: Message) -> tuple[dict[str, Any], dict[str, str]]:
        text = message.short or message.subject
        if self.name == "sms":
            body: dict[str, Any] = {"to": message.to, "from": self.sender, "text": text}
        else:
            body = {"token": message.to, "title": message.subject, "body": text,
                    "data": {"template": message.template}}  # fmt: skip
        body["idempotency_key"] = message.idempotency_key
        headers = {"Idempotency-Key": message.idempotency_key}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return body, headers

    def send(self, message: Message) -> SendResult:
        """POST the message to the gateway."""
        body, headers = self._request(message)
        try:
            response = self.client.post(self.url, json=body, headers=headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise _http_error(exc) from None
        return _check(response)

    async def asend(self, message: Message) -> SendResult:
        """:meth:`send` on the event loop (through ``aclient``)."""
        if self.aclient is None:
            return await asyncio.to_thread(self.send, message)
        body, headers = self._request(message)
        try:
            response = await self.aclient.post_json(
                self.url, body, headers=headers, time_limit=self.timeout
            )
        except HttpError as exc:
            raise ChannelError(f"HTTP: {exc}", transient=True, code="network") from None
        return _check(response)


class LogChannel:
    """Writes one log line per message: template and masked recipient, never the body."""

    name = "log"

    def send(self, message: Message) -> SendResult:
        """Log the message's subject."""
        log.info("notify.log_channel", template=message.template, subject=message.subject,
                 key=message.idempotency_key)  # fmt: skip
        return SendResult(code="logged")
