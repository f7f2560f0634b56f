"""The notification relay killed between send and mark, in a real ``duly worker`` process.

A real HTTP receiver on 127.0.0.1 (an SMS gateway and an ops webhook) honours the
``Idempotency-Key`` header: a key it has processed is acknowledged again, not processed
again. It holds its first request open until the test has SIGKILLed the worker that sent
it, so that worker dies after the send and before it records the outcome. A second worker
takes the deliveries over once their lease has passed and re-sends them with the same keys:
the receiver processed each event once, saw at least one duplicate, and the outbox and the
delivery queue end empty.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select

from duly.banking.customers import Customers, NewCustomer
from duly.clock import SystemClock
from duly.engine.alerts import StoreAlertSink
from duly.engine.store.base import NewAlert
from duly.engine.store.sql import SqlStore
from duly.notify.schema import deliveries
from duly.operations.outbox import emit, outbox

pytestmark = pytest.mark.slow

CLOCK = SystemClock()
EVENTS = 4


@dataclass
class IdempotentReceiver:
    """Processes each ``Idempotency-Key`` once; the first request waits for ``release``."""

    url: str = ""
    seen: list[str] = field(default_factory=list)
    processed: dict[str, Any] = field(default_factory=dict)
    first_arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(rec: IdempotentReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
            key = self.headers.get("idempotency-key", "")
            with rec.lock:
                rec.seen.append(key)
                first = not rec.first_arrived.is_set()
                duplicate = key in rec.processed
                if not duplicate:
                    rec.processed[key] = {"path": self.path, "body": body}
                rec.first_arrived.set()
            if first:
                rec.release.wait(60)  # the sender is killed while it waits for this answer
            out = json.dumps({"id": key, "duplicate": duplicate}).encode()
            try:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)
            except OSError:
                pass  # the sender is gone

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def gateway() -> Iterator[IdempotentReceiver]:
    rec = IdempotentReceiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(rec))
    server.daemon_threads = True
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield rec
    rec.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def worker(db_url: str, tmp_path: Path) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DULY_")}
        env.update(
            DULY_DATABASE_URL=db_url,
            DULY_NODE_NAME=name,
            DULY_CONFIG=str(tmp_path / "duly.yaml"),
            DULY_ENGINE__LEASE_SECONDS="3",
            DULY_ENGINE__HEARTBEAT_SECONDS="1",
            DULY_ENGINE__REAPER_INTERVAL_SECONDS="1",
            DULY_ENGINE__MAX_IDLE_SECONDS="0.5",
            DULY_LOGGING__LEVEL="warning",
        )
        with (tmp_path / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "duly", "worker"],
                env=env,
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in started:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = CLOCK.now() + timedelta(seconds=seconds)
    while not check():
        if CLOCK.now() > deadline:
            pytest.fail(f"timed out after {seconds} s waiting for {what}")
        CLOCK.sleep_blocking(0.1)


def _count(store: SqlStore, query: Any) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _statuses(store: SqlStore) -> Counter[str]:
    with store.engine.connect() as conn:
        return Counter(r[0] for r in conn.execute(select(deliveries.c.status)))


def test_relay_killed_between_send_and_mark_sends_each_event_once(
    store: SqlStore,
    gateway: IdempotentReceiver,
    worker: Callable[[str], subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    (tmp_path / "duly.yaml").write_text(
        yaml.safe_dump(
            {
                "notify": {
                    "sms": {"url": f"{gateway.url}/sms"},
                    "webhooks": [{"name": "ops", "url": f"{gateway.url}/ops"}],
                    "routing": {"low": [{"channel": "webhook", "to": ["ops"]}]},
                    "delivery": {"lease_seconds": 2, "poll_seconds": 0.2, "backoff_seconds": [0.5]},
                }
            }
        ),
        encoding="utf-8",
    )
    people = Customers(store.engine, CLOCK)
    ids = [
        people.add(
            NewCustomer(
                f"crash-{i}", phone=f"+4479000000{i:02d}", notification_prefs={"channels": ["sms"]}
            )
        ).id
        for i in range(EVENTS)
    ]
    a = worker("relay-a")
    wait_for(
        lambda: any(n.name == "relay-a" and n.state == "running" for n in store.node_list()),
        30,
        "worker a to start",
    )
    now = CLOCK.now()
    with store.engine.begin() as conn:
        for i, cid in enumerate(ids):
            emit(
                conn,
                event_type="customer.notification",
                aggregate="transfer",
                aggregate_id=100 + i,
                dedupe_key=f"notify:transfer:{100 + i}:failed",
                payload={
                    "template": "payment_failed",
                    "customer_id": cid,
                    "reference": f"st-{100 + i}",
                    "amount": "125.50",
                    "currency": "GBP",
                    "memo": "rent",
                    "scheduled_for": now.isoformat(),
                    "attempts": 3,
                    "reason_code": "INSUFFICIENT_FUNDS",
                    "reason_class": "transient",
                    "suggested_action": "Top up the account and retry.",
                },
                now=now,
            )
    StoreAlertSink(store).raise_alert(
        NewAlert(
            dedupe_key="crash-test",
            rule="test.crash",
            severity="low",
            title="relay crash test",
            now=now,
        )
    )

    # Worker a sends; the receiver has processed the first request and holds its answer.
    assert gateway.first_arrived.wait(30), "worker a sent nothing"
    CLOCK.sleep_blocking(0.5)  # let the rest of its batch go out too
    a.send_signal(signal.SIGKILL)
    a.wait(timeout=10)
    gateway.release.set()
    sending = _statuses(store)["sending"]
    assert sending >= 1, _statuses(store)  # sent, never marked: the crash window
    first_round = len(gateway.seen)

    b = worker("relay-b")
    expected = EVENTS + 1  # four SMS and one ops alert on the webhook

    def all_sent() -> bool:
        s = _statuses(store)
        return s["sent"] >= expected and not (s["pending"] or s["sending"])

    wait_for(all_sent, 60, "worker b to finish the deliveries")
    b.send_signal(signal.SIGTERM)
    assert b.wait(timeout=20) == 0

    unpublished = select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
    assert _count(store, unpublished) == 0  # the outbox ends empty
    assert _statuses(store) == Counter(sent=expected), _statuses(store)
    # Each event processed once; the deliveries a died holding were re-sent with their key.
    keys = Counter(gateway.seen)
    assert len(gateway.processed) == expected, gateway.processed.keys()
    assert set(keys) == set(gateway.processed)
    assert len(gateway.seen) > first_round and max(keys.values()) >= 2, keys
    sms = [p for p in gateway.processed.values() if p["path"] == "/sms"]
    assert sorted(p["body"]["to"] for p in sms) == sorted(
        f"+4479000000{i:02d}" for i in range(EVENTS)
    )
    assert sum(p["path"] == "/ops" for p in gateway.processed.values()) == 1
