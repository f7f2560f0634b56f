"""Schedules declared in the configuration file, synchronised at start."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from duly.config.fields import IanaZone, NonEmptyStr, check_schedule_name


class ScheduleSettings(BaseModel):
    """A schedule declared in the config file; the engine creates or updates it at start.

    ``spec`` is checked by the timing module when the engine syncs schedules, not here.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: Annotated[str, AfterValidator(check_schedule_name)]
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
