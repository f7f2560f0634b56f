"""``/jobs``: the registered jobs, and running one now (optionally waiting for its result)."""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from duly.api.context import Ctx
from duly.api.idempotency import Created, respond_once
from duly.api.pagination import Page
from duly.api.paths import API_PREFIX
from duly.api.routers.runs import Run, final_or_none, run_out
from duly.api.schemas import Request as Body
from duly.api.schemas import Response
from duly.api.security import OPS, READ_ALL, roles
from duly.engine.states import FINAL

router = APIRouter(prefix=f"{API_PREFIX}/jobs", tags=["jobs"])


class Job(Response):
    """A job this installation can run."""

    name: str
    queue: str
    timeout_seconds: float
    max_attempts: int
    max_concurrency: int | None
    description: str


class TriggerBody(Body):
    """The arguments of a manual run."""

    args: dict[str, Any] = Field(default_factory=dict, description="The job's arguments (JSON).")


IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=200,
           description="The same key and body answer the first response again."),
]


@router.get("", summary="The registered jobs", **roles(*READ_ALL))
def list_jobs(ctx: Ctx) -> Page[Job]:
    jobs = [
        Job(name=j.name, queue=j.queue, timeout_seconds=j.timeout.total_seconds(),
            max_attempts=j.retry.max_attempts, max_concurrency=j.max_concurrency,
            description=j.description)
        for j in ctx.client.registry
    ]
    return Page[Job](items=sorted(jobs, key=lambda j: j.name))


@router.post(
    "/{name}/runs",
    summary="Run a job now; with `wait`, answer its result if it finishes in time",
    status_code=202,
    responses={200: {"model": Run, "description": "The run finished within `wait`."},
               202: {"model": Run, "description": "Queued (or still running); poll `Location`."}},
    response_model=Run,
    **roles(*OPS),
)
async def trigger_job(
    request: Request,
    ctx: Ctx,
    name: str,
    body: TriggerBody | None = None,
    wait: Annotated[
        float, Query(ge=0, le=3600, description="Seconds to wait for the result (capped).")
    ] = 0,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    args = body.args if body is not None else {}
    wait_for = min(wait, ctx.max_wait.total_seconds())

    async def create(key: str | None) -> Created:
        run, _ = await anyio.to_thread.run_sync(
            lambda: ctx.client.trigger(name, args, idempotency_key=key)
        )
        if wait_for > 0 and run.status not in FINAL:
            run = await final_or_none(ctx, run.id, wait_for)
        location = f"/api/v1/runs/{run.id}"
        status = 200 if run.status in FINAL else 202
        return Created(status, run_out(run).model_dump(mode="json"), location)

    return await respond_once(request, ctx.keys, idempotency_key, {"job": name, "args": args},
                              create)  # fmt: skip
