"""The root settings model: every area's settings, and where they are read from."""

from __future__ import annotations

from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from duly.config.api import ApiSettings
from duly.config.audit import AuditSettings
from duly.config.balance_check import JobsSettings
from duly.config.database import DatabaseSettings, check_database_url, redact_url
from duly.config.engine import EngineSettings, LoggingSettings
from duly.config.fields import IanaZone, NonEmptyStr, none_is_empty
from duly.config.history import HistorySettings
from duly.config.notify import NotifySettings
from duly.config.schedules import ScheduleSettings

ENV_PREFIX = "DULY_"

"""Prefix of every environment override."""


ENV_DELIMITER = "__"

"""Joins the parts of a nested key in an environment variable name."""


@dataclass(frozen=True, slots=True)
class LoadContext:
    sources: tuple[PydanticBaseSettingsSource, ...]


LOADING: ContextVar[LoadContext | None] = ContextVar("duly_config_loading", default=None)


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

    database_url: Annotated[str, BeforeValidator(check_database_url)] = "sqlite:///./duly.db"
    """SQLAlchemy URL; ``postgresql://`` and ``postgres://`` become ``postgresql+psycopg://``."""
    timezone: IanaZone = "UTC"
    """Default timezone for display and for schedules that name none."""
    node_name: NonEmptyStr | None = None
    """This process's name among the nodes; ``None`` means ``hostname:pid``."""
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    """Connection timeouts, keepalives and the pool (``database_url`` says where)."""
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    history: HistorySettings = Field(default_factory=HistorySettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)
    schedules: list[ScheduleSettings] = Field(default_factory=list)
    notify: NotifySettings = Field(default_factory=NotifySettings)

    _empty_sections = field_validator(
        "database", "logging", "engine", "api", "audit", "history", "jobs", "notify",
        mode="before",
    )(none_is_empty)

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
        context = LOADING.get()
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
