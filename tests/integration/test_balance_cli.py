"""``duly errors …`` and ``duly balance-check …`` over a night checked on the ledger (SQLite file)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner

from duly.banking.customers import Customers, NewAccount, NewCustomer
from duly.banking.ledger import LedgerBank
from duly.cli import app
from duly.clock import ManualClock
from duly.db import upgrade
from duly.engine.store.base import RunFilter
from duly.engine.store.sql import SqlStore, create_db_engine
from duly.operations.balance_check.jobs import balance_check_registry
from duly.operations.balance_check.models import JOB_NAME
from duly.testing import EngineHarness

T0 = datetime(2026, 3, 2, 22, 0, tzinfo=UTC)
PERIOD = ["--since", "2026-03-02T00:00:00+00:00", "--until", "2026-03-03T00:00:00+00:00"]


@pytest.fixture
def night(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A database where one night was checked: 2 PASS, 1 FAIL, 2 ERROR (MISSING_DATA)."""
    structlog.reset_defaults()
    url = f"sqlite:///{tmp_path / 'duly.db'}"
    engine = create_db_engine(url)
    upgrade(engine)
    engine.dispose()
    monkeypatch.setenv("DULY_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    store = SqlStore(url)
    clock = ManualClock(T0)
    people = Customers(store.engine, clock)
    bank = LedgerBank(store.engine, clock)
    ids = {}
    for name, minimum, funded in [("ok1", 100, 100), ("ok2", 100, 500), ("low", 100, 99),
                                  ("gone", 100, None), ("gone2", 100, None)]:  # fmt: skip
        row = people.add(NewCustomer(name, tier="premium", min_balance_minor=minimum,
                                     min_balance_currency="USD"))  # fmt: skip
        ids[name] = row.id
        if funded is not None:
            people.open_account(NewAccount(f"US00{name.upper()}000000001234", "USD", row.id))
            bank.fund(f"US00{name.upper()}000000001234", funded, "USD", f"f-{name}")

    async def run() -> int:
        registry = balance_check_registry(ports=lambda *_: bank)
        async with EngineHarness(store, registry, clock) as h:
            r, _ = h.client.trigger(JOB_NAME)
            await h.advance(timedelta(minutes=1))
            await h.settle()
        return r.id

    import asyncio

    run_id = asyncio.run(run())
    yield {"store": store, "ids": ids, "run_id": run_id}
    store.dispose()
    structlog.reset_defaults()


def test_results_of_a_run_and_only_its_failures(night: dict[str, Any]) -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["balance-check", "results", str(night["run_id"])])
    assert out.exit_code == 0, out.output
    assert '"passed": 2' in out.output and '"failed": 1' in out.output
    assert '"errors_by_code": {\n    "MISSING_DATA": 2' in out.output
    assert "5 result(s)" in out.output
    fails = runner.invoke(app, ["balance-check", "results", str(night["run_id"]), "--result", "fail"])
    assert fails.exit_code == 0 and "1 result(s)" in fails.output
    assert f"│ {night['ids']['low']} " in fails.output.replace("┃", "│")
    assert "99" not in fails.output.split("run ")[1].split("{")[0]
    bad = runner.invoke(app, ["balance-check", "results", str(night["run_id"]), "--result", "MAYBE"])
    assert bad.exit_code == 2 and "expected PASS, FAIL or ERROR" in bad.output
    missing = runner.invoke(app, ["balance-check", "results", "999"])
    assert missing.exit_code == 2 and "no daily_balance_check run 999" in missing.output


def test_errors_summary_trends_top_list_and_resolve(night: dict[str, Any]) -> None:
    runner = CliRunner()
    summary = runner.invoke(app, ["errors", "summary", *PERIOD])
    assert summary.exit_code == 0, summary.output
    assert "MISSING_DATA" in summary.output and "total: 2" in summary.output
    trends = runner.invoke(app, ["errors", "trends", *PERIOD])
    lines = trends.output.strip().splitlines()
    assert len(lines) == 24 and lines[22].startswith("2026-03-02T22:00:00+00:00       2 ")
    top = runner.invoke(app, ["errors", "top", *PERIOD, "--limit", "5"])
    assert str(night["ids"]["gone"]) in top.output and str(night["ids"]["gone2"]) in top.output
    listed = runner.invoke(app, ["errors", "list", "--customer", str(night["ids"]["gone"])])
    assert listed.exit_code == 0, listed.output
    assert "MISSING_DATA" in listed.output and "balance check history" in listed.output
    assert "Traceback" not in listed.output
    first = night["store"]
    from duly.operations.balance_check.monitoring import recent_errors

    err_id = recent_errors(first.engine, limit=1)[0].id
    ok = runner.invoke(app, ["errors", "resolve", str(err_id), "--by", "ana", "--notes", "account opened"])
    assert ok.exit_code == 0 and "resolved by ana" in ok.output
    again = runner.invoke(app, ["errors", "resolve", str(err_id), "--by", "bob", "--notes", "x"])
    assert again.exit_code == 2 and "already resolved by ana" in again.output
    unresolved = runner.invoke(app, ["errors", "list", "--unresolved"])
    assert unresolved.output.count("MISSING_DATA") == 1
    period = runner.invoke(app, ["errors", "summary", "--since", "2026-03-03T00:00:00+00:00",
                                 "--until", "2026-03-02T00:00:00+00:00"])  # fmt: skip
    assert period.exit_code == 2 and "--since must be before --until" in period.output


def test_backfill_is_a_trigger_with_the_business_date(night: dict[str, Any]) -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["trigger", JOB_NAME, "--arg", "business_date=2026-03-01"])
    assert out.exit_code == 0 and "queued" in out.output, out.output
    runs = night["store"].run_list(RunFilter(job_name=JOB_NAME, limit=5))
    assert runs[0].args == {"business_date": "2026-03-01"} and runs[0].max_attempts == 4
    missed = runner.invoke(app, ["balance-check", "missed"])
    assert missed.exit_code == 0 and "no missed nights" in missed.output  # no schedule yet
