"""``duly token create|list|revoke`` (CliRunner on a migrated SQLite file)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from duly.auth.schema import tokens
from duly.auth.service import TokenService
from duly.auth.tokens import hash_token
from duly.cli import app
from duly.clock import SystemClock
from duly.engine.store.sql import SqlStore

RUN = CliRunner()
TOKEN = re.compile(r"^duly_[a-z2-7]{8}_[a-z2-7]{52}$")


@pytest.fixture
def env(cli_store: SqlStore) -> SqlStore:
    return cli_store


def cli(*args: str) -> tuple[int, str, str]:
    result = RUN.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def count(store: SqlStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(tokens)).scalar_one())


def create(*args: str) -> str:
    code, out, err = cli("token", "create", *args)
    assert code == 0, err
    return out.strip()


def test_create_prints_the_token_once_and_it_authenticates(env: SqlStore) -> None:
    code, out, err = cli("token", "create", "--role", "operator", "--name", "ops-bot",
                         "--expires-in", "90d", "--by", "alice")  # fmt: skip
    assert code == 0, err
    text = out.strip()
    assert TOKEN.match(text), out
    assert "will not be shown again" in err and text not in err
    assert "ops-bot (operator)" in err
    principal = TokenService(env.engine, SystemClock()).authenticate(text, SystemClock().now())
    assert principal is not None and principal.role.value == "operator"
    row = TokenService(env.engine, SystemClock()).list()[0]
    assert row.created_by == "alice" and row.expires_at is not None
    assert row.expires_at - row.created_at == timedelta(days=90)


def test_list_shows_tokens_but_never_secrets(env: SqlStore) -> None:
    a = create("--role", "admin", "--name", "root-admin")
    create("--role", "channel", "--name", "backend")
    assert cli("token", "revoke", "root-admin", "--by", "bob")[0] == 0
    code, out, _ = cli("token", "list")
    assert code == 0
    assert "root-admin" in out and "backend" in out and "channel" in out and "by bob" in out
    for header in ("id", "name", "role", "created", "expires", "last used", "revoked"):
        assert header in out
    assert a.split("_")[1] in out  # the public id is shown
    assert a.split("_", 2)[2] not in out and hash_token(a) not in out


def test_revoke_by_id_stops_the_token(env: SqlStore) -> None:
    text = create("--role", "auditor", "--name", "auditor-1")
    token_id = text.split("_")[1]
    code, out, _ = cli("token", "revoke", token_id)
    assert code == 0 and out.strip() == f"token {token_id} (auditor-1) revoked"
    assert TokenService(env.engine, SystemClock()).authenticate(text, SystemClock().now()) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--role", "root", "--name", "x"), "error: unknown role 'root'"),
        (("--role", "admin", "--name", "x", "--expires-in", "soon"), "error: bad duration 'soon'"),
        (("--role", "admin", "--name", "x", "--expires-in", "0d"), "error: bad duration '0d'"),
        (("--role", "admin", "--name", "bad name"), "error: bad token name 'bad name'"),
    ],
)
def test_bad_create_input_is_one_line_and_changes_nothing(
    env: SqlStore, args: tuple[str, ...], message: str
) -> None:
    code, out, err = cli("token", "create", *args)
    assert code == 2 and out == ""
    assert err.startswith(message) and err.count("\n") == 1, err
    assert count(env) == 0


def test_duplicate_name_is_refused(env: SqlStore) -> None:
    create("--role", "admin", "--name", "ops")
    code, out, err = cli("token", "create", "--role", "operator", "--name", "ops")
    assert code == 2 and out == ""
    assert err.startswith("error: a token named 'ops' exists") and err.count("\n") == 1
    assert count(env) == 1


def test_revoke_unknown_is_refused(env: SqlStore) -> None:
    create("--role", "admin", "--name", "ops")
    code, _, err = cli("token", "revoke", "ghost")
    assert code == 2 and err == "error: no token 'ghost' to revoke\n"
    assert all(r.revoked_at is None for r in TokenService(env.engine, SystemClock()).list())
