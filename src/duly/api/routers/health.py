"""``/health/live``, ``/health/ready`` and ``/metrics``: for load balancers and Prometheus.

No token is needed: they reveal no customer data. ``/health/ready`` answers 503 while the
node cannot serve (database unreachable, a loop stopped), as load balancers expect.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from duly.api.context import Ctx
from duly.api.schemas import Response as Model
from duly.metrics import StoreCollector

router = APIRouter(tags=["health"])
log = structlog.get_logger("duly.api")

LoopProbe = Callable[[], dict[str, bool]]


class Live(Model):
    """The process answers."""

    status: str


class Ready(Model):
    """Whether this node can do its work, and why not."""

    status: str
    database: bool
    loops: dict[str, bool]
    oldest_due_run_seconds: float | None


@router.get("/health/live", summary="The process answers")
def live() -> Live:
    return Live(status="ok")


@router.get("/health/ready", summary="Database reachable, loops alive, queue lag",
            responses={503: {"model": Ready, "description": "Not ready."}})  # fmt: skip
def ready(ctx: Ctx) -> JSONResponse:
    probe: Any = ctx.health
    loops: dict[str, bool] = probe() if callable(probe) else {}
    lag: float | None = None
    database = True
    try:
        oldest = ctx.store.run_oldest_due(ctx.clock.now())
        lag = (ctx.clock.now() - oldest).total_seconds() if oldest is not None else 0.0
    except Exception as exc:  # any failure to read means not ready, whatever the driver says
        database = False
        log.warning("health.database_unreachable", error=type(exc).__name__)
    ok = database and all(loops.values())
    body = Ready(status="ok" if ok else "unavailable", database=database, loops=loops,
                 oldest_due_run_seconds=lag)  # fmt: skip
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(ctx: Ctx) -> Response:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(ctx.store, ctx.clock))
    text = generate_latest(REGISTRY) + generate_latest(registry)
    return Response(text, media_type=CONTENT_TYPE_LATEST)
