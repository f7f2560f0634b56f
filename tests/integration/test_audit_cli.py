"""``duly audit keygen|verify|export|list|checkpoint|prune`` (CliRunner on a migrated SQLite file)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from audittest import unguarded
from duly.audit import AuditEntry, AuditLog, acting_as, record, system_actor
from duly.audit import export as export_module
from duly.cli import app
from duly.clock import ManualClock
from duly.config import AuditSettings
from duly.engine.store.sql import SqlStore

RUN = CliRunner()
AT = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def cli(*args: str) -> tuple[int, str, str]:
    result = RUN.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def env(cli_store: SqlStore) -> SqlStore:
    """Five events, the first three by node-a and two by a token; nothing signed yet."""
    with acting_as(system_actor("node-a")):
        for n in range(3):
            write(cli_store, AuditEntry("schedule.pause", "schedule", f"s{n}", {"n": n}))
    with acting_as(system_actor("node-b")):
        write(cli_store, AuditEntry("run.fire", "run", 7, {"job": "duly.noop"}))
        write(cli_store, AuditEntry("run.claim", "run", 7, {"node": "node-b"}))
    return cli_store


def write(store: SqlStore, entry: AuditEntry, at: datetime = AT) -> None:
    with store.engine.begin() as conn:
        record(conn, [entry], at)


def test_keygen_writes_a_pair_once_and_prints_its_id(cli_store: SqlStore, tmp_path: Path) -> None:
    code, out, err = cli("audit", "keygen", "--out", str(tmp_path / "keys" / "bank.pem"))
    assert code == 0, err
    assert (tmp_path / "keys" / "bank.pem").stat().st_mode & 0o077 == 0
    assert (tmp_path / "keys" / "bank.pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY")
    assert "key id:" in out and "bank.pub" in out
    before = (tmp_path / "keys" / "bank.pem").read_bytes()

    code, _, err = cli("audit", "keygen", "--out", str(tmp_path / "keys" / "bank.pem"))

    assert code == 2 and "refusing to overwrite" in err
    assert (tmp_path / "keys" / "bank.pem").read_bytes() == before


def test_keygen_defaults_to_the_configured_key_file(cli_store: SqlStore, tmp_path: Path) -> None:
    code, _, err = cli("audit", "keygen")
    assert code == 0, err
    assert (tmp_path / "duly-audit-key.pem").exists() and (tmp_path / "duly-audit-key.pub").exists()


def test_checkpoint_then_verify_reports_the_chain(env: SqlStore) -> None:
    code, out, err = cli("audit", "checkpoint")
    assert code == 0, err
    assert "checkpoint at 5 signed by key" in out
    code, out, _ = cli("audit", "checkpoint")
    assert code == 0 and "the head (5) is signed already" in out

    code, out, err = cli("audit", "verify")

    assert code == 0, out + err
    assert out.splitlines()[0] == "verified 5 events 1..5, 1 checkpoints, last checkpoint 5"
    assert "unsealed: 0; unsigned tail: 0 events" in out
    code, out, _ = cli("audit", "verify", "--json", "--from", "2")
    report = json.loads(out)
    assert code == 0 and report["ok"] is True
    assert (report["first_seq"], report["last_seq"], report["problem"]) == (2, 5, None)


def test_verify_names_the_first_bad_event_and_exits_1(env: SqlStore) -> None:
    assert cli("audit", "checkpoint")[0] == 0
    write(env, AuditEntry("run.succeed", "run", 7, {}))
    with unguarded(env) as conn:
        conn.execute(text("UPDATE audit_events SET object_id = 's9' WHERE seq = 3"))

    code, out, _ = cli("audit", "verify")

    assert code == 1
    assert out.startswith("FAILED at event 3: event 3 was changed after it was sealed")
    assert "events 1..2 verified before it" in out
    code, out, _ = cli("audit", "verify", "--json")
    assert code == 1 and json.loads(out)["problem"]["seq"] == 3


def test_verify_without_any_key_is_a_usage_error(env: SqlStore) -> None:
    code, _, err = cli("audit", "verify")
    assert code == 2 and "no audit key" in err


def test_an_export_verifies_on_a_machine_without_the_database(
    env: SqlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("audit", "checkpoint")[0] == 0
    write(env, AuditEntry("run.succeed", "run", 7, {}))
    monkeypatch.setattr(export_module, "PROGRESS_EVERY", 2)
    code, _, err = cli("audit", "export", "-o", str(tmp_path / "trail.jsonl"))
    assert code == 0, err
    assert "exported 2 events…" in err and "exported 6 events to" in err
    code, _, err = cli("audit", "export", "-o", str(tmp_path / "trail.jsonl"))
    assert code == 2 and "cannot write" in err  # an export is never overwritten

    nowhere = tmp_path / "none.db"  # opening it would create it
    monkeypatch.setenv("DULY_DATABASE_URL", f"sqlite:///{nowhere}")
    code, out, err = cli("audit", "verify", "--file", str(tmp_path / "trail.jsonl"),
                         "--public-key", str(tmp_path / "duly-audit-key.pub"))  # fmt: skip

    assert code == 0, out + err
    assert out.splitlines()[0] == "verified 6 events 1..6, 1 checkpoints, last checkpoint 5"
    assert "unsigned tail: 1 events" in out
    assert not nowhere.exists()  # no database was opened


def test_a_tampered_export_fails_and_file_needs_a_key(env: SqlStore, tmp_path: Path) -> None:
    assert cli("audit", "checkpoint")[0] == 0
    code, out, _ = cli("audit", "export", "-o", "-", "--from", "2", "--to", "4")
    assert code == 0
    lines = out.splitlines()
    header = json.loads(lines[0])
    assert header["type"] == "header" and (header["from"], header["to"]) == (2, 4)
    assert [json.loads(line).get("seq") for line in lines[1:]] == [2, 3, 4]
    lines[2] = lines[2].replace('"node-a"', '"node-x"')
    (tmp_path / "cut.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    code, out, _ = cli("audit", "verify", "--file", str(tmp_path / "cut.jsonl"),
                       "--public-key", str(tmp_path / "duly-audit-key.pub"))  # fmt: skip

    assert code == 1 and out.startswith("FAILED at event 3:")
    code, _, err = cli("audit", "verify", "--file", str(tmp_path / "cut.jsonl"))
    assert code == 2 and "--public-key" in err


def test_list_filters_newest_first(env: SqlStore) -> None:
    code, out, err = cli("audit", "list", "--json", "--actor", "system:node-a", "--limit", "2")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["seq"] for r in rows] == [3, 2]
    assert rows[0]["actor_name"] == "node-a" and rows[0]["details"] == {"n": 2}

    code, out, _ = cli("audit", "list", "--json", "--object-type", "run", "--object-id", "7",
                       "--action", "run.claim")  # fmt: skip
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [5]
    code, out, _ = cli("audit", "list", "--json", "--since", "2026-03-02T09:30:00+00:00",
                       "--until", "2026-03-02T09:30:01+00:00")  # fmt: skip
    assert len(out.splitlines()) == 5
    code, out, _ = cli("audit", "list", "--json", "--until", "2026-03-02T09:00:00Z")
    assert code == 0 and out == ""

    code, out, _ = cli("audit", "list")
    assert code == 0 and "schedule.pause" in out and "run/7" in out and "system:node-b" in out
    code, _, err = cli("audit", "list", "--since", "yesterday")
    assert code == 2 and "--since" in err


def test_prune_removes_checkpointed_ranges_older_than_the_retention(
    env: SqlStore, tmp_path: Path
) -> None:
    past = ManualClock(datetime.now(UTC) - timedelta(days=40))
    settings = AuditSettings(signing_key_file=tmp_path / "duly-audit-key.pem")
    assert AuditLog(env.engine, past, settings).checkpoint(force=True) is not None
    write(env, AuditEntry("run.succeed", "run", 7, {}))

    code, out, err = cli("audit", "prune", "--retention-days", "60")
    assert code == 0, err
    assert out.strip() == "nothing to prune: no checkpoint older than 60 days"

    code, out, err = cli("audit", "prune", "--retention-days", "30")

    assert code == 0, err
    assert out.strip() == "pruned 5 events through 5 (older than 30 days)"
    code, out, _ = cli("audit", "list", "--json", "--action", "audit.prune")
    pruned = json.loads(out.splitlines()[0])
    assert pruned["actor"].startswith("cli:") and pruned["details"]["through_seq"] == 5
    code, out, err = cli("audit", "verify")
    assert code == 0, out + err
    assert "verified 2 events 6..7" in out
