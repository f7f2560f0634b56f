"""``/alerts``: operations alerts — list, one alert, acknowledge, resolve.

An alert goes ``open`` → ``acked`` → ``resolved`` (or straight to ``resolved``); the change is
recorded with the calling token as the actor, through the engine client as ``duly alerts``
does. A resolved alert cannot change again (409).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from duly.api.context import Ctx
from duly.api.pagination import Cursor, Limit, Page, page_of
from duly.api.paths import API_PREFIX
from duly.api.routers._monitoring import Id, actor_of, id_cursor
from duly.api.schemas import Response
from duly.api.security import OPS, READ_ALL, roles
from duly.engine.store.base import AlertRow

router = APIRouter(prefix=f"{API_PREFIX}/alerts", tags=["alerts"])

Status = Literal["open", "acked", "resolved"]


class Alert(Response):
    """An alert raised by a rule, counted again while open, and who acted on it."""

    id: int
    rule: str
    severity: str
    status: Status
    title: str
    details: dict[str, Any]
    run_id: int | None
    job_name: str | None
    occurrences: int
    first_raised_at: datetime
    last_raised_at: datetime
    acked_at: datetime | None
    acked_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None


def alert_out(row: AlertRow) -> Alert:
    """The API's view of an alert."""
    return Alert.model_validate(row)


@router.get("", summary="Alerts, newest first", **roles(*READ_ALL))
def list_alerts(
    ctx: Ctx,
    status: Annotated[Status | None, Query(description="Only this status.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[Alert]:
    rows = ctx.client.alerts(status, limit + 1, before_id=id_cursor(cursor))
    return page_of(rows, limit, alert_out, lambda r: r.id)


@router.get("/{alert_id}", summary="One alert", **roles(*READ_ALL))
def get_alert(ctx: Ctx, alert_id: Id) -> Alert:
    return alert_out(ctx.client.alert(alert_id))


@router.post("/{alert_id}/ack", summary="Acknowledge an alert", **roles(*OPS))
def ack_alert(request: Request, ctx: Ctx, alert_id: Id) -> Alert:
    return alert_out(ctx.client.set_alert_status(alert_id, "acked", actor_of(request)))


@router.post("/{alert_id}/resolve", summary="Resolve an alert", **roles(*OPS))
def resolve_alert(request: Request, ctx: Ctx, alert_id: Id) -> Alert:
    return alert_out(ctx.client.set_alert_status(alert_id, "resolved", actor_of(request)))
