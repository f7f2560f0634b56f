"""duly's asyncio HTTP client and the channels' ``asend`` against real servers on 127.0.0.1:
bodies and headers as sent, statuses classed as by the blocking path, keep-alive reuse,
chunked and close-delimited answers, a server that drops an idle connection, time limits."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest

from conftest import Receiver
from duly.notify.ahttp import AsyncHttp, HttpError
from duly.notify.channels import ChannelError, GatewayChannel, Message, WebhookChannel


def msg(**kw: object) -> Message:
    base: dict[str, object] = {"to": "+447700900123", "subject": "Reminder: £12.00 on Mar 9",
                               "text": "plain\n", "short": "short £", "template": "payment_reminder",
                               "idempotency_key": "st-1:v1:1h:sms"}  # fmt: skip
    base.update(kw)
    return Message(**base)  # type: ignore[arg-type]


async def test_channels_asend_like_send(receiver: Receiver) -> None:
    client = AsyncHttp()
    with httpx.Client() as http:
        sms = GatewayChannel("sms", http, receiver.at("/sms"), token="tok", sender="BANK",
                             aclient=client)  # fmt: skip
        hook = WebhookChannel(http, aclient=client)
        results = await asyncio.gather(
            *(sms.asend(msg(idempotency_key=f"k{i}")) for i in range(20)),
            hook.asend(msg(to=receiver.at("/hook"), data={"alert_id": 7})),
        )
        assert sms.send(msg(idempotency_key="k-sync")).code == "200"
    await client.aclose()
    assert all(r.code == "200" and r.ref and r.ref.startswith("msg-") for r in results)
    received = {r.headers["idempotency-key"]: r for r in receiver.on("/sms")}
    assert len(received) == 21
    a, b = received["k3"], received["k-sync"]
    assert a.body == {**b.body, "idempotency_key": "k3"}  # the same body as the blocking path
    assert a.body == {"to": "+447700900123", "from": "BANK", "text": "short £",
                      "idempotency_key": "k3"}  # fmt: skip
    assert a.headers["authorization"] == "Bearer tok"
    assert a.headers["content-type"] == "application/json"
    (h,) = receiver.on("/hook")
    assert h.body["data"] == {"alert_id": 7} and h.body["subject"] == "Reminder: £12.00 on Mar 9"


async def test_statuses_are_classed_as_in_the_blocking_path(receiver: Receiver) -> None:
    client = AsyncHttp()
    with httpx.Client() as http:  # not used by asend
        sms = GatewayChannel("sms", http, receiver.at("/sms"), aclient=client)
        gone = GatewayChannel("sms", http, "http://127.0.0.1:1/sms", aclient=client)
        receiver.fail_next.extend([503, 429, 400])
        transient = []
        for _ in range(3):
            with pytest.raises(ChannelError) as info:
                await sms.asend(msg())
            transient.append((info.value.code, info.value.transient))
        assert transient == [("503", True), ("429", True), ("400", False)]
        assert (await sms.asend(msg())).code == "200"
        with pytest.raises(ChannelError) as info:
            await gone.asend(msg())
        assert info.value.transient and info.value.code == "network"
    await client.aclose()


class RawServer:
    """A TCP server answering each request with ``answer(n)`` (n counts requests); it can
    close a connection after answering."""

    def __init__(self, answers: list[tuple[bytes, bool]]) -> None:
        self.answers = answers
        self.requests = 0
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(buf) < length:
                    buf += conn.recv(65536)
                buf = buf[length:]
                answer, close = self.answers[min(self.requests, len(self.answers) - 1)]
                self.requests += 1
                conn.sendall(answer)
                if close:
                    return


@pytest.fixture
def chunked() -> Iterator[RawServer]:
    ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    server = RawServer([
        (ok + b"transfer-encoding: chunked\r\n\r\n5\r\n{\"id\"\r\n7\r\n: \"c1\"}\r\n0\r\n\r\n", False),
        (ok + b"content-length: 11\r\n\r\n{\"id\": \"k\"}", True),  # then drops the connection
        (b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{\"id\": \"eof\"}", True),
        (ok + b"content-length: 11\r\n\r\n{\"id\": \"z\"}", False),
    ])  # fmt: skip
    yield server
    server.sock.close()


async def test_chunked_close_and_a_dropped_keepalive_connection(chunked: RawServer) -> None:
    client = AsyncHttp()
    url = f"http://127.0.0.1:{chunked.port}/x"
    first = await client.post_json(url, {"a": 1})
    assert first.status_code == 200 and first.json() == {"id": "c1"}
    assert (await client.post_json(url, {"a": 2})).json() == {"id": "k"}  # same connection
    assert chunked.connections == 1
    # The server closed that connection: the next request goes on a new one.
    assert (await client.post_json(url, {"a": 3})).json() == {"id": "eof"}
    assert (await client.post_json(url, {"a": 4})).json() == {"id": "z"}
    assert chunked.requests == 4 and chunked.connections == 3
    await client.aclose()
    with pytest.raises(HttpError):
        await client.post_json(url, {})  # closed


async def test_time_limit_and_bad_urls() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts, never answers
    client = AsyncHttp()
    with pytest.raises(HttpError, match="timed out"):
        await client.post_json(f"http://127.0.0.1:{silent.getsockname()[1]}/", {}, time_limit=0.3)
    for bad in ("ftp://127.0.0.1/x", "http:///x"):
        with pytest.raises(HttpError):
            await client.post_json(bad, {})
    with pytest.raises(HttpError):
        await client.post_json("http://127.0.0.1:1/", {}, headers={"X-Bad": "a\r\nInjected: 1"})
    await client.aclose()
    silent.close()
