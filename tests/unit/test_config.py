"""Settings: duly.yaml + DULY_* overrides, defaults, and one-line error messages."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from duly.config import (
    ConfigError,
    EngineSettings,
    ScheduleSettings,
    Settings,
    load_settings,
    redact_url,
    settings_from_cli,
)

REPO = Path(__file__).resolve().parents[2]
BALANCE = ("jobs", "daily_balance_check")


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No stray ./duly.yaml or DULY_* variable of the developer's shell reaches a test."""
    monkeypatch.chdir(tmp_path)
    for name in [name for name in os.environ if name.upper().startswith("DULY_")]:
        monkeypatch.delenv(name)


def write_yaml(directory: Path, doc: Mapping[str, Any] | str, name: str = "duly.yaml") -> Path:
    path = directory / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(dict(doc)), encoding="utf-8")
    return path


def nested(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    doc: Any = value
    for key in reversed(path):
        doc = {key: doc}
    return dict(doc)


def env_name(path: tuple[str, ...]) -> str:
    return "DULY_" + "__".join(part.upper() for part in path)


def config_error(path: Path | None = None, environ: Mapping[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=environ or {})
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith("config error: "), message
    return message


# --------------------------------------------------------------------------- defaults


def test_defaults_match_the_design() -> None:
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.database_url == "sqlite:///./duly.db"
    assert settings.timezone == "UTC"
    assert settings.node_name is None
    assert (settings.logging.level, settings.logging.format) == ("info", "json")
    check = settings.jobs.daily_balance_check
    assert check.enabled is True
    assert check.schedule_time == "22:00"
    assert check.schedule_clock == time(22, 0)
    assert check.timezone == "UTC"
    assert check.retry_attempts == 3
    assert check.retry_delay_seconds == 300
    assert check.window_minutes == 120
    assert check.concurrency == 10
    assert check.per_call_timeout_seconds == 30
    assert check.call_retry_delays == [5, 10, 20]
    engine = settings.engine
    assert engine.worker_concurrency == 16
    assert engine.queues == ["default"]
    assert engine.claim_batch == 32
    assert (engine.lease_seconds, engine.heartbeat_seconds) == (30, 10)
    assert engine.max_idle_seconds == 5
    assert engine.reaper_interval_seconds == 15
    assert engine.shutdown_grace_seconds == 30
    assert engine.misfire_grace_seconds == 60
    assert engine.watchdog_start_minutes == 5
    assert engine.retention_days == 90
    assert engine.default_timeout_seconds == 3600
    assert (settings.api.host, settings.api.port, settings.api.metrics_port) == (
        "127.0.0.1",
        8000,
        None,
    )
    assert settings.schedules == []


def test_settings_built_directly_read_neither_environment_nor_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DULY_TIMEZONE", "Europe/Paris")
    write_yaml(tmp_path, {"timezone": "Asia/Tokyo"})
    assert Settings().timezone == "UTC"
    assert Settings(timezone="Europe/London").timezone == "Europe/London"


def test_load_settings_reads_the_given_environ_not_os_environ(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DULY_TIMEZONE", "Europe/Paris")
    assert load_settings(environ={}).timezone == "UTC"
    assert load_settings(environ={"DULY_TIMEZONE": "Asia/Tokyo"}).timezone == "Asia/Tokyo"


def test_environ_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DULY_ENGINE__CLAIM_BATCH", "7")
    assert load_settings().engine.claim_batch == 7


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.timezone = "Europe/Paris"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        settings.engine.lease_seconds = 1  # type: ignore[misc]


def test_example_file_holds_every_key_at_its_default() -> None:
    example = REPO / "duly.example.yaml"
    assert load_settings(example, environ={}) == Settings()
    data = yaml.safe_load(example.read_text(encoding="utf-8"))
    assert set(data) == set(Settings.model_fields)
    assert set(data["engine"]) == set(EngineSettings.model_fields)


def _leaf_keys(model: type[Any], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            keys += _leaf_keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_docs_name_every_key() -> None:
    docs = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    keys = _leaf_keys(Settings) + [f"schedules[].{name}" for name in ScheduleSettings.model_fields]
    missing = [key for key in keys if f"`{key}`" not in docs]
    assert not missing


# --------------------------------------------------------------------------- loading


def test_yaml_values_are_loaded(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path,
        """
database_url: postgresql://duly:s3cret@db.internal:5432/duly
timezone: Europe/London
node_name: node-a
logging: {level: debug, format: console}
engine:
  worker_concurrency: 4
  queues: [payments, default]
  lease_seconds: 60
  heartbeat_seconds: 20
api: {host: 0.0.0.0, port: 9000, metrics_port: 9100}
jobs:
  daily_balance_check:
    schedule_time: 23:30
    timezone: Europe/London
    call_retry_delays: [1, 2.5]
schedules:
  - name: nightly-report
    job: report
    spec: "daily:02:30"
    timezone: Europe/London
    args: {format: pdf}
    misfire: run_all
    overlap: skip
    calendar: GB-ENG
    adjust: following
""",
    )
    settings = load_settings(path, environ={})
    assert settings.database_url == "postgresql+psycopg://duly:s3cret@db.internal:5432/duly"
    assert settings.timezone == "Europe/London"
    assert settings.node_name == "node-a"
    assert (settings.logging.level, settings.logging.format) == ("debug", "console")
    assert settings.engine.worker_concurrency == 4
    assert settings.engine.queues == ["payments", "default"]
    assert (settings.engine.lease_seconds, settings.engine.heartbeat_seconds) == (60, 20)
    assert settings.engine.claim_batch == 32  # untouched keys keep their default
    assert (settings.api.host, settings.api.port, settings.api.metrics_port) == (
        "0.0.0.0",
        9000,
        9100,
    )
    check = settings.jobs.daily_balance_check
    # unquoted 23:30 is YAML 1.1's base-60 integer 1410; duly reads it as the time it looks like
    assert check.schedule_time == "23:30"
    assert check.schedule_clock == time(23, 30)
    assert check.call_retry_delays == [1, 2.5]
    assert check.retry_attempts == 3
    [schedule] = settings.schedules
    assert schedule == ScheduleSettings(
        name="nightly-report",
        job="report",
        spec="daily:02:30",
        timezone="Europe/London",
        args={"format": "pdf"},
        misfire="run_all",
        overlap="skip",
        calendar="GB-ENG",
        adjust="following",
    )


def test_empty_file_and_empty_sections_mean_defaults(tmp_path: Path) -> None:
    assert load_settings(write_yaml(tmp_path, "", "empty.yaml"), environ={}) == Settings()
    sections = "logging:\nengine:\napi:\njobs:\n  daily_balance_check:\nschedules:\n"
    assert load_settings(write_yaml(tmp_path, sections, "sections.yaml"), environ={}) == Settings()


def test_env_beats_yaml_beats_defaults(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path,
        {"timezone": "Europe/London", "engine": {"claim_batch": 5, "worker_concurrency": 8}},
    )
    settings = load_settings(path, environ={"DULY_TIMEZONE": "Asia/Tokyo"})
    assert settings.timezone == "Asia/Tokyo"  # env
    assert settings.engine.claim_batch == 5  # YAML
    assert settings.engine.lease_seconds == 30  # default


def test_nested_env_override_keeps_yaml_siblings(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, nested(BALANCE, {"schedule_time": "21:00", "retry_attempts": 5}))
    settings = load_settings(
        path, environ={"DULY_JOBS__DAILY_BALANCE_CHECK__SCHEDULE_TIME": "23:30"}
    )
    check = settings.jobs.daily_balance_check
    assert check.schedule_time == "23:30"
    assert check.retry_attempts == 5


def test_env_names_are_case_insensitive_and_empty_values_ignored() -> None:
    settings = load_settings(
        environ={"duly_engine__claim_batch": "9", "DULY_DATABASE_URL": "", "DULY_NODE_NAME": ""}
    )
    assert settings.engine.claim_batch == 9
    assert settings.database_url == "sqlite:///./duly.db"
    assert settings.node_name is None


def test_env_database_url_is_normalised_to_psycopg() -> None:
    for given_url in (
        "postgresql://u:p@h/db",
        "postgres://u:p@h/db",
        "postgresql+psycopg://u:p@h/db",
    ):
        settings = load_settings(environ={"DULY_DATABASE_URL": given_url})
        assert settings.database_url == "postgresql+psycopg://u:p@h/db"


@pytest.mark.parametrize(
    "url",
    ["sqlite:///./duly.db", "sqlite:////var/lib/duly/duly.db", "sqlite:///:memory:"],
    ids=["relative", "absolute", "memory"],
)
def test_sqlite_urls_are_accepted_unchanged(url: str) -> None:
    assert load_settings(environ={"DULY_DATABASE_URL": url}).database_url == url


def test_list_env_values_are_json() -> None:
    settings = load_settings(
        environ={
            "DULY_ENGINE__QUEUES": '["a", "b"]',
            "DULY_JOBS__DAILY_BALANCE_CHECK__CALL_RETRY_DELAYS": "[1, 2, 4]",
        }
    )
    assert settings.engine.queues == ["a", "b"]
    assert settings.jobs.daily_balance_check.call_retry_delays == [1, 2, 4]


def test_section_and_schedules_env_values_are_json(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, {"engine": {"claim_batch": 5}})
    schedules = [{"name": "a", "job": "j", "spec": "daily:01:00", "args": {"n": 1}}]
    settings = load_settings(
        path,
        environ={
            "DULY_ENGINE": '{"worker_concurrency": 2}',
            "DULY_SCHEDULES": json.dumps(schedules),
        },
    )
    assert settings.engine.worker_concurrency == 2
    assert settings.engine.claim_batch == 5  # the JSON section merges with the file's
    assert [s.name for s in settings.schedules] == ["a"]
    assert settings.schedules[0].args == {"n": 1}


def test_unrelated_duly_variables_are_ignored() -> None:
    environ = {"DULY_REQUIRE_PG": "1", "DULY_TEST_PG_URL": "postgresql://x", "DULY_CONFIG": ""}
    assert load_settings(environ=environ) == Settings()


def test_duly_config_names_the_file(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, {"timezone": "Europe/Berlin"}, "elsewhere.yaml")
    assert load_settings(environ={"DULY_CONFIG": str(path)}).timezone == "Europe/Berlin"


def test_explicit_path_beats_duly_config(tmp_path: Path) -> None:
    chosen = write_yaml(tmp_path, {"timezone": "Europe/Berlin"}, "chosen.yaml")
    other = write_yaml(tmp_path, {"timezone": "Asia/Tokyo"}, "other.yaml")
    assert load_settings(chosen, environ={"DULY_CONFIG": str(other)}).timezone == "Europe/Berlin"


def test_duly_yaml_in_the_working_directory_is_read(tmp_path: Path) -> None:
    write_yaml(tmp_path, {"timezone": "Europe/Rome"})
    assert load_settings(environ={}).timezone == "Europe/Rome"


def test_explicitly_named_missing_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    message = config_error(missing)
    assert str(missing) in message and "not found" in message


def test_missing_file_named_by_duly_config_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    message = config_error(environ={"DULY_CONFIG": str(missing)})
    assert str(missing) in message and "not found" in message and "DULY_CONFIG" in message


def test_directory_as_config_file_is_an_error(tmp_path: Path) -> None:
    assert "is not a file" in config_error(tmp_path)


def test_settings_from_cli_uses_duly_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_yaml(tmp_path, {"timezone": "Europe/Madrid"}, "cli.yaml")
    monkeypatch.setenv("DULY_CONFIG", str(path))
    assert settings_from_cli(None).timezone == "Europe/Madrid"
    explicit = write_yaml(tmp_path, {"timezone": "Europe/Lisbon"}, "explicit.yaml")
    assert settings_from_cli(str(explicit)).timezone == "Europe/Lisbon"


def test_settings_from_cli_raises_one_line_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DULY_ENGINE__CLAIM_BATCH", "0")
    with pytest.raises(ConfigError) as caught:
        settings_from_cli(None)
    assert str(caught.value) == (
        "config error: engine.claim_batch = '0': must be between 1 and 1000 "
        "(from DULY_ENGINE__CLAIM_BATCH)"
    )
    with pytest.raises(ConfigError, match="not found"):
        settings_from_cli(str(tmp_path / "absent.yaml"))


# --------------------------------------------------------------------------- secrets


def test_redacted_hides_the_database_password() -> None:
    settings = load_settings(
        environ={"DULY_DATABASE_URL": "postgresql://duly:s3cret@db:5432/duly?sslmode=require"}
    )
    shown = settings.redacted()
    assert shown["database_url"] == "postgresql+psycopg://duly:***@db:5432/duly?sslmode=require"
    assert "s3cret" not in json.dumps(shown)
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)
    assert shown["engine"]["queues"] == ["default"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///./duly.db", "sqlite:///./duly.db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u:p%40ss@h/db", "postgresql+psycopg://u:***@h/db"),
        (
            "postgresql+psycopg://h/db?user=u&password=pw&x=1",
            "postgresql+psycopg://h/db?user=u&password=***&x=1",
        ),
    ],
    ids=["sqlite", "no-password", "userinfo", "query"],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_error_never_shows_the_database_password() -> None:
    message = config_error(environ={"DULY_DATABASE_URL": "mysql://u:s3cret@h/db"})
    assert "s3cret" not in message


# --------------------------------------------------------------------------- bad values


@dataclass(frozen=True)
class Bad:
    """One bad setting, written once as YAML and once as environment variables."""

    yaml_doc: dict[str, Any]
    env: dict[str, str]
    key: str  # the key path the message must name
    rule: str  # a fragment of the rule the message must state
    yaml_value: str | None  # the value as shown for the YAML form (None: no value shown)
    env_value: str | None
    also: tuple[str, ...] = field(default=())  # more fragments, both forms


def single(path: tuple[str, ...], yaml_value: Any, env_value: str, rule: str) -> Bad:
    """A bad value at ``path``: the message shows it as written (YAML scalar vs env text)."""
    return Bad(
        yaml_doc=nested(path, yaml_value),
        env={env_name(path): env_value},
        key=".".join(path),
        rule=rule,
        yaml_value=repr(yaml_value) if isinstance(yaml_value, str) else str(yaml_value),
        env_value=repr(env_value),
    )


DUP_SCHEDULES = [
    {"name": "nightly", "job": "report", "spec": "daily:01:00"},
    {"name": "other", "job": "report", "spec": "daily:02:00"},
    {"name": "nightly", "job": "cleanup", "spec": "daily:03:00"},
]

BAD = {
    "schedule_time 25:00": single(
        (*BALANCE, "schedule_time"), "25:00", "25:00", "expected HH:MM, 00:00–23:59"
    ),
    "schedule_time 7:5": single((*BALANCE, "schedule_time"), "7:5", "7:5", "expected HH:MM"),
    "schedule_time not text": single((*BALANCE, "schedule_time"), 2200, "2200", "expected HH:MM"),
    "unknown timezone": single(("timezone",), "Mars/Olympus", "Mars/Olympus", "IANA"),
    "unknown job timezone": single(
        (*BALANCE, "timezone"), "Europe/Atlantis", "Europe/Atlantis", "IANA"
    ),
    "negative retry count": single((*BALANCE, "retry_attempts"), -1, "-1", "must be ≥ 0"),
    "zero window": single((*BALANCE, "window_minutes"), 0, "0", "must be ≥ 1"),
    "concurrency over range": single(
        ("engine", "worker_concurrency"), 5000, "5000", "must be between 1 and 1024"
    ),
    "zero lease": single(("engine", "lease_seconds"), 0, "0", "must be > 0"),
    "non-number for a number": single(
        ("engine", "claim_batch"), "lots", "lots", "expected an integer between 1 and 1000"
    ),
    "non-number for a float": single(
        (*BALANCE, "retry_delay_seconds"), "soon", "soon", "expected a number ≥ 0"
    ),
    "fraction for an integer": single(("engine", "retention_days"), 1.5, "1.5", "≥ 1"),
    "bad boolean": single((*BALANCE, "enabled"), "maybe", "maybe", "expected true or false"),
    "bad log level": single(("logging", "level"), "verbose", "verbose", "'debug', 'info'"),
    "bad database scheme": Bad(
        yaml_doc={"database_url": "mysql://u:pw@h/db"},
        env={"DULY_DATABASE_URL": "mysql://u:pw@h/db"},
        key="database_url",
        rule="allowed schemes are sqlite:///PATH, postgresql://",
        yaml_value="'mysql://u:***@h/db'",
        env_value="'mysql://u:***@h/db'",
        also=("postgresql+psycopg://", "postgres://"),
    ),
    "unknown top-level key": Bad(
        yaml_doc={"bogus": 1},
        env={"DULY_BOGUS__X": "1"},
        key="bogus",
        rule="unknown key (allowed: database_url, timezone",
        yaml_value=None,
        env_value=None,
    ),
    "unknown nested key": Bad(
        yaml_doc={"engine": {"worker_concurency": 4}},
        env={"DULY_ENGINE__WORKER_CONCURENCY": "4"},
        key="engine.worker_concurency",
        rule="unknown key (did you mean worker_concurrency? allowed: worker_concurrency",
        yaml_value=None,
        env_value=None,
    ),
    "heartbeat not below lease": Bad(
        yaml_doc={"engine": {"heartbeat_seconds": 30, "lease_seconds": 30}},
        env={"DULY_ENGINE__HEARTBEAT_SECONDS": "30", "DULY_ENGINE__LEASE_SECONDS": "30"},
        key="engine.heartbeat_seconds",
        rule="must be less than engine.lease_seconds (30)",
        yaml_value="30",
        env_value="30",
    ),
    "duplicate schedule name": Bad(
        yaml_doc={"schedules": DUP_SCHEDULES},
        env={"DULY_SCHEDULES": json.dumps(DUP_SCHEDULES)},
        key="schedules[2].name",
        rule="duplicate schedule name (also schedules[0].name)",
        yaml_value="'nightly'",
        env_value="'nightly'",
    ),
    "bad schedule name": Bad(
        yaml_doc={"schedules": [{"name": "has space", "job": "j", "spec": "x"}]},
        env={"DULY_SCHEDULES": json.dumps([{"name": "has space", "job": "j", "spec": "x"}])},
        key="schedules[0].name",
        rule="letters, digits and _ . : -",
        yaml_value="'has space'",
        env_value="'has space'",
    ),
    "negative call retry delay": Bad(
        yaml_doc=nested((*BALANCE, "call_retry_delays"), [5, -1]),
        env={env_name((*BALANCE, "call_retry_delays")): "[5, -1]"},
        key="jobs.daily_balance_check.call_retry_delays[1]",
        rule="must be ≥ 0",
        yaml_value="-1",
        env_value="-1",
    ),
    "queues not a list": Bad(
        yaml_doc={"engine": {"queues": "a,b"}},
        env={"DULY_ENGINE__QUEUES": "a,b"},
        key="engine.queues",
        rule="expected a list",
        yaml_value="'a,b'",
        env_value="'a,b'",
    ),
}


def check_message(message: str, bad: Bad, value: str | None, source: str) -> None:
    head = bad.key if value is None else f"{bad.key} = {value}"
    assert f"{head}: " in message, message
    assert bad.rule in message, message
    for fragment in bad.also:
        assert fragment in message, message
    assert f"(from {source}" in message, message


@pytest.mark.parametrize("bad", list(BAD.values()), ids=list(BAD))
def test_bad_value_in_yaml(bad: Bad, tmp_path: Path) -> None:
    path = write_yaml(tmp_path, bad.yaml_doc, "bad.yaml")
    check_message(config_error(path), bad, bad.yaml_value, str(path))


@pytest.mark.parametrize("bad", list(BAD.values()), ids=list(BAD))
def test_bad_value_in_env(bad: Bad) -> None:
    message = config_error(environ=bad.env)
    check_message(message, bad, bad.env_value, next(iter(bad.env)))


def test_exact_message_for_a_bad_yaml_value(tmp_path: Path) -> None:
    write_yaml(tmp_path, nested(BALANCE, {"retry_attempts": -1}))
    assert config_error() == (
        "config error: jobs.daily_balance_check.retry_attempts = -1: must be ≥ 0 (from duly.yaml)"
    )


def test_exact_message_for_a_bad_env_value() -> None:
    environ = {"DULY_JOBS__DAILY_BALANCE_CHECK__SCHEDULE_TIME": "25:00"}
    assert config_error(environ=environ) == (
        "config error: jobs.daily_balance_check.schedule_time = '25:00': expected HH:MM, "
        "00:00–23:59 (from DULY_JOBS__DAILY_BALANCE_CHECK__SCHEDULE_TIME)"
    )


def test_heartbeat_error_names_both_sources(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, {"engine": {"lease_seconds": 20}})
    message = config_error(path, {"DULY_ENGINE__HEARTBEAT_SECONDS": "25"})
    assert "engine.heartbeat_seconds = 25: must be less than engine.lease_seconds (20)" in message
    assert f"(from DULY_ENGINE__HEARTBEAT_SECONDS, {path})" in message


def test_every_bad_value_is_listed_on_one_line(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path,
        {"timezone": "Nowhere/City", "engine": {"claim_batch": 0}, "api": {"port": 0}},
    )
    message = config_error(path, {"DULY_LOGGING__LEVEL": "loud"})
    parts = message.removeprefix("config error: ").split("; ")
    assert len(parts) == 4
    for key in ("timezone", "engine.claim_batch", "api.port", "logging.level"):
        assert any(part.startswith(f"{key} = ") for part in parts), message


def test_many_bad_values_are_counted(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, {f"bogus{i}": i for i in range(13)})
    message = config_error(path)
    assert message.endswith("; and 3 more")
    assert message.count("unknown key") == 10


def test_config_error_keeps_the_problems(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, nested(BALANCE, {"retry_attempts": -1, "window_minutes": 0}))
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    problems = caught.value.problems
    assert [p.key for p in problems] == [
        "jobs.daily_balance_check.retry_attempts",
        "jobs.daily_balance_check.window_minutes",
    ]
    assert [p.value for p in problems] == ["-1", "0"]
    assert {p.source for p in problems} == {str(path)}


def test_missing_required_schedule_keys(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, {"schedules": [{"name": "a"}]})
    message = config_error(path)
    assert "schedules[0].job: required key is missing" in message
    assert "schedules[0].spec: required key is missing" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("engine: [1\n", "at line 2"),
        ("engine: {}\nengine: {}\n", "duplicate key 'engine'"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("1: a\n", "keys must be text"),
    ],
    ids=["syntax", "duplicate-key", "not-a-mapping", "non-text-key"],
)
def test_malformed_yaml_is_one_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write_yaml(tmp_path, text, "broken.yaml")
    message = config_error(path)
    assert expected in message and str(path) in message


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    text = (
        "base: &base {job: report, spec: 'daily:01:00'}\n"
        "schedules:\n  - {<<: *base, name: a}\n  - {<<: *base, name: b, job: other}\n"
    )
    # "base" is itself an unknown key; what matters is that the merge is not refused
    message = config_error(write_yaml(tmp_path, text))
    assert "duplicate key" not in message and "base: unknown key" in message


# --------------------------------------------------------------------------- property


VALID_HHMM = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.integers(0, 59))
OUT_OF_RANGE_HHMM = st.one_of(
    st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(24, 99), st.integers(0, 99)),
    st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 99), st.integers(60, 99)),
)
UNPADDED_HHMM = st.builds(
    lambda h, m: f"{h}:{m}", st.integers(0, 9), st.integers(0, 59)
) | st.builds(lambda h, m: f"{h:02d}:{m}", st.integers(0, 23), st.integers(0, 9))

ENV_TIME = "DULY_JOBS__DAILY_BALANCE_CHECK__SCHEDULE_TIME"


@given(VALID_HHMM)
def test_every_valid_hhmm_is_accepted(value: str) -> None:
    check = load_settings(environ={ENV_TIME: value}).jobs.daily_balance_check
    assert check.schedule_time == value
    assert check.schedule_clock == time(int(value[:2]), int(value[3:]))


@given(OUT_OF_RANGE_HHMM | UNPADDED_HHMM)
def test_every_invalid_hhmm_is_rejected_with_its_key(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={ENV_TIME: value})
    message = str(caught.value)
    assert f"jobs.daily_balance_check.schedule_time = {value!r}: expected HH:MM" in message
    assert "\n" not in message


# --------------------------------------------------------------------------- notify


def test_notify_defaults() -> None:
    n = Settings().notify
    assert n.reminders.offsets == ["3d", "1d", "1h"]
    assert (n.reminders.quiet_start, n.reminders.quiet_end) == ("21:00", "08:00")
    assert n.email.host is None and n.routing.critical[0].channel == "log"


def test_notify_secrets_are_redacted(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path,
        "notify:\n  email: {host: smtp.bank.test, password: hunter2}\n"
        "  sms: {url: 'https://sms.bank.test/send', auth_token: tok-123}\n",
    )
    settings = load_settings(path, environ={})
    assert settings.notify.email.password is not None
    assert settings.notify.email.password.get_secret_value() == "hunter2"
    text = json.dumps(settings.redacted())
    assert "hunter2" not in text and "tok-123" not in text


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("notify:\n  reminders: {offsets: [3x]}\n",
         "notify.reminders.offsets[0] = '3x': expected a count and a unit: 30m, 1h, 1d or 2w"),
        ("notify:\n  reminders: {quiet_start: '25:00'}\n",
         "notify.reminders.quiet_start = '25:00': expected HH:MM, 00:00–23:59"),
        ("notify:\n  email: {host: smtp.bank.test, ssl: true}\n",
         "notify.email.ssl = true: ssl and starttls exclude each other"),
        ("notify:\n  routing: {high: [{channel: webhook, to: [ops]}]}\n",
         "notify.routing.high[0] = 'webhook': webhook 'ops' is not among notify.webhooks"),
        ("notify:\n  routing: {high: [{channel: sms, to: ['+15550100']}]}\n",
         "notify.routing.high[0] = 'sms': channel sms has no notify.sms.url"),
        ("notify:\n  webhooks: [{name: ops, url: 'ftp://x'}]\n",
         "notify.webhooks[0].url = 'ftp://x'"),
    ],
)  # fmt: skip
def test_bad_notify_values_are_one_clear_line(tmp_path: Path, body: str, expected: str) -> None:
    path = write_yaml(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    message = str(info.value)
    assert "\n" not in message and expected in message


def test_notify_env_override() -> None:
    settings = load_settings(
        None, environ={"DULY_NOTIFY__REMINDERS__OFFSETS": '["2d", "2h"]',
                       "DULY_NOTIFY__EMAIL__HOST": "smtp.bank.test"}
    )  # fmt: skip
    assert settings.notify.reminders.offsets == ["2d", "2h"]
    assert settings.notify.email.host == "smtp.bank.test"
