"""E-mail over real TLS: an aiosmtpd server on 127.0.0.1 with a certificate made for the test.

STARTTLS and implicit TLS both deliver when the server's certificate is trusted (its CA
given as ``notify.email.ca_file``), and nothing is sent to a server whose certificate is
not trusted: duly never falls back to an unchecked connection.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from pydantic import ValidationError

from duly.config import EmailSettings, NotifySettings
from duly.notify.channels import ChannelError, EmailChannel, Message
from duly.notify.sender import ChannelSet


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class TlsMailbox:
    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    encrypted: list[bool] = field(default_factory=list)


class _Handler:
    def __init__(self, box: TlsMailbox) -> None:
        self.box = box

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        data = envelope.content if isinstance(envelope.content, bytes) else b""
        self.box.messages.append(message_from_bytes(data, policy=policy.default))
        self.box.encrypted.append(server.transport.get_extra_info("ssl_object") is not None)
        return "250 OK"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (it is its own CA)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=duly test SMTP", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def _server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*map(str, certificate))
    return context


@pytest.fixture(params=["starttls", "implicit"])
def tls_server(request: Any, certificate: tuple[Path, Path]) -> Iterator[tuple[str, TlsMailbox]]:
    box = TlsMailbox(_free_port())
    context = _server_context(certificate)
    kwargs: dict[str, Any] = (
        {"tls_context": context, "require_starttls": True}
        if request.param == "starttls"
        else {"ssl_context": context}
    )
    controller = Controller(_Handler(box), hostname="127.0.0.1", port=box.port, **kwargs)
    controller.start()
    yield request.param, box
    controller.stop()


def _channel(mode: str, port: int, context: ssl.SSLContext | None) -> EmailChannel:
    return EmailChannel("127.0.0.1", port, sender="duly <ops@bank.test>",
                        starttls=mode == "starttls", use_ssl=mode == "implicit",
                        timeout=5, ssl_context=context)  # fmt: skip


def _message(key: str = "tls-1") -> Message:
    return Message(to="ana@example.test", subject="Reminder", text="Your payment is due.",
                   idempotency_key=key)  # fmt: skip


def test_a_trusted_server_gets_the_mail_encrypted(
    tls_server: tuple[str, TlsMailbox], certificate: tuple[Path, Path]
) -> None:
    mode, box = tls_server
    trusted = ssl.create_default_context(cafile=str(certificate[0]))
    _channel(mode, box.port, trusted).send(_message())
    assert [m["Subject"] for m in box.messages] == ["Reminder"]
    assert box.encrypted == [True]


def test_an_untrusted_certificate_sends_nothing(tls_server: tuple[str, TlsMailbox]) -> None:
    mode, box = tls_server
    with pytest.raises(ChannelError):  # the system's CAs do not know the test's certificate
        _channel(mode, box.port, None).send(_message())
    assert box.messages == []


def test_the_configured_ca_file_is_trusted(
    tls_server: tuple[str, TlsMailbox], certificate: tuple[Path, Path]
) -> None:
    mode, box = tls_server
    email = EmailSettings(host="127.0.0.1", port=box.port, starttls=mode == "starttls",
                          ssl=mode == "implicit", ca_file=certificate[0])  # fmt: skip
    with httpx.Client() as client:
        channels = ChannelSet.from_settings(NotifySettings(email=email), client)
        channels.send("email", "ana@example.test", _message("tls-config"))
    assert len(box.messages) == 1 and box.encrypted == [True]


def test_a_missing_ca_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="ca_file"):
        EmailSettings(host="smtp.bank.internal", ca_file=tmp_path / "nope.pem")
