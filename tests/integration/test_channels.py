"""Each channel against a real server on 127.0.0.1: what arrives, and how failures are classed."""

from __future__ import annotations

import httpx
import pytest

from conftest import Mailbox, Receiver
from duly.notify.channels import (
    ChannelError,
    EmailChannel,
    GatewayChannel,
    Message,
    WebhookChannel,
    message_id,
)


def msg(**kw: object) -> Message:
    base: dict[str, object] = {
        "to": "ann@example.com",
        "subject": "Reminder: $125.50 on Mar 9",
        "text": "plain body\n",
        "html": "<p>html body</p>",
        "short": "short body",
        "idempotency_key": "transfer:1:v1:1d:email",
        "template": "payment_reminder",
    }
    base.update(kw)
    return Message(**base)  # type: ignore[arg-type]


@pytest.fixture
def http() -> httpx.Client:
    with httpx.Client() as client:
        yield client


def test_email_arrives_with_text_html_and_a_stable_message_id(smtp_server: Mailbox) -> None:
    channel = EmailChannel(smtp_server.host, smtp_server.port, sender="bank <noreply@bank.test>",
                           starttls=False, username="duly", password="secret")  # fmt: skip
    result = channel.send(msg())
    assert result.code == "250"
    (mail,) = smtp_server.to("ann@example.com")
    assert smtp_server.logins == ["duly"]
    assert mail["Subject"] == "Reminder: $125.50 on Mar 9"
    assert mail["Message-ID"] == message_id("transfer:1:v1:1d:email") == result.ref
    assert mail["X-Duly-Idempotency-Key"] == "transfer:1:v1:1d:email"
    parts = {p.get_content_type(): p.get_payload(decode=True) for p in mail.walk()}
    assert parts["text/plain"].strip() == b"plain body"
    assert parts["text/html"].strip() == b"<p>html body</p>"


def test_email_without_starttls_is_permanent_and_no_server_is_transient(
    smtp_server: Mailbox,
) -> None:
    starttls_missing = EmailChannel(smtp_server.host, smtp_server.port, sender="x@bank.test")
    with pytest.raises(ChannelError) as info:
        starttls_missing.send(msg())  # the server offers no STARTTLS: never send in clear
    assert not info.value.transient
    gone = EmailChannel("127.0.0.1", 1, sender="x@bank.test", starttls=False, timeout=2)
    with pytest.raises(ChannelError) as info:
        gone.send(msg())
    assert info.value.transient
    assert smtp_server.messages == []


def test_webhook_json_and_slack_forms_carry_the_idempotency_key(
    receiver: Receiver, http: httpx.Client
) -> None:
    WebhookChannel(http).send(msg(to=receiver.at("/json"), data={"alert_id": 7}))
    WebhookChannel(http, fmt="slack").send(msg(to=receiver.at("/slack")))
    (j,) = receiver.on("/json")
    assert j.headers["idempotency-key"] == "transfer:1:v1:1d:email"
    assert j.body["data"] == {"alert_id": 7} and j.body["subject"].startswith("Reminder")
    (s,) = receiver.on("/slack")
    assert s.body == {"text": "*Reminder: $125.50 on Mar 9*\nplain body\n"}


def test_sms_and_push_gateways(receiver: Receiver, http: httpx.Client) -> None:
    sms = GatewayChannel("sms", http, receiver.at("/sms"), token="tok", sender="BANK")
    push = GatewayChannel("push", http, receiver.at("/push"), token="tok2")
    assert sms.send(msg(to="+447700900123")).ref == "msg-1"
    push.send(msg(to="device-abc"))
    (s,) = receiver.on("/sms")
    assert s.body == {"to": "+447700900123", "from": "BANK", "text": "short body",
                      "idempotency_key": "transfer:1:v1:1d:email"}  # fmt: skip
    assert s.headers["authorization"] == "Bearer tok"
    (p,) = receiver.on("/push")
    assert p.body["token"] == "device-abc" and p.body["body"] == "short body"
    assert p.headers["authorization"] == "Bearer tok2"


@pytest.mark.parametrize(("status", "transient"), [(500, True), (503, True), (429, True),
                                                   (400, False), (401, False)])  # fmt: skip
def test_http_status_classes(
    receiver: Receiver, http: httpx.Client, status: int, transient: bool
) -> None:
    receiver.fail_next.append(status)
    with pytest.raises(ChannelError) as info:
        WebhookChannel(http).send(msg(to=receiver.at("/x")))
    assert info.value.transient is transient and info.value.code == str(status)


def test_unreachable_gateway_is_transient(http: httpx.Client) -> None:
    with pytest.raises(ChannelError) as info:
        GatewayChannel("sms", http, "http://127.0.0.1:1/sms", timeout=2).send(msg(to="+15550100"))
    assert info.value.transient and info.value.code == "network"
