"""Settings: ``duly.yaml`` plus ``DULY_*`` environment overrides, validated.

Where settings come from, highest priority first:

1. environment variables ``DULY_<KEY>``, nested keys joined by ``__``
   (``DULY_JOBS__DAILY_BALANCE_CHECK__SCHEDULE_TIME=23:30``); list and mapping values
   are JSON (``DULY_ENGINE__QUEUES='["a","b"]'``);
2. the YAML file: the path given to :func:`load_settings` (the CLI's ``--config``), else
   the file named by ``DULY_CONFIG``, else ``./duly.yaml`` if it exists; a file that is
   named explicitly but does not exist is an error;
3. the defaults below (embedded SQLite ``./duly.db``, UTC, nightly balance check 22:00).

Every bad value becomes one :class:`ConfigError` whose ``str()`` is a single line naming
the key path, the value, what is allowed and, where known, which variable or file the
value came from. Nothing here prints or exits; the CLI does that.

``Settings()`` built directly (in tests or by a library user) reads neither the
environment nor any file: it is the defaults plus the keyword arguments given.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import types
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import annotated_types
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

__all__ = [
    "ApiSettings",
    "BalanceCheckSettings",
    "ConfigError",
    "ConfigProblem",
    "EngineSettings",
    "JobsSettings",
    "LoggingSettings",
    "NotifySettings",
    "ScheduleSettings",
    "Settings",
    "load_settings",
    "redact_url",
    "settings_from_cli",
]

ENV_PREFIX = "DULY_"
"""Prefix of every environment override."""
ENV_DELIMITER = "__"
"""Joins the parts of a nested key in an environment variable name."""
CONFIG_ENV_VAR = "DULY_CONFIG"
"""Environment variable naming the YAML file when no path is given."""
DEFAULT_CONFIG_FILE = "duly.yaml"
"""Read from the working directory when no file is named and it exists."""

_MAX_LISTED = 10  # problems spelled out in one message before "and N more"
_MAX_VALUE_CHARS = 80

# --------------------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One bad setting.

    :ivar key: dotted key path, list items as ``[i]`` (``schedules[1].name``); empty for a
        problem with the file as a whole.
    :ivar rule: what is wrong or what is allowed.
    :ivar value: the offending value as shown to the user (``repr`` form, passwords
        hidden), or ``None`` when there is no single value (unknown or missing key).
    :ivar source: the environment variable or file the value came from, when known.
    """

    key: str
    rule: str
    value: str | None = None
    source: str | None = None

    def __str__(self) -> str:
        head = self.key if self.value is None else f"{self.key} = {self.value}"
        text = f"{head}: {self.rule}" if head else self.rule
        if self.source:
            text += f" (from {self.source})"
        return _one_line(text)


class ConfigError(Exception):
    """The settings are invalid. ``str()`` is one line listing every bad value.

    Example::

        config error: jobs.daily_balance_check.retry_attempts = -1: must be ≥ 0 (from duly.yaml)

    Several problems are separated by ``'; '``; past ten, the rest are counted
    (``and 3 more``). :attr:`problems` holds them one by one.
    """

    problems: tuple[ConfigProblem, ...]

    def __init__(self, problems: Sequence[ConfigProblem] | ConfigProblem | str) -> None:
        if isinstance(problems, str):
            problems = [ConfigProblem(key="", rule=problems)]
        elif isinstance(problems, ConfigProblem):
            problems = [problems]
        self.problems = tuple(problems)
        super().__init__(self._render())

    def _render(self) -> str:
        shown = [str(p) for p in self.problems[:_MAX_LISTED]]
        hidden = len(self.problems) - len(shown)
        if hidden:
            shown.append(f"and {hidden} more")
        return _one_line("config error: " + "; ".join(shown or ["invalid settings"]))

    def __str__(self) -> str:
        return self._render()


def _one_line(text: str) -> str:
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


# --------------------------------------------------------------------------- field rules

_HHMM = re.compile(r"(?:[01][0-9]|2[0-3]):[0-5][0-9]")
_SCHEDULE_NAME = re.compile(r"[A-Za-z0-9_.:-]+")
_SQLITE = "sqlite"
_PG_DRIVER = "postgresql+psycopg"
_DB_SCHEMES = {
    "sqlite": _SQLITE,
    "postgresql": _PG_DRIVER,
    "postgres": _PG_DRIVER,
    "postgresql+psycopg": _PG_DRIVER,
}
_DB_RULE = (
    "allowed schemes are sqlite:///PATH, postgresql://…, postgresql+psycopg://… "
    "and postgres://… (the last two are read as postgresql+psycopg)"
)


def _check_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise PydanticCustomError(
            "iana_timezone", "unknown timezone: expected an IANA name such as UTC or Europe/London"
        ) from None
    return value


def _check_hhmm(value: Any) -> Any:
    if not isinstance(value, str) or not _HHMM.fullmatch(value):
        raise PydanticCustomError("hh_mm", "expected HH:MM, 00:00–23:59")
    return value


def _check_database_url(value: Any) -> Any:
    if not isinstance(value, str):
        return value  # the str type check reports it
    scheme, sep, rest = value.strip().partition("://")
    target = _DB_SCHEMES.get(scheme.lower())
    if not sep or target is None or (target == _SQLITE and len(rest) < 2):
        raise PydanticCustomError("database_url", _DB_RULE)
    if target == _SQLITE and not rest.startswith("/"):
        raise PydanticCustomError("database_url", _DB_RULE)
    return f"{target}://{rest}"


def _check_schedule_name(value: str) -> str:
    if not _SCHEDULE_NAME.fullmatch(value):
        raise PydanticCustomError(
            "schedule_name", "must be non-empty and use only letters, digits and _ . : -"
        )
    return value


def _none_is_empty(value: Any) -> Any:
    """An empty YAML section (``engine:`` with every child commented out) reads as ``{}``."""
    return {} if value is None else value


IanaZone = Annotated[str, AfterValidator(_check_zone)]
"""A timezone name ``zoneinfo`` knows (``UTC``, ``Europe/London``)."""

NonEmptyStr = Annotated[str, Field(min_length=1)]


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (in the user part and in ``?password=``).

    >>> redact_url("postgresql+psycopg://duly:s3cret@db:5432/duly")
    'postgresql+psycopg://duly:***@db:5432/duly'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = len(rest)
    for stop in "/?#":
        index = rest.find(stop)
        if index != -1:
            end = min(end, index)
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        userinfo, _, hostport = authority.rpartition("@")
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            authority = f"{user}:***@{hostport}"
    tail = re.sub(r"(?i)([?&]password=)[^&#]*", r"\1***", tail)
    return f"{scheme}{sep}{authority}{tail}"


# --------------------------------------------------------------------------- models


class LoggingSettings(BaseModel):
    """Log output: level and format (``json`` lines for production, ``console`` for people)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


class EngineSettings(BaseModel):
    """Tunables of one node of the scheduler engine."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    worker_concurrency: Annotated[int, Field(ge=1, le=1024)] = 16
    """Runs one worker process executes at once."""
    queues: Annotated[list[NonEmptyStr], Field(min_length=1)] = Field(
        default_factory=lambda: ["default"]
    )
    """Queues this node claims runs from."""
    claim_batch: Annotated[int, Field(ge=1, le=1000)] = 32
    """Runs claimed in one store round trip."""
    max_batch_size: Annotated[int, Field(ge=1, le=5000)] | None = None
    """Caps how many runs of a batch job (e.g. ``transfers.execute``) run as one batch."""
    lease_seconds: Annotated[float, Field(gt=0)] = 30.0
    """How long a claimed run stays owned without a heartbeat."""
    heartbeat_seconds: Annotated[float, Field(gt=0)] = 10.0
    """How often a running run's lease is extended; must be below ``lease_seconds``."""
    max_idle_seconds: Annotated[float, Field(gt=0)] = 5.0
    """The longest the scheduler or a worker sleeps without re-checking the store."""
    reaper_interval_seconds: Annotated[float, Field(gt=0)] = 15.0
    """How often expired leases are looked for."""
    shutdown_grace_seconds: Annotated[float, Field(ge=0)] = 30.0
    """How long running jobs may finish after a stop is asked for."""
    misfire_grace_seconds: Annotated[float, Field(ge=0)] = 60.0
    """How late a fire may be and still count as on time."""
    watchdog_start_minutes: Annotated[float, Field(gt=0)] = 5.0
    """Alert when a scheduled run has not started this long after its time."""
    retention_days: Annotated[int, Field(ge=1)] = 90
    """How long attempt rows (``job_executions``) are kept."""
    default_timeout_seconds: Annotated[float, Field(gt=0)] = 3600.0
    """Timeout of a job that declares none."""

    @model_validator(mode="after")
    def _heartbeat_below_lease(self) -> EngineSettings:
        if self.heartbeat_seconds >= self.lease_seconds:
            raise PydanticCustomError(
                "heartbeat_not_below_lease",
                "must be less than engine.lease_seconds ({lease}) so a lease is renewed "
                "before it expires",
                {
                    "lease": _show(self.lease_seconds),
                    "at": ("heartbeat_seconds",),
                    "value": self.heartbeat_seconds,
                    "related": (("lease_seconds",),),
                },
            )
        return self


class ApiSettings(BaseModel):
    """The HTTP API and dashboard listener."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    host: NonEmptyStr = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    metrics_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """A separate port for ``/metrics``; ``None`` serves it on ``port``."""


class BalanceCheckSettings(BaseModel):
    """The nightly premium-customer balance check (job ``daily_balance_check``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    enabled: bool = True
    schedule_time: Annotated[str, BeforeValidator(_check_hhmm)] = "22:00"
    """Local time of day, ``HH:MM`` (24-hour), in :attr:`timezone`."""
    timezone: IanaZone = "UTC"
    retry_attempts: Annotated[int, Field(ge=0)] = 3
    """Retries of the whole job after a failed attempt."""
    retry_delay_seconds: Annotated[float, Field(ge=0)] = 300.0
    window_minutes: Annotated[int, Field(ge=1)] = 120
    """The job must finish within this many minutes of its start time, or an alert is raised."""
    concurrency: Annotated[int, Field(ge=1, le=500)] = 10
    """Balance reads in flight at once (a batched read of many customers counts as one)."""
    read_batch_size: Annotated[int, Field(ge=1, le=1000)] = 200
    """Customers whose balances are read in one call to the bank (one query on the ledger, one
    request on a bank with a batch endpoint); a failed read is retried for its customer alone."""
    per_call_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    call_retry_delays: Annotated[list[Annotated[float, Field(ge=0)]], Field(max_length=10)] = Field(
        default_factory=lambda: [5.0, 10.0, 20.0]
    )
    """Waits before each retry of one customer's balance read (at most 10 retries)."""
    bank: NonEmptyStr = "ledger"
    """The bank balances are read from: ``ledger`` (built in), ``http`` (``DULY_BANK_HTTP_URL``)."""
    account_rule: Literal["total", "each"] = "total"
    """``total``: the customer's open accounts in the minimum's currency together must reach it;
    ``each``: every one of them must."""
    missed_night_lookback_days: Annotated[int, Field(ge=0, le=366)] = 7
    """How many past nights each run checks for a night that never ran (0: none)."""

    @model_validator(mode="after")
    def _retries_fit_window(self) -> BalanceCheckSettings:
        waited = sum(self.call_retry_delays)
        if waited >= self.window_minutes * 60:
            raise PydanticCustomError(
                "retries_exceed_window",
                "the retry waits add up to {waited} s, which does not fit in "
                "jobs.daily_balance_check.window_minutes ({window} min)",
                {
                    "waited": _show(waited),
                    "window": self.window_minutes,
                    "at": ("call_retry_delays",),
                    "value": [int(d) if d.is_integer() else d for d in self.call_retry_delays],
                    "related": (("window_minutes",),),
                },
            )
        return self

    @property
    def schedule_clock(self) -> time:
        """:attr:`schedule_time` as a :class:`datetime.time`."""
        hour, minute = self.schedule_time.split(":")
        return time(int(hour), int(minute))


class JobsSettings(BaseModel):
    """Settings of the built-in jobs."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    daily_balance_check: BalanceCheckSettings = Field(default_factory=BalanceCheckSettings)

    _empty_sections = field_validator("daily_balance_check", mode="before")(_none_is_empty)


# --------------------------------------------------------------------------- notify


_OFFSET = re.compile(r"^([1-9][0-9]{0,3})([mhdw])$")


def _check_offset(value: Any) -> Any:
    if not isinstance(value, str) or not _OFFSET.fullmatch(value):
        raise PydanticCustomError(
            "reminder_offset", "expected a count and a unit: 30m, 1h, 1d or 2w"
        )
    return value


ReminderOffset = Annotated[str, BeforeValidator(_check_offset)]
NotifyChannel = Literal["email", "webhook", "sms", "push", "log"]


def _quiet_default() -> list[NotifyChannel]:
    return ["sms", "push"]


HhMm = Annotated[str, BeforeValidator(_check_hhmm)]


class EmailSettings(BaseModel):
    """The SMTP server for e-mail (customers and operations)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    host: NonEmptyStr | None = None
    """SMTP host; ``None`` disables e-mail."""
    port: Annotated[int, Field(ge=1, le=65535)] = 587
    starttls: bool = True
    ssl: bool = False
    """Implicit TLS (port 465); excludes ``starttls``."""
    username: NonEmptyStr | None = None
    password: SecretStr | None = None
    sender: NonEmptyStr = "duly <noreply@localhost>"
    timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    ca_file: FilePath | None = None
    """PEM bundle of the CAs trusted for the server's certificate (an internal CA); default:
    the system's. The certificate and its name are always checked."""

    @model_validator(mode="after")
    def _one_tls_mode(self) -> EmailSettings:
        if self.ssl and self.starttls:
            raise PydanticCustomError(
                "smtp_tls",
                "ssl and starttls exclude each other: set one of them to false",
                {"at": ("ssl",), "value": True},
            )
        return self


class WebhookSettings(BaseModel):
    """A named webhook (JSON POST; ``slack`` sends ``{"text": ...}``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: Annotated[str, AfterValidator(_check_schedule_name)]
    url: Annotated[str, Field(pattern=r"^https?://[^\s/]+")]
    format: Literal["json", "slack"] = "json"
    timeout_seconds: Annotated[float, Field(gt=0)] = 10.0


class GatewaySettings(BaseModel):
    """An HTTP gateway (SMS or push): JSON POST with a bearer token."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    url: Annotated[str, Field(pattern=r"^https?://[^\s/]+")] | None = None
    """``None`` disables the channel."""
    auth_token: SecretStr | None = None
    sender: NonEmptyStr = "duly"
    timeout_seconds: Annotated[float, Field(gt=0)] = 10.0


class AlertRoute(BaseModel):
    """Where alerts of one severity go: a channel and its recipients.

    ``to`` holds e-mail addresses, webhook names, phone numbers or push tokens.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    channel: NotifyChannel
    to: list[NonEmptyStr] = Field(default_factory=list)

    @model_validator(mode="after")
    def _recipients(self) -> AlertRoute:
        if self.channel != "log" and not self.to:
            raise PydanticCustomError(
                "route_recipients", "a route needs at least one recipient in `to`"
            )
        return self


class RoutingSettings(BaseModel):
    """Alert routing by severity."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    critical: list[AlertRoute] = Field(default_factory=lambda: [AlertRoute(channel="log")])
    high: list[AlertRoute] = Field(default_factory=lambda: [AlertRoute(channel="log")])
    medium: list[AlertRoute] = Field(default_factory=lambda: [AlertRoute(channel="log")])
    low: list[AlertRoute] = Field(default_factory=lambda: [AlertRoute(channel="log")])
    repeat_minutes: Annotated[float, Field(gt=0)] = 60.0
    """An alert still open and raised again is re-sent at most this often (its dedupe window)."""


class ReminderSettings(BaseModel):
    """Payment reminders."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    enabled: bool = True
    offsets: Annotated[list[ReminderOffset], Field(min_length=0, max_length=10)] = Field(
        default_factory=lambda: ["3d", "1d", "1h"]
    )
    """Before the adjusted execution time: ``h``/``m`` are elapsed time, ``d``/``w`` calendar days."""
    quiet_start: HhMm = "21:00"
    quiet_end: HhMm = "08:00"
    quiet_channels: list[NotifyChannel] = Field(default_factory=_quiet_default)
    horizon_hours: Annotated[float, Field(gt=0)] = 24.0
    """Reminders are planned this long before the earliest offset is due."""


class DeliverySettings(BaseModel):
    """How deliveries are sent and retried."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    max_attempts: Annotated[int, Field(ge=1, le=100)] = 6
    backoff_seconds: Annotated[list[Annotated[float, Field(ge=0)]], Field(min_length=1)] = Field(
        default_factory=lambda: [10.0, 60.0, 300.0, 900.0, 3600.0]
    )
    """Waits before retries 1, 2, …; the last repeats."""
    lease_seconds: Annotated[float, Field(gt=0)] = 60.0
    """A delivery being sent is retried after this long if its sender vanished."""
    batch: Annotated[int, Field(ge=1, le=5000)] = 200
    concurrency: Annotated[int, Field(ge=1, le=256)] = 16
    poll_seconds: Annotated[float, Field(gt=0)] = 1.0


class NotifySettings(BaseModel):
    """Customer notifications, payment reminders and operations alerts."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    enabled: bool = True
    default_locale: NonEmptyStr = "en"
    email: EmailSettings = Field(default_factory=EmailSettings)
    webhooks: list[WebhookSettings] = Field(default_factory=list)
    sms: GatewaySettings = Field(default_factory=GatewaySettings)
    push: GatewaySettings = Field(default_factory=GatewaySettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    reminders: ReminderSettings = Field(default_factory=ReminderSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)

    _empty_sections = field_validator(
        "email", "sms", "push", "routing", "reminders", "delivery", mode="before"
    )(_none_is_empty)

    @model_validator(mode="after")
    def _routes_reach_configured_channels(self) -> NotifySettings:
        names = {w.name for w in self.webhooks}
        for severity in ("critical", "high", "medium", "low"):
            for index, route in enumerate(getattr(self.routing, severity)):
                at = ("routing", severity, index)
                missing = None
                if route.channel == "webhook":
                    unknown = [n for n in route.to if n not in names]
                    if unknown:
                        missing = f"webhook {unknown[0]!r} is not among notify.webhooks"
                elif route.channel == "email" and self.email.host is None:
                    missing = "channel email has no notify.email.host"
                elif route.channel in ("sms", "push") and getattr(self, route.channel).url is None:
                    missing = f"channel {route.channel} has no notify.{route.channel}.url"
                if missing:
                    raise PydanticCustomError(
                        "route_channel",
                        "{problem}",
                        {"problem": missing, "at": at, "value": route.channel},
                    )
        return self


class ScheduleSettings(BaseModel):
    """A schedule declared in the config file; the engine creates or updates it at start.

    ``spec`` is checked by the timing module when the engine syncs schedules, not here.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: Annotated[str, AfterValidator(_check_schedule_name)]
    job: NonEmptyStr
    spec: NonEmptyStr
    timezone: IanaZone = "UTC"
    args: dict[str, Any] = Field(default_factory=dict)
    misfire: Literal["run_once", "run_all", "skip"] = "run_once"
    overlap: Literal["skip", "queue", "allow", "cancel_previous"] = "queue"
    calendar: NonEmptyStr | None = None
    """Holiday calendar, ``CC`` or ``CC-SUBDIV`` (``GB-ENG``)."""
    adjust: Literal[
        "none", "following", "modified_following", "preceding", "modified_preceding"
    ] = "none"
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class _LoadContext:
    sources: tuple[PydanticBaseSettingsSource, ...]


_LOADING: ContextVar[_LoadContext | None] = ContextVar("duly_config_loading", default=None)


class Settings(BaseSettings):
    """All of duly's settings (the root of ``duly.yaml``).

    Build it with :func:`load_settings` to read the file and the environment; calling
    ``Settings(...)`` directly gives the defaults and the arguments only.
    """

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        env_ignore_empty=True,
    )

    database_url: Annotated[str, BeforeValidator(_check_database_url)] = "sqlite:///./duly.db"
    """SQLAlchemy URL; ``postgresql://`` and ``postgres://`` become ``postgresql+psycopg://``."""
    timezone: IanaZone = "UTC"
    """Default timezone for display and for schedules that name none."""
    node_name: NonEmptyStr | None = None
    """This process's name among the nodes; ``None`` means ``hostname:pid``."""
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)
    schedules: list[ScheduleSettings] = Field(default_factory=list)
    notify: NotifySettings = Field(default_factory=NotifySettings)

    _empty_sections = field_validator("logging", "engine", "api", "jobs", "notify", mode="before")(
        _none_is_empty
    )

    @field_validator("schedules", mode="before")
    @classmethod
    def _no_schedules(cls, value: Any) -> Any:
        return [] if value is None else value

    @model_validator(mode="after")
    def _unique_schedule_names(self) -> Settings:
        first: dict[str, int] = {}
        for index, schedule in enumerate(self.schedules):
            if schedule.name in first:
                raise PydanticCustomError(
                    "duplicate_schedule_name",
                    "duplicate schedule name (also schedules[{first}].name); names must be unique",
                    {
                        "first": first[schedule.name],
                        "at": ("schedules", index, "name"),
                        "value": schedule.name,
                    },
                )
            first[schedule.name] = index
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, then (inside :func:`load_settings` only) env, then YAML."""
        context = _LOADING.get()
        if context is None:
            return (init_settings,)
        return (init_settings, *context.sources)

    def redacted(self) -> dict[str, Any]:
        """The settings as plain JSON-able data, with the database password hidden."""
        data = self.model_dump(mode="json")
        data["database_url"] = redact_url(self.database_url)
        return data

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if name == "database_url" and isinstance(value, str):
                yield name, redact_url(value)
            else:
                yield name, value


# --------------------------------------------------------------------------- sources


class _Env(EnvSettingsSource):
    """``DULY_*`` variables from a given mapping (not necessarily ``os.environ``).

    Values that should be JSON but are not are passed on as text, so the model reports
    them with their key instead of a generic parsing failure. A nested variable whose
    first part is no setting (``DULY_ENGNE__QUEUES``) is reported as an unknown key;
    plain unknown ``DULY_*`` names are left alone (other tools use some).
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.env_vars = _normalised_env(environ)

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError:
            return value

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        prefix = ENV_PREFIX.lower()
        known = set(self.settings_cls.model_fields)
        for name, value in self.env_vars.items():
            if not name.startswith(prefix):
                continue
            head, sep, tail = name[len(prefix) :].partition(ENV_DELIMITER)
            if sep and head not in known:
                data.setdefault(head, {tail: value})
        return data


class _Yaml(YamlConfigSettingsSource):
    """The YAML file, read with :class:`_YamlLoader` (see there) into plain data."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path, label: str) -> None:
        self._label = label
        super().__init__(settings_cls, yaml_file=path)

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        return _read_yaml(Path(file_path), self._label)


class _YamlLoader(yaml.SafeLoader):
    """YAML 1.1 safe loading with two fixes for config files.

    ``22:00`` stays the text ``"22:00"`` (plain YAML 1.1 reads it as the base-60 integer
    1320), and a key given twice in one mapping is an error instead of the last one
    silently winning.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag not in (_INT_TAG, _FLOAT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver(  # PyYAML's, without the base-60 form
    _INT_TAG,
    re.compile(
        r"""^(?:[-+]?0b[0-1_]+
            |[-+]?0[0-7_]+
            |[-+]?(?:0|[1-9][0-9_]*)
            |[-+]?0x[0-9a-fA-F_]+)$""",
        re.X,
    ),
    list("-+0123456789"),
)
_YamlLoader.add_implicit_resolver(  # PyYAML's, without the base-60 form
    _FLOAT_TAG,
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
            |\.[0-9_]+(?:[eE][-+][0-9]+)?
            |[-+]?\.(?:inf|Inf|INF)
            |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _read_yaml(path: Path, label: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(ConfigProblem("", f"{label} is not UTF-8 text")) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(ConfigProblem("", f"cannot read {label}: {reason}")) from None
    try:
        data = yaml.load(text, Loader=_YamlLoader)  # a SafeLoader subclass: no objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = exc.problem or exc.context or "not valid YAML"
        raise ConfigError(ConfigProblem("", f"{label}{where}: {what}")) from None
    except yaml.YAMLError as exc:
        raise ConfigError(ConfigProblem("", f"{label}: not valid YAML: {exc}")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            ConfigProblem("", f"{label}: the top level must be a mapping of keys, not {data!r:.40}")
        )
    bad_keys = [key for key in data if not isinstance(key, str)]
    if bad_keys:
        raise ConfigError(ConfigProblem("", f"{label}: keys must be text, got {bad_keys[0]!r}"))
    return data


def _normalised_env(environ: Mapping[str, str]) -> dict[str, str | None]:
    """Variable names lower-cased (matching is case-insensitive); empty values ignored."""
    return {name.lower(): value for name, value in environ.items() if value != ""}


# --------------------------------------------------------------------------- loading


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read, merge and validate the settings.

    :param path: the YAML file to read (the CLI's ``--config``). When ``None``, the file
        named by ``DULY_CONFIG`` in ``environ``; when that is unset too, ``./duly.yaml`` if
        it exists, else no file.
    :param environ: where ``DULY_*`` overrides are read; ``os.environ`` by default.
    :raises ConfigError: a named file is missing or unreadable, or any value is invalid
        (all bad values are listed in one line).
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    file, label = _choose_file(path, env)

    env_source = _Env(Settings, env)
    sources: list[PydanticBaseSettingsSource] = [env_source]
    yaml_data: dict[str, Any] | None = None
    if file is not None:
        yaml_source = _Yaml(Settings, file, label)
        yaml_data = yaml_source.yaml_data
        sources.append(yaml_source)

    token = _LOADING.set(_LoadContext(tuple(sources)))
    try:
        return Settings()
    except ValidationError as exc:
        origin = _Origin(_normalised_env(env), _env_names(env), yaml_data, label)
        raise ConfigError(_problems(exc, origin)) from None
    except SettingsError as exc:
        cause = exc.__cause__
        detail = f"{exc}: {cause}" if cause else str(exc)
        raise ConfigError(ConfigProblem("", detail)) from None
    finally:
        _LOADING.reset(token)


def settings_from_cli(config_path: str | None) -> Settings:
    """Settings for a CLI command: ``--config``, else ``DULY_CONFIG``, else ``./duly.yaml``.

    Reads ``os.environ``. Any failure is raised as :class:`ConfigError` with its one-line
    message; printing it and choosing the exit status is the caller's job.
    """
    try:
        return load_settings(config_path or None)
    except ConfigError:
        raise
    except (OSError, ValueError) as exc:  # pragma: no cover - defensive: load_settings maps these
        raise ConfigError(ConfigProblem("", f"cannot load settings: {exc}")) from None


def _choose_file(
    path: str | os.PathLike[str] | None, env: Mapping[str, str]
) -> tuple[Path | None, str]:
    if path is not None:
        named: str | os.PathLike[str] = path
        via = None
    elif env.get(CONFIG_ENV_VAR):
        named = env[CONFIG_ENV_VAR]
        via = CONFIG_ENV_VAR
    else:
        default = Path(DEFAULT_CONFIG_FILE)
        return (default, DEFAULT_CONFIG_FILE) if default.is_file() else (None, "")
    label = os.fspath(named)
    file = Path(label).expanduser()
    if not file.exists():
        raise ConfigError(ConfigProblem("", f"config file {label} not found", source=via))
    if not file.is_file():
        raise ConfigError(ConfigProblem("", f"config file {label} is not a file", source=via))
    return file, label


def _env_names(environ: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): name for name in environ}


# --------------------------------------------------------------------------- messages

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class _Origin:
    """Where values came from, to say which variable or file a bad value is in."""

    env: Mapping[str, str | None]
    env_names: Mapping[str, str]
    yaml: dict[str, Any] | None
    label: str

    def of(self, loc: Loc) -> str | None:
        prefix = ENV_PREFIX.lower()
        for size in range(len(loc), 0, -1):
            head = loc[:size]
            if not all(isinstance(part, str) for part in head):
                continue
            name = prefix + ENV_DELIMITER.join(str(part) for part in head).lower()
            if name in self.env:
                rest = loc[size:]
                if not rest or _has_path(_maybe_json(self.env[name]), rest):
                    return self.env_names.get(name, name.upper())
            elif size == len(loc):
                # an unknown key reached through a longer variable: DULY_BOGUS__X
                for candidate in self.env:
                    if candidate.startswith(name + ENV_DELIMITER):
                        return self.env_names.get(candidate, candidate.upper())
        if self.yaml is not None and _has_path(self.yaml, loc):
            return self.label
        return None


def _maybe_json(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value


def _has_path(data: Any, loc: Loc) -> bool:
    for part in loc:
        in_list = isinstance(part, int) and isinstance(data, list) and 0 <= part < len(data)
        in_dict = isinstance(part, str) and isinstance(data, dict) and part in data
        if not (in_list or in_dict):
            return False
        data = data[part]
    return True


def _key(loc: Loc) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def _show(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    elif isinstance(value, int | float):
        text = str(value)
    elif isinstance(value, str):
        text = repr(redact_url(value) if "://" in value else value)
    elif isinstance(value, dict | list):
        try:
            text = json.dumps(value, default=str, ensure_ascii=False)
        except ValueError:
            text = repr(value)
    else:
        text = repr(value)
    if len(text) > _MAX_VALUE_CHARS:
        text = text[: _MAX_VALUE_CHARS - 1] + "…"
    return _one_line(text)


def _strip(annotation: Any) -> tuple[Any, list[Any]]:
    """Unwrap ``Annotated`` and ``X | None``: the bare type and its constraint metadata."""
    metadata: list[Any] = []
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation, *extra = get_args(annotation)
            for item in extra:
                metadata.extend(item.metadata if isinstance(item, FieldInfo) else [item])
        elif origin in (Union, types.UnionType):
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return annotation, metadata
            annotation = members[0]
        else:
            return annotation, metadata


def _at(loc: Loc) -> tuple[Any, list[Any]] | None:
    """The type expected at ``loc`` in :class:`Settings`, with its constraints."""
    annotation: Any = Settings
    metadata: list[Any] = []
    for part in loc:
        annotation, _ = _strip(annotation)
        if isinstance(part, int):
            if get_origin(annotation) is not list:
                return None
            annotation, metadata = _strip(get_args(annotation)[0])
            continue
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        field = annotation.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        metadata = list(field.metadata)
    annotation, more = _strip(annotation)
    return annotation, metadata + more


def _bounds(metadata: list[Any]) -> str:
    lower: tuple[str, Any] | None = None
    upper: tuple[str, Any] | None = None
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            lower = ("≥", item.ge)
        elif isinstance(item, annotated_types.Gt):
            lower = (">", item.gt)
        elif isinstance(item, annotated_types.Le):
            upper = ("≤", item.le)
        elif isinstance(item, annotated_types.Lt):
            upper = ("<", item.lt)
    if lower and upper and lower[0] == "≥" and upper[0] == "≤":
        return f"between {_show(lower[1])} and {_show(upper[1])}"
    parts = [f"{pair[0]} {_show(pair[1])}" for pair in (lower, upper) if pair]
    return " and ".join(parts)


def _ctx_bounds(ctx: Mapping[str, Any]) -> list[Any]:
    kinds = {
        "ge": annotated_types.Ge,
        "gt": annotated_types.Gt,
        "le": annotated_types.Le,
        "lt": annotated_types.Lt,
    }
    return [kinds[name](ctx[name]) for name in kinds if name in ctx]


def _allowed_keys(loc: Loc) -> list[str]:
    found = _at(loc)
    if found and isinstance(found[0], type) and issubclass(found[0], BaseModel):
        return list(found[0].model_fields)
    return []


_NUMBER_ERRORS = {
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "finite_number": "a finite number",
}
_BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def _rule(kind: str, loc: Loc, error: Mapping[str, Any], from_env: bool) -> tuple[str, bool]:
    """What is allowed at ``loc``, and whether to show the value."""
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    found = _at(loc)
    metadata = found[1] if found else []
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        guess = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean {guess[0]}? " if guess else ""
        return f"unknown key ({hint}allowed: {', '.join(allowed)})", False
    if kind == "missing":
        return "required key is missing", False
    if kind in _NUMBER_ERRORS:
        bounds = _bounds(metadata)
        return f"expected {_NUMBER_ERRORS[kind]}{' ' + bounds if bounds else ''}", True
    if kind in _BOUND_ERRORS:
        bounds = _bounds(metadata) or _bounds(_ctx_bounds(ctx))
        return f"must be {bounds}", True
    if kind in ("bool_parsing", "bool_type"):
        return "expected true or false", True
    if kind == "string_type":
        return "expected text", True
    if kind == "string_too_short":
        return "must not be empty", True
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length', 1)} item(s)", True
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected', '')}", True
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "expected a mapping of keys" + (" as a JSON object" if from_env else ""), True
    if kind == "list_type":
        return "expected a list" + (' as a JSON array, e.g. ["a", "b"]' if from_env else ""), True
    return str(error.get("msg", "invalid value")), True


def _problems(exc: ValidationError, origin: _Origin) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    for error in exc.errors(include_url=False):
        loc: Loc = tuple(error["loc"])
        kind = error["type"]
        ctx: Mapping[str, Any] = error.get("ctx") or {}
        value: Any = error.get("input")
        related: list[Loc] = []
        if "at" in ctx:  # a cross-field rule raised on the parent: point at the field
            parent = loc
            loc = parent + tuple(ctx["at"])
            value = ctx.get("value")
            related = [parent + tuple(extra) for extra in ctx.get("related", ())]
        sources: list[str] = []
        for where in (loc, *related):
            source = origin.of(where)
            if source and source not in sources:
                sources.append(source)
        from_env = bool(sources) and sources[0] in origin.env_names.values()
        rule, show_value = _rule(kind, loc, error, from_env)
        problems.append(
            ConfigProblem(
                key=_key(loc) or "(top level)",
                rule=rule,
                value=_show(value) if show_value else None,
                source=", ".join(sources) or None,
            )
        )
    return problems
