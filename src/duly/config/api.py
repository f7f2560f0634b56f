"""Settings of the HTTP API."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from duly.config.fields import NonEmptyStr


class ApiSettings(BaseModel):
    """The HTTP API and dashboard listener."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    host: NonEmptyStr = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    metrics_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """A separate port for ``/metrics``; ``None`` serves it on ``port``."""
