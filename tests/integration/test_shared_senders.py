"""Two real sender processes share one delivery queue (SQLite file and PostgreSQL).

Each process runs the ``duly worker`` sender step (:meth:`DeliverySender.send_due_async`:
claim a batch, send it from the event loop, record it) until nothing is due. The claims
are fenced (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, SQLite's single writer, and the
update re-checks that the row is still due), so together they send every delivery exactly
once: the receiver on 127.0.0.1 sees each idempotency key once, both processes took part,
and every row is ``sent`` after one attempt.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
from sqlalchemy import select

from conftest import Receiver
from duly.clock import SystemClock
from duly.engine.store.sql import SqlStore
from duly.notify.deliveries import NewDelivery, enqueue_many
from duly.notify.mask import address_ref
from duly.notify.schema import deliveries

pytestmark = pytest.mark.slow

N = 400

SENDER = """
import asyncio, sys
from duly.clock import SystemClock
from duly.config import NotifySettings
from duly.engine.store.sql import SqlStore
from duly.logs import configure_logging
from duly.operations.notifications.wiring import build_notifications

configure_logging("warning", "json")

async def main() -> None:
    store = SqlStore(sys.argv[1])
    settings = NotifySettings(
        webhooks=[{"name": "ops", "url": sys.argv[2]}],
        routing={"critical": [{"channel": "webhook", "to": ["ops"]}]},
        delivery={"batch": 10, "concurrency": 8},
    )
    parts = build_notifications(settings, store, SystemClock())
    print("ready", flush=True)
    sys.stdin.readline()
    claimed = 0
    while n := await parts.sender.send_due_async():
        claimed += n
    await parts.aclose()
    store.dispose()
    print(claimed, flush=True)

asyncio.run(main())
"""


def test_two_sender_processes_send_each_delivery_once(
    db_url: str, store: SqlStore, receiver: Receiver
) -> None:
    now = SystemClock().now()
    news = [
        NewDelivery(dedupe_key=f"shared-{i}", source="test", channel="webhook",
                    recipient_ref=address_ref("webhook", "ops"), recipient_masked="webhook:ops",
                    template="test", context={"text": f"message {i}"})
        for i in range(N)
    ]  # fmt: skip
    with store.engine.begin() as conn:
        queued = enqueue_many(conn, news, now)
    assert len(queued) == N
    command = [sys.executable, "-c", SENDER, db_url, receiver.at("/ops")]
    pipe = subprocess.PIPE
    procs = [subprocess.Popen(command, stdin=pipe, stdout=pipe, text=True) for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:  # both start claiming at once
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        claimed = []
        for p in procs:
            out, _ = p.communicate(timeout=120)
            assert p.returncode == 0
            claimed.append(int(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    keys = Counter(r.headers.get("idempotency-key") for r in receiver.on("/ops"))
    assert len(keys) == N and set(keys.values()) == {1}, "a delivery was sent twice or lost"
    assert sum(claimed) == N and min(claimed) > 0, claimed  # both processes took part
    with store.engine.connect() as conn:
        rows = conn.execute(select(deliveries.c.status, deliveries.c.attempts)).all()
    assert Counter((r.status, r.attempts) for r in rows) == {("sent", 1): N}
