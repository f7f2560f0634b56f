"""Payment reminders (issue 6): planned/s, delivered/s to a local receiver, lateness.

Run: ``.venv/bin/python bench/reminders.py [--n 10000] [--rate 2000] [--procs 1]
[--channel push|sms] [--pg URL]``

1. **plan/s** — ``n`` scheduled transfers and their ``transfer.scheduled`` outbox events
   are written; the outbox relay reads them and plans one reminder each (offset ``1h``, on
   the customer's channel: a reminder row and a pending delivery), timed until the outbox
   is empty. Transfers execute at one of 240 wall-clock minutes from three hours ahead (as
   scheduled transfers do: a local time HH:MM); every amount differs.
2. **deliver/s and lateness** — the reminders' send times are spread evenly from two
   seconds ahead at ``rate`` per second; ``procs`` worker processes run the notification
   loops (relay, router, sweep, sender — what ``duly worker`` runs) and send them to a
   local HTTP receiver in another process. deliver/s is ``n`` over the time from the first
   send time to the last send; lateness is ``sent_at − send_at`` per reminder (p50/p99/max).

The receiver is a webhook-style endpoint (JSON POST → ``200 {"id": …}``) that counts
requests and distinct ``Idempotency-Key`` values, so a duplicate or a lost message shows.
Customer reminders go out on e-mail, SMS or push (duly's ``webhook`` channel is for
operations alerts), so ``--channel push`` (default) posts them as push-gateway JSON to the
receiver's ``/webhook`` path and ``--channel sms`` as SMS-gateway JSON to ``/sms``.

Printed, not asserted. 500,000 reminders a day is ~6/s on average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, create_engine, func, insert, select, text, update
from sqlalchemy.engine import make_url

from duly.banking.schema import customer_pii, customers
from duly.clock import SystemClock
from duly.config import NotifySettings
from duly.db import upgrade
from duly.engine.store.sql import SqlStore, create_db_engine
from duly.logs import configure_logging
from duly.notify.schema import deliveries, reminders
from duly.operations.notifications.wiring import build_notifications
from duly.operations.outbox import outbox
from duly.operations.transfers.models import scheduled_transfers


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{platform.node()} · {platform.system()} {platform.machine()} · {cpu} · "
            f"{os.cpu_count()} CPUs · Python {platform.python_version()}")  # fmt: skip


# -- the receiver (another process) ---------------------------------------------------


def receiver(port: int, ready: MpEvent) -> None:
    """A minimal HTTP/1.1 keep-alive receiver on asyncio: ``200 {"id": …}`` for every
    POST; ``GET /stats`` → ``{"requests": …, "keys": …}`` (distinct Idempotency-Key)."""
    keys: set[bytes] = set()
    count = 0

    class Proto(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t: Any = transport
            self.buf = b""

        def data_received(self, data: bytes) -> None:
            nonlocal count
            self.buf += data
            while True:
                head_end = self.buf.find(b"\r\n\r\n")
                if head_end < 0:
                    return
                head = self.buf[:head_end].lower()
                length = 0
                key = b""
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"idempotency-key":
                        key = value.strip()
                end = head_end + 4 + length
                if len(self.buf) < end:
                    return
                self.buf = self.buf[end:]
                if head.startswith(b"get /stats"):
                    body = json.dumps({"requests": count, "keys": len(keys)}).encode()
                else:
                    count += 1
                    keys.add(key)
                    body = b'{"id": "m%d"}' % count
                self.t.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Proto, "127.0.0.1", port)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


def stats(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
        data: dict[str, int] = json.loads(r.read())
    return data


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the store ------------------------------------------------------------------------


def open_store(pg_url: str | None, tmp: str) -> tuple[str, str | None]:
    if pg_url is None:
        return f"sqlite:///{Path(tmp) / 'bench.db'}", None
    name = f"duly_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(pg_url).set(database=name).render_as_string(hide_password=False), name


def seed(store: SqlStore, n: int, customers_n: int, channel: str) -> None:
    now = datetime.now(UTC)
    # Transfers execute at a wall-clock minute (local_time HH:MM): 240 distinct instants
    # from three hours ahead; every amount differs.
    execute_base = (now + timedelta(hours=3)).replace(second=0, microsecond=0)
    with store.engine.begin() as conn:
        conn.execute(insert(customers), [
            {"id": c + 1, "external_id": f"c{c}", "tier": "standard", "timezone": "UTC",
             "locale": "en", "created_at": now, "updated_at": now,
             "notification_prefs": {"channels": [channel], "push_token": f"dev-{c:08d}"}}
            for c in range(customers_n)])  # fmt: skip
        conn.execute(insert(customer_pii), [
            {"customer_id": c + 1, "phone": f"+1555{c:07d}", "updated_at": now}
            for c in range(customers_n)])  # fmt: skip
        rows = []
        for i in range(n):
            at = execute_base + timedelta(minutes=i % 240)
            rows.append({
                "id": i + 1, "request_key": f"r{i}", "request_hash": "x",
                "customer_id": i % customers_n + 1, "from_account": f"ACC{i % customers_n:08d}",
                "to_account": "SHOP00000001", "amount_minor": 1000 + i, "currency": "USD",
                "local_date": at.date(), "local_time": at.strftime("%H:%M"), "timezone": "UTC",
                "convention": "none", "execution_date": at.date(), "max_attempts": 3,
                "retry_every_seconds": 3600, "retry_window_seconds": 86400,
                "transfer_key": f"st-{i}", "execute_at": at, "status": "scheduled",
                "next_attempt_at": at, "created_at": now, "updated_at": now})  # fmt: skip
        conn.execute(insert(scheduled_transfers), rows)
        conn.execute(insert(outbox), [
            {"event_type": "transfer.scheduled", "aggregate": "transfer",
             "aggregate_id": str(i + 1), "dedupe_key": f"transfer:{i + 1}:scheduled",
             "payload": {"status": "scheduled"}, "created_at": now} for i in range(n)])  # fmt: skip


def settings_for(args: argparse.Namespace, port: int) -> NotifySettings:
    path = "/webhook" if args.channel == "push" else "/sms"
    return NotifySettings(
        **{args.channel: {"url": f"http://127.0.0.1:{port}{path}"}},
        reminders={"offsets": ["1h"], "quiet_channels": []},
        delivery={"batch": args.batch, "concurrency": args.concurrency, "poll_seconds": 0.2},
    )


# -- a worker process -----------------------------------------------------------------


def worker(
    url: str, args: argparse.Namespace, port: int, ready: MpEvent, stop: MpEvent, cpu: Any
) -> None:
    """``duly worker``'s notification loops, until ``stop``; puts the CPU seconds this
    process used while the loops ran (all threads) on ``cpu``."""
    configure_logging("info", "json")
    used = 0.0

    async def main() -> None:
        store = SqlStore(create_db_engine(url, pool_size=10))
        parts = build_notifications(settings_for(args, port), store, SystemClock())
        runner = parts.runner()
        nonlocal used
        await runner.start()
        started = time.process_time()
        ready.set()
        await asyncio.to_thread(stop.wait)
        used = time.process_time() - started
        await runner.stop()
        await parts.aclose()
        store.dispose()

    asyncio.run(main())
    cpu.put(used)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(args: argparse.Namespace) -> None:
    configure_logging("info", "json")
    ctx = multiprocessing.get_context("spawn")
    port = free_port()
    rx_ready = ctx.Event()
    rx = ctx.Process(target=receiver, args=(port, rx_ready), daemon=True)
    rx.start()
    rx_ready.wait(10)
    tmp = tempfile.TemporaryDirectory()
    url, pg_name = open_store(args.pg, tmp.name)
    engine = create_db_engine(url, pool_size=5)
    upgrade(engine)
    store = SqlStore(engine)
    clock = SystemClock()
    workers: list[Any] = []
    stop = ctx.Event()
    cpu = ctx.Queue()
    try:
        seed(store, args.n, min(args.n, 1000), args.channel)
        parts = build_notifications(settings_for(args, port), store, clock)
        parts.relay.batch = 1000
        start = time.perf_counter()
        while parts.relay.pump():
            pass
        plan_s = time.perf_counter() - start
        parts.close()
        with store.engine.connect() as conn:
            planned = conn.execute(select(func.count()).select_from(reminders)).scalar_one()
        assert planned == args.n, planned

        readies = []
        for _ in range(args.procs):
            ready = ctx.Event()
            p = ctx.Process(target=worker, args=(url, args, port, ready, stop, cpu), daemon=True)
            p.start()
            workers.append(p)
            readies.append(ready)
        for ready in readies:
            ready.wait(60)

        first = clock.now() + timedelta(seconds=2)
        spacing = 1.0 / args.rate
        with store.engine.begin() as conn:  # spread the send times at `rate` per second
            ids = conn.execute(select(reminders.c.id, reminders.c.delivery_id)
                               .order_by(reminders.c.id)).all()  # fmt: skip
            times = [first + timedelta(seconds=k * spacing) for k in range(len(ids))]
            conn.execute(update(reminders).where(reminders.c.id == bindparam("rid"))
                         .values(send_at=bindparam("at")),
                         [{"rid": rid, "at": at} for (rid, _), at in zip(ids, times, strict=True)])  # fmt: skip
            conn.execute(update(deliveries).where(deliveries.c.id == bindparam("did"))
                         .values(next_attempt_at=bindparam("at")),
                         [{"did": did, "at": at} for (_, did), at in zip(ids, times, strict=True)])  # fmt: skip
        deadline = time.monotonic() + 2 + args.n / args.rate + 90
        while time.monotonic() < deadline:
            time.sleep(0.25)
            with store.engine.connect() as conn:
                left = conn.execute(select(func.count()).select_from(deliveries)
                                    .where(deliveries.c.status != "sent")).scalar_one()  # fmt: skip
            if not left:
                break
        stop.set()
        cpu_s = sum(cpu.get(timeout=30) for _ in workers)
        for p in workers:
            p.join(30)
        with store.engine.connect() as conn:
            rows = conn.execute(
                select(reminders.c.send_at, deliveries.c.sent_at).join(
                    deliveries, deliveries.c.id == reminders.c.delivery_id
                )
            ).all()
        received = stats(port)
        sent = [r for r in rows if r.sent_at is not None]
        late = [(r.sent_at - r.send_at).total_seconds() for r in sent]
        span = (max(r.sent_at for r in sent) - first).total_seconds()
        print(f"machine:   {machine()}")
        print(f"store:     {'postgresql' if args.pg else 'sqlite'} · n={args.n} · offered "
              f"{args.rate:,.0f}/s · {args.channel} → local receiver · {args.procs} worker "
              f"process(es) · sender batch {args.batch}, {args.concurrency} in flight")  # fmt: skip
        print(
            f"plan/s:    {args.n / plan_s:,.0f}  (outbox → reminder + delivery rows, one process)"
        )
        print(f"deliver/s: {len(sent) / span:,.0f}  ({len(sent)}/{args.n} sent in {span:.1f} s)")
        print(f"lateness:  p50 {statistics.median(late):.3f} s · p99 {percentile(late, 0.99):.3f} s"
              f" · max {max(late):.3f} s")  # fmt: skip
        print(f"worker CPU: {cpu_s:.2f} s in all, {1000 * cpu_s / args.n:.3f} ms per reminder "
              "(all threads of the worker processes, from start to stop)")  # fmt: skip
        print(f"receiver:  {received['requests']} requests, {received['keys']} distinct keys")
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"load avg:  {load} (1, 5, 15 min) at the end — other work on the machine counts")
    finally:
        stop.set()
        for p in workers:
            if p.is_alive():
                p.terminate()
        store.dispose()
        if pg_name and args.pg:
            admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))
            admin.dispose()
        rx.terminate()
        tmp.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--procs", type=int, default=1, help="worker processes sending")
    parser.add_argument("--channel", choices=("push", "sms"), default="push")
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--pg", default=None, help="a PostgreSQL server URL (a database is created)"
    )
    run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
