"""``duly notify test-send``, ``duly deliveries list``, ``duly reminders list``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from conftest import Mailbox, Receiver
from duly.cli import app
from duly.db import upgrade
from duly.engine.store.sql import SqlStore, create_db_engine


@pytest.fixture
def env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver, smtp_server: Mailbox
) -> Iterator[SqlStore]:
    structlog.reset_defaults()
    url = f"sqlite:///{tmp_path / 'duly.db'}"
    engine = create_db_engine(url)
    upgrade(engine)
    engine.dispose()
    (tmp_path / "duly.yaml").write_text(
        f"database_url: {url}\n"
        "notify:\n"
        f"  email: {{host: 127.0.0.1, port: {smtp_server.port}, starttls: false}}\n"
        f"  webhooks: [{{name: ops, url: '{receiver.at('/ops')}', format: slack}}]\n"
        f"  sms: {{url: '{receiver.at('/sms')}'}}\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    store = SqlStore(url)
    yield store
    store.dispose()
    structlog.reset_defaults()


def test_test_send_on_each_channel(env: SqlStore, receiver: Receiver, smtp_server: Mailbox) -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["notify", "test-send", "--channel", "webhook", "--to", "ops",
                              "--text", "hello ops"])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "sent via webhook to webhook:ops: 200" in out.output
    assert receiver.on("/ops")[0].body == {"text": "*duly test message*\nhello ops\n"}
    out = runner.invoke(app, ["notify", "test-send", "--channel", "email", "--to", "ops@bank.test"])
    assert out.exit_code == 0 and "o***@bank.test" in out.output
    assert len(smtp_server.to("ops@bank.test")) == 1
    out = runner.invoke(app, ["notify", "test-send", "--channel", "sms", "--to", "+15550100999"])
    assert out.exit_code == 0 and "+15*******99" in out.output
    out = runner.invoke(app, ["notify", "test-send", "--channel", "push", "--to", "x"])
    assert out.exit_code == 2 and "push is not configured" in out.output
    receiver.fail_next.append(503)
    out = runner.invoke(app, ["notify", "test-send", "--channel", "sms", "--to", "+15550100999"])
    assert out.exit_code == 1 and "failed (transient): HTTP 503" in out.output


def test_lists_show_masked_rows(env: SqlStore) -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["deliveries", "list"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["reminders", "list", "--status", "planned"])
    assert out.exit_code == 0, out.output


def test_reminders_offsets_on_one_transfer(env: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    from sqlalchemy import select

    from duly.banking.customers import Customers, NewAccount, NewCustomer
    from duly.clock import SystemClock
    from duly.engine.client import EngineClient
    from duly.notify.schema import reminder_overrides
    from duly.operations import NewTransfer, ScheduledTransfers, operations_registry

    # structlog caches the first invocation's stderr; each CliRunner closes its own.
    monkeypatch.setenv("DULY_LOGGING__LEVEL", "warning")
    clock = SystemClock()
    people = Customers(env.engine, clock)
    ann = people.add(NewCustomer("ann", email="ann@example.com"))
    people.open_account(NewAccount("GB29NWBK60161331926819", "GBP", ann.id))
    people.open_account(NewAccount("GB94BARC10201530093459", "GBP", None))
    row, _ = ScheduledTransfers(EngineClient(env, operations_registry, clock)).create(
        NewTransfer(request_key="t-cli", from_account="GB29NWBK60161331926819",
                    to_account="GB94BARC10201530093459", amount="10.00", currency="GBP",
                    local_date=(clock.now() + timedelta(days=20)).date(), local_time="10:00")
    )  # fmt: skip
    runner = CliRunner()
    out = runner.invoke(app, ["reminders", "offsets", "--transfer", str(row.id), "5d", "2h"])
    assert out.exit_code == 0, out.output
    assert f"transfer {row.id}: reminder offsets 5d 2h; 2 reminder(s) planned" in out.output
    with env.engine.connect() as conn:
        assert conn.execute(select(reminder_overrides.c.offsets)).scalar() == ["5d", "2h"]
    out = runner.invoke(app, ["reminders", "offsets", "--transfer", str(row.id), "3 days"])
    assert out.exit_code == 2 and "bad reminder offset" in out.output
    out = runner.invoke(app, ["reminders", "offsets", "--transfer", str(row.id), "--clear"])
    assert out.exit_code == 0 and "offsets default" in out.output, out.output
    out = runner.invoke(app, ["reminders", "offsets", "--payment", "99", "2d"])
    assert out.exit_code == 2 and "no payment 99" in out.output
    out = runner.invoke(app, ["reminders", "offsets", "2d"])
    assert out.exit_code == 2 and "--transfer ID or --payment ID" in out.output
