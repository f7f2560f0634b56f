"""Settings of the HTTP API."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from duly.config.fields import NonEmptyStr


class ApiSettings(BaseModel):
    """The HTTP API and dashboard listener, and the limits every request is held to."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    host: NonEmptyStr = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    metrics_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """A separate port for ``/metrics`` (``duly worker`` has no other); ``None``: ``duly serve``
    serves it on ``port`` beside the API."""
    rate_limit_per_second: Annotated[float, Field(gt=0)] = 200.0
    """Requests a second each token may make on average (a token bucket)."""
    rate_limit_burst: Annotated[int, Field(ge=1)] = 400
    """Requests a token may make at once before the average applies."""
    max_body_bytes: Annotated[int, Field(ge=1024)] = 1_048_576
    """Largest request body; a larger one gets 413 unread."""
    idempotency_hours: Annotated[float, Field(gt=0)] = 24.0
    """How long an ``Idempotency-Key`` answers with its first response."""
    max_wait_seconds: Annotated[float, Field(ge=0, le=3600)] = 60.0
    """The cap on ``wait`` when triggering a job and waiting for its result."""
    token_cache_seconds: Annotated[float, Field(ge=0, le=60)] = 5.0
    """How long a verified token is trusted from memory (``0``: every request reads the store).
    A revocation through this node's API holds at once, one made elsewhere within this long."""
    threads: Annotated[int, Field(ge=1, le=256)] = 12
    """Worker threads for the API's database calls (``duly serve``): more only contend for
    the interpreter and the connection pool."""
