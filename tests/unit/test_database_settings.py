"""The ``database`` settings: defaults, bad values, and how they reach the engine's connections."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text

from duly.config import ConfigError, DatabaseSettings, Settings, load_settings
from duly.engine.store.connect import ConnectOptions, create_db_engine, pg_connect_params
from duly.runtime import connect_options, db_engine

PG = "postgresql+psycopg://duly@db.internal:5432/duly"


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [name for name in os.environ if name.upper().startswith("DULY_")]:
        monkeypatch.delenv(name)


def config_error(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ)
    return str(caught.value)


def test_defaults() -> None:
    d = load_settings(environ={}).database
    assert d == DatabaseSettings()
    assert (d.connect_timeout_seconds, d.statement_timeout_seconds) == (5, 30)
    assert (d.lock_timeout_seconds, d.idle_in_transaction_timeout_seconds) == (10, 60)
    assert (d.response_timeout_seconds, d.response_timeout) == (None, 45)
    assert (d.keepalives_idle_seconds, d.keepalives_interval_seconds, d.keepalives_count) == (
        10,
        5,
        3,
    )
    assert d.tcp_user_timeout_seconds == 25
    assert (d.pool_timeout_seconds, d.pool_recycle_seconds) == (10, 1800)
    assert d.sqlite_busy_timeout_seconds == 30


def test_the_engine_defaults_are_the_settings_defaults() -> None:
    assert connect_options(Settings()) == ConnectOptions()


def test_every_setting_reaches_the_connect_options() -> None:
    environ = {
        "DULY_DATABASE__CONNECT_TIMEOUT_SECONDS": "3",
        "DULY_DATABASE__STATEMENT_TIMEOUT_SECONDS": "20",
        "DULY_DATABASE__LOCK_TIMEOUT_SECONDS": "2.5",
        "DULY_DATABASE__IDLE_IN_TRANSACTION_TIMEOUT_SECONDS": "0",
        "DULY_DATABASE__RESPONSE_TIMEOUT_SECONDS": "25",
        "DULY_DATABASE__KEEPALIVES_IDLE_SECONDS": "7",
        "DULY_DATABASE__KEEPALIVES_INTERVAL_SECONDS": "2",
        "DULY_DATABASE__KEEPALIVES_COUNT": "4",
        "DULY_DATABASE__TCP_USER_TIMEOUT_SECONDS": "15",
        "DULY_DATABASE__POOL_TIMEOUT_SECONDS": "4",
        "DULY_DATABASE__POOL_RECYCLE_SECONDS": "600",
        "DULY_DATABASE__SQLITE_BUSY_TIMEOUT_SECONDS": "12",
    }
    assert connect_options(load_settings(environ=environ)) == ConnectOptions(
        connect_timeout=3,
        statement_timeout=20,
        lock_timeout=2.5,
        idle_in_transaction_timeout=0,
        response_timeout=25,
        keepalives_idle=7,
        keepalives_interval=2,
        keepalives_count=4,
        tcp_user_timeout=15,
        pool_timeout=4,
        pool_recycle=600,
        sqlite_busy_timeout=12,
    )


def test_the_section_is_read_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "duly.yaml"
    path.write_text(yaml.safe_dump({"database": {"statement_timeout_seconds": 60}}))
    d = load_settings(path, environ={}).database
    assert (d.statement_timeout_seconds, d.response_timeout) == (60, 75)  # follows it
    (tmp_path / "empty.yaml").write_text("database:\n")
    assert load_settings(tmp_path / "empty.yaml", environ={}).database == DatabaseSettings()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        (
            {"DULY_DATABASE__LOCK_TIMEOUT_SECONDS": "30"},
            "database.lock_timeout_seconds = 30: must be less than "
            "database.statement_timeout_seconds (30): a wait for a lock is part of a statement "
            "(from DULY_DATABASE__LOCK_TIMEOUT_SECONDS)",
        ),
        (
            {"DULY_DATABASE__RESPONSE_TIMEOUT_SECONDS": "30"},
            "database.response_timeout_seconds = 30: must be greater than "
            "database.statement_timeout_seconds (30) so the server's own timeout ends a slow "
            "statement cleanly first (from DULY_DATABASE__RESPONSE_TIMEOUT_SECONDS)",
        ),
        (
            {
                "DULY_DATABASE__STATEMENT_TIMEOUT_SECONDS": "0",
                "DULY_DATABASE__RESPONSE_TIMEOUT_SECONDS": "8",
            },
            "database.response_timeout_seconds = 8: must be greater than "
            "database.lock_timeout_seconds (10)",
        ),
        (
            {"DULY_DATABASE__CONNECT_TIMEOUT_SECONDS": "1"},
            "database.connect_timeout_seconds = '1': must be between 2 and 600",
        ),
        (
            {"DULY_DATABASE__CONNECT_TIMEOUT_SECONDS": "2.5"},
            "database.connect_timeout_seconds = '2.5'",
        ),
        (
            {"DULY_DATABASE__STATEMENT_TIMEOUT_SECONDS": "-1"},
            "database.statement_timeout_seconds = '-1': must be ≥ 0",
        ),
        (
            {"DULY_DATABASE__POOL_RECYCLE_SECONDS": "0"},
            "database.pool_recycle_seconds = '0': must be > 0",
        ),
        (
            {"DULY_DATABASE__KEEPALIVES_COUNT": "0"},
            "database.keepalives_count = '0': must be between 1 and 100",
        ),
        (
            {"DULY_DATABASE__STATEMENT_TIMEOUT": "30"},
            "database.statement_timeout: unknown key (did you mean statement_timeout_seconds?",
        ),
    ],
)
def test_bad_values_are_one_clear_line(environ: dict[str, str], expected: str) -> None:
    message = config_error(environ)
    assert "\n" not in message
    assert expected in message, message


def test_zero_switches_a_limit_off_and_the_order_rules_with_it() -> None:
    d = DatabaseSettings(
        statement_timeout_seconds=0, lock_timeout_seconds=0, response_timeout_seconds=0
    )
    assert (d.statement_timeout_seconds, d.lock_timeout_seconds, d.response_timeout) == (0, 0, 0)
    assert DatabaseSettings(lock_timeout_seconds=0, response_timeout_seconds=31)
    assert DatabaseSettings(statement_timeout_seconds=0).response_timeout == 0  # any length goes


def test_an_explicit_response_timeout_wins() -> None:
    assert DatabaseSettings(response_timeout_seconds=90).response_timeout == 90


# -- what reaches the connections ----------------------------------------------------------


def test_libpq_parameters_of_the_defaults() -> None:
    assert pg_connect_params(ConnectOptions()) == {
        "connect_timeout": "5",
        "keepalives": "1",
        "keepalives_idle": "10",
        "keepalives_interval": "5",
        "keepalives_count": "3",
        "tcp_user_timeout": "25000",
        "options": "-c statement_timeout=30000 -c lock_timeout=10000 "
        "-c idle_in_transaction_session_timeout=60000",
    }


def test_a_limit_of_zero_is_not_sent() -> None:
    params = pg_connect_params(ConnectOptions(statement_timeout=0, lock_timeout=0.0004))
    assert params["options"] == "-c lock_timeout=1 -c idle_in_transaction_session_timeout=60000"
    off = ConnectOptions(statement_timeout=0, lock_timeout=0, idle_in_transaction_timeout=0)
    assert "options" not in pg_connect_params(off)


def test_the_postgres_engine_carries_the_settings() -> None:
    settings = Settings(
        database_url=PG,
        database=DatabaseSettings(connect_timeout_seconds=3, pool_recycle_seconds=600),
    )
    engine = db_engine(settings)
    try:
        query = engine.url.query
        assert (query["connect_timeout"], query["keepalives"]) == ("3", "1")
        assert query["tcp_user_timeout"] == "25000"
        assert "options" not in query  # sent as a connect argument: a URL cannot carry spaces
        assert engine.pool.timeout() == 10  # type: ignore[attr-defined]
        assert engine.pool._recycle == 600  # type: ignore[attr-defined]
        assert not engine.pool._pre_ping  # type: ignore[attr-defined]  # idle ones only
    finally:
        engine.dispose()


def test_libpq_parameters_written_in_the_url_win() -> None:
    engine = create_db_engine(f"{PG}?connect_timeout=9&options=-c%20search_path%3Dduly")
    try:
        assert engine.url.query["connect_timeout"] == "9"
        assert engine.url.query["keepalives_idle"] == "10"
    finally:
        engine.dispose()


def test_sqlite_gets_its_busy_timeout_and_no_postgres_parameters(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'duly.db'}"
    engine = create_db_engine(url, options=ConnectOptions(sqlite_busy_timeout=7))
    try:
        assert not engine.url.query
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 7000
    finally:
        engine.dispose()
