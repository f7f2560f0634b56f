"""``duly history list|export`` and ``duly token create --customer`` (CliRunner on a migrated
SQLite file)."""

from __future__ import annotations

import csv
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

import historytest as h
from duly.auth.service import TokenService
from duly.cli import app
from duly.clock import SystemClock
from duly.engine.store.sql import SqlStore
from duly.operations.history.export import CSV_COLUMNS

RUN = CliRunner()


def cli(*args: str) -> tuple[int, str, str]:
    result = RUN.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def ann(cli_store: SqlStore) -> int:
    cid = h.customer(cli_store.engine, "ann", name="Anaïs Lefèvre", timezone="Europe/Paris")
    for k in range(5):
        h.transfer(cli_store.engine, cid, h.T0 + timedelta(days=k), memo=f"bill {k}",
                   amount_minor=1000 * (k + 1))  # fmt: skip
    h.transfer(cli_store.engine, cid, h.T0 + timedelta(days=9), status="failed",
               error_code="INSUFFICIENT_FUNDS", memo="@risky")  # fmt: skip
    return cid


def test_list_pages_with_a_cursor_and_filters(ann: int) -> None:
    code, out, err = cli("history", "list", str(ann), "--limit", "4")
    assert code == 0, err
    assert "INSUFFICIENT_FUNDS" in out and "+01:00" in out and "****0042" in out
    assert "DE-PAYEE-00042" not in out
    cursor = out.split("next page: --cursor ", 1)[1].split()[0]
    code, rest, _ = cli("history", "list", str(ann), "--limit", "4", "--cursor", cursor)
    assert code == 0 and "next page" not in rest and "2026-03-03T10:00:00+01:00" in rest
    code, out, _ = cli("history", "list", str(ann), "--status", "failed", "--from", "2026-03-10")
    assert code == 0 and "INSUFFICIENT_FUNDS" in out and "bill" not in out


def test_export_csv(ann: int, tmp_path: Path) -> None:
    target = tmp_path / "h.csv"
    code, out, err = cli("history", "export", str(ann), "--format", "csv", "-o", str(target),
                         "--min-amount", "20")  # fmt: skip
    assert code == 0, err
    assert f"wrote 4 entries of customer {ann}" in out
    with target.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 5
    assert [r[CSV_COLUMNS.index("amount")] for r in rows[1:]] == [
        "50.00",
        "40.00",
        "30.00",
        "20.00",
    ]


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils not installed")
def test_export_pdf(ann: int, tmp_path: Path) -> None:
    target = tmp_path / "h.pdf"
    code, _, err = cli("history", "export", str(ann), "--format", "pdf", "-o", str(target))
    assert code == 0, err
    text = subprocess.run(["pdftotext", str(target), "-"], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip
    assert "Anaïs Lefèvre" in text and "page 1 of 1" in text and "'@risky" not in text
    assert "@risky" in text  # the PDF shows text as written; only the CSV neutralises it


@pytest.mark.parametrize(
    "args",
    [
        ["list", "987654"],
        ["list", "{ann}", "--kind", "wire"],
        ["list", "{ann}", "--status", "lost"],
        ["list", "{ann}", "--from", "2026-13-01"],
        ["list", "{ann}", "--from", "2026-03-05", "--to", "2026-03-01"],
        ["list", "{ann}", "--min-amount", "ten"],
        ["list", "{ann}", "--cursor", "garbage"],
        ["export", "{ann}", "--format", "xlsx", "-o", "{out}"],
        ["export", "{ann}", "--format", "csv", "-o", "{out}", "--max-amount", "-1"],
    ],
)
def test_bad_input_exits_2_and_writes_nothing(ann: int, tmp_path: Path, args: list[str]) -> None:
    out = tmp_path / "never.csv"
    code, _, err = cli("history", *[a.format(ann=ann, out=out) for a in args])
    assert code == 2 and err.startswith("error: "), err
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_token_create_binds_a_channel_token_to_customers(cli_store: SqlStore, ann: int) -> None:
    code, out, err = cli("token", "create", "--role", "channel", "--name", "web",
                         "--customer", str(ann))  # fmt: skip
    assert code == 0, err
    assert f"for customers {ann}" in err
    principal = TokenService(cli_store.engine, SystemClock()).authenticate(
        out.strip(), SystemClock().now()
    )
    assert principal is not None and principal.customers == frozenset({ann})
    assert principal.acts_for(ann) and not principal.acts_for(ann + 1)
    code, _, err = cli("token", "create", "--role", "operator", "--name", "ops",
                       "--customer", str(ann))  # fmt: skip
    assert code == 2 and "only a channel token" in err
    code, _, err = cli("token", "create", "--role", "channel", "--name", "web2",
                       "--customer", "987654")  # fmt: skip
    assert code == 2 and "no customer 987654" in err
