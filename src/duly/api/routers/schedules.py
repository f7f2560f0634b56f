"""``/schedules``: create from a registered job, update, delete, pause, resume, preview.

Schedules made here (``source: api``) live beside those from the configuration file
(``source: config``) and duly's own (``system``). An edit or a pause made here is kept when
nodes start and synchronise the file: editing a configured schedule makes it ``api``.
"""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import datetime
from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from duly.api.context import Ctx
from duly.api.errors import ApiError
from duly.api.idempotency import Created, respond_once
from duly.api.pagination import Cursor, Limit, Page, decode_cursor, page_of
from duly.api.paths import API_PREFIX
from duly.api.schemas import Instant, Response
from duly.api.schemas import Request as Body
from duly.api.security import OPS, READ_ALL, roles
from duly.engine.errors import ScheduleExists, UnknownJob
from duly.engine.store.base import NewSchedule, ScheduleRow
from duly.timing import SpecError

router = APIRouter(prefix=f"{API_PREFIX}/schedules", tags=["schedules"])

Misfire = Literal["run_once", "run_all", "skip"]
Overlap = Literal["skip", "queue", "allow", "cancel_previous"]
Convention = Literal["none", "following", "modified_following", "preceding", "modified_preceding"]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$",
                            description="Unique name: letters, digits, `.`, `_`, `:`, `-`.")]  # fmt: skip
Spec = Annotated[str, Field(min_length=1, max_length=500, examples=["weekdays:07:30"],
                            description="`daily:HH:MM`, `weekdays:HH:MM`, `weekly:mon,thu:HH:MM`, "
                            "`cron:…`, `every:15m`, `at:ISO`, `rrule:…`.")]  # fmt: skip
Zone = Annotated[str, Field(min_length=1, max_length=64, examples=["Europe/London"])]


class ScheduleIn(Body):
    """A new schedule of a registered job."""

    name: Name
    job: str = Field(min_length=1, max_length=200)
    spec: Spec
    timezone: Zone = "UTC"
    args: dict[str, Any] = Field(default_factory=dict)
    calendar: str | None = Field(None, min_length=2, max_length=32,
                                 description="Holiday calendar `CC` or `CC-SUBDIV`.")  # fmt: skip
    adjust: Convention = "none"
    misfire: Misfire = "run_once"
    misfire_grace_seconds: int = Field(60, ge=0, le=7 * 86400)
    overlap: Overlap = "queue"
    start_at: Instant | None = None
    end_at: Instant | None = None
    paused: bool = False


class SchedulePatch(Body):
    """The fields to change; those left out stay as they are."""

    spec: Spec | None = None
    timezone: Zone | None = None
    args: dict[str, Any] | None = None
    calendar: str | None = Field(None, min_length=2, max_length=32)
    adjust: Convention | None = None
    misfire: Misfire | None = None
    misfire_grace_seconds: int | None = Field(None, ge=0, le=7 * 86400)
    overlap: Overlap | None = None
    start_at: Instant | None = None
    end_at: Instant | None = None


class Schedule(Response):
    """A schedule, its policies, its state and its next fire."""

    id: int
    name: str
    job_name: str
    spec: str
    timezone: str
    calendar: str | None
    adjust: str
    args: dict[str, Any]
    misfire: str
    misfire_grace_seconds: int
    overlap: str
    start_at: datetime | None
    end_at: datetime | None
    paused: bool
    broken_reason: str | None
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    source: str
    """`api` (made or edited here), `config` (the configuration file) or `system` (duly's own)."""
    version: int
    created_at: datetime
    updated_at: datetime


class Preview(Response):
    """The next fires, as instants in the schedule's zone (with its offset)."""

    timezone: str
    fires: list[datetime]


def schedule_out(row: ScheduleRow) -> Schedule:
    """The API's view of a schedule."""
    return Schedule.model_validate(row)


def _new(body: ScheduleIn) -> NewSchedule:
    return NewSchedule(
        name=body.name, job_name=body.job, spec=body.spec, timezone=body.timezone,
        args=body.args, calendar=body.calendar, adjust=body.adjust, misfire=body.misfire,
        misfire_grace_seconds=body.misfire_grace_seconds, overlap=body.overlap,
        start_at=body.start_at, end_at=body.end_at, paused=body.paused, source="api",
    )  # fmt: skip


def _as_new(row: ScheduleRow) -> NewSchedule:
    return NewSchedule(**{f.name: getattr(row, f.name) for f in fields(NewSchedule)})


def _get(ctx: Ctx, name: str) -> ScheduleRow:
    row = ctx.store.schedule_get(name)
    if row is None:
        raise ApiError(404, f"no schedule named {name!r}")
    return row


@router.get("", summary="Every schedule, by name", **roles(*READ_ALL))
def list_schedules(ctx: Ctx, limit: Limit = 50, cursor: Cursor = None) -> Page[Schedule]:
    after = decode_cursor(cursor, str)
    rows = [r for r in ctx.store.schedule_list() if after is None or r.name > after]
    return page_of(rows[: limit + 1], limit, schedule_out, lambda r: r.name)


@router.get("/preview", summary="The next fires of a spec, before making a schedule",
            **roles(*READ_ALL))  # fmt: skip
def preview_spec(
    ctx: Ctx,
    spec: Annotated[str, Query(min_length=1, max_length=500)],
    tz: Annotated[str, Query(min_length=1, max_length=64)] = "UTC",
    after: Annotated[Instant | None, Query(description="Start after this (default now).")] = None,
    count: Annotated[int, Query(ge=1, le=1000)] = 10,
    calendar: Annotated[str | None, Query(min_length=2, max_length=32)] = None,
    adjust: Convention = "none",
) -> Preview:
    fires = ctx.client.preview(spec, tz, after=after, count=count, calendar=calendar, adjust=adjust)
    return Preview(timezone=tz, fires=fires)


@router.post("", status_code=201, summary="Create a schedule of a registered job",
             response_model=Schedule, **roles(*OPS))  # fmt: skip
async def create_schedule(
    request: Request,
    ctx: Ctx,
    body: ScheduleIn,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
) -> JSONResponse:
    new = _new(body)

    def create() -> Created:
        try:
            row, _ = ctx.client.create_schedule(new)
        except ScheduleExists as exc:
            raise ApiError(409, str(exc), code="ALREADY_EXISTS") from None
        except UnknownJob as exc:
            raise ApiError(422, f"job: {exc}", code="UNKNOWN_JOB") from None
        return Created(201, schedule_out(row).model_dump(mode="json"),
                       f"/api/v1/schedules/{row.name}")  # fmt: skip

    async def run(_key: str | None) -> Created:
        return await anyio.to_thread.run_sync(create)

    return await respond_once(request, ctx.keys, idempotency_key, body.model_dump(mode="json"), run)


@router.get("/{name}", summary="One schedule", **roles(*READ_ALL))
def get_schedule(ctx: Ctx, name: str) -> Schedule:
    return schedule_out(_get(ctx, name))


@router.patch("/{name}", summary="Change a schedule's spec, zone, calendar or policies",
              **roles(*OPS))  # fmt: skip
def update_schedule(ctx: Ctx, name: str, body: SchedulePatch) -> Schedule:
    current = _get(ctx, name)
    changes = body.model_dump(exclude_unset=True)
    for required in ("spec", "timezone", "adjust", "misfire", "overlap", "args",
                     "misfire_grace_seconds"):  # fmt: skip
        if required in changes and changes[required] is None:
            raise ApiError(422, f"{required}: may not be null")
    edited = replace(_as_new(current), **changes, source="api")
    return schedule_out(ctx.client.upsert_schedule(edited))


@router.delete("/{name}", status_code=204, summary="Delete a schedule (its runs stay)",
               **roles(*OPS))  # fmt: skip
def delete_schedule(ctx: Ctx, name: str) -> None:
    ctx.client.delete_schedule(name)


@router.post("/{name}/pause", summary="Stop firing until resumed", **roles(*OPS))
def pause_schedule(ctx: Ctx, name: str) -> Schedule:
    return schedule_out(ctx.client.pause(name))


@router.post("/{name}/resume", summary="Fire again from now on", **roles(*OPS))
def resume_schedule(ctx: Ctx, name: str) -> Schedule:
    return schedule_out(ctx.client.resume(name))


@router.get("/{name}/preview", summary="A schedule's next fires", **roles(*READ_ALL))
def preview_schedule(
    ctx: Ctx,
    name: str,
    count: Annotated[int, Query(ge=1, le=1000)] = 10,
    after: Annotated[Instant | None, Query()] = None,
) -> Preview:
    row = _get(ctx, name)
    try:
        fires = ctx.client.schedule_preview(row, after=after, count=count)
    except SpecError as exc:
        raise ApiError(409, f"schedule {name!r} cannot fire: {exc}", code="SCHEDULE_BROKEN") from None
    return Preview(timezone=row.timezone, fires=fires)
