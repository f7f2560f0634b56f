"""What every route needs from the running system, as one FastAPI dependency."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request

from duly.api.idempotency import IdempotencyKeys
from duly.auth.service import TokenService
from duly.clock import Clock
from duly.config import Settings
from duly.engine.client import EngineClient
from duly.engine.store.sql import SqlStore

__all__ = ["ApiContext", "Ctx", "api_context"]


@dataclass
class ApiContext:
    """The system's parts the routes call: store, clock, engine client, tokens, keys."""

    store: SqlStore
    client: EngineClient
    tokens: TokenService
    keys: IdempotencyKeys
    settings: Settings
    max_wait: timedelta
    health: object | None = None  # the node's liveness, when a node runs in this process

    @property
    def clock(self) -> Clock:
        """The injected clock."""
        return self.client.clock


def api_context(request: Request) -> ApiContext:
    """The :class:`ApiContext` of the app serving ``request``."""
    ctx: ApiContext = request.app.state.duly
    return ctx


Ctx = Annotated[ApiContext, Depends(api_context)]
