"""Settings of the engine (claiming, leases, concurrency) and of logging."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from duly.config.errors import show_value
from duly.config.fields import NonEmptyStr


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
    sqlite_poll_seconds: Annotated[float, Field(ge=0, le=1)] = 0.002
    """SQLite: how often a worker checks the file for another process's commit (0: never)."""
    reaper_interval_seconds: Annotated[float, Field(gt=0)] = 15.0
    """How often expired leases are looked for."""
    shutdown_grace_seconds: Annotated[float, Field(ge=0)] = 30.0
    """How long running jobs may finish after a stop is asked for."""
    misfire_grace_seconds: Annotated[float, Field(ge=0)] = 60.0
    """How late a fire may be and still count as on time."""
    watchdog_start_minutes: Annotated[float, Field(gt=0)] = 5.0
    """Alert when a scheduled run has not started this long after its time."""
    watchdog_overdue_minutes: Annotated[float, Field(gt=0)] = 5.0
    """Alert when a schedule's next fire is this long past and no run was made for it."""
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
                    "lease": show_value(self.lease_seconds),
                    "at": ("heartbeat_seconds",),
                    "value": self.heartbeat_seconds,
                    "related": (("lease_seconds",),),
                },
            )
        return self
