"""The FastAPI application: ``/api/v1`` (one router per resource), ``/health``, ``/metrics``.

:func:`create_app` builds it over a running system's store and clock; ``duly serve`` runs
it with uvicorn beside the scheduler and the worker, and tests call it over httpx.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import FastAPI

from duly.api.context import ApiContext
from duly.api.errors import ERROR_RESPONSES, install_error_handlers
from duly.api.idempotency import IdempotencyKeys
from duly.api.middleware import RequestGate
from duly.api.ratelimit import RateLimiter
from duly.api.routers import (
    accounts,
    alerts,
    audit,
    balance_checks,
    customers,
    error_codes,
    errors,
    health,
    history,
    jobs,
    recurring_payments,
    runs,
    schedules,
    tokens,
    transfers,
)
from duly.auth.cache import TokenCache
from duly.auth.service import TokenService
from duly.clock import Clock
from duly.config import Settings
from duly.engine.client import EngineClient
from duly.engine.registry import JobRegistry
from duly.engine.store.sql import SqlStore
from duly.version import __version__

__all__ = ["RESOURCE_ROUTERS", "create_app"]

#: Every resource router, in the order the OpenAPI document lists them.
RESOURCE_ROUTERS = [
    jobs.router,
    schedules.router,
    runs.router,
    customers.router,
    history.router,
    accounts.router,
    transfers.router,
    recurring_payments.router,
    balance_checks.router,
    errors.router,
    error_codes.router,
    alerts.router,
    tokens.router,
    audit.router,
]

_DESCRIPTION = """\
duly's HTTP API. Every `/api/v1` call needs `Authorization: Bearer <token>` (a token from
`duly token create`); each route lists the roles it admits. Errors are always
`{"error": {"code", "message", "details"}}`. Lists are cursor-paginated (`limit` ≤ 500,
`next_cursor`). Creating POSTs take an `Idempotency-Key`. Money is a decimal string with a
currency; times are ISO-8601 with an offset.
"""


def create_app(
    settings: Settings,
    store: SqlStore,
    registry: JobRegistry,
    clock: Clock,
    *,
    health_probe: Any = None,
) -> FastAPI:
    """The API over ``store``; ``health_probe`` reports the node's loops when one runs here."""
    api = settings.api
    ctx = ApiContext(
        store=store,
        client=EngineClient(store, registry, clock),
        tokens=TokenService(store.engine, clock,
                            TokenCache(timedelta(seconds=api.token_cache_seconds))),
        keys=IdempotencyKeys(
            store.engine,
            clock,
            ttl=timedelta(hours=api.idempotency_hours),
            stale_after=timedelta(seconds=api.max_wait_seconds + 60),
        ),
        settings=settings,
        max_wait=timedelta(seconds=api.max_wait_seconds),
        health=health_probe,
    )
    app = FastAPI(
        title="duly",
        version=__version__,
        description=_DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.duly = ctx
    install_error_handlers(app)
    for router in RESOURCE_ROUTERS:
        app.include_router(router, responses=ERROR_RESPONSES)
    app.include_router(health.router)
    app.add_middleware(
        RequestGate,
        tokens=ctx.tokens,
        clock=clock,
        limiter=RateLimiter(api.rate_limit_per_second, api.rate_limit_burst),
        max_body_bytes=api.max_body_bytes,
    )
    return app
