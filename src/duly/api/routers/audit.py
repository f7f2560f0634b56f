"""``/audit``: the audit trail — list events, verify the chain. Auditors and admins only.

Both go through :class:`duly.audit.AuditLog`, as ``duly audit list`` and ``duly audit
verify`` do. The list is newest first by row (an event not sealed yet has ``seq`` null);
verification recomputes every hash and checks every checkpoint with the configured
public key, and answers the report whatever it finds (``ok`` false names the first bad
sequence number), so a monitor can poll it.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from duly.api.context import ApiContext, Ctx
from duly.api.errors import ApiError
from duly.api.pagination import Cursor, Limit, Page, page_of
from duly.api.paths import API_PREFIX
from duly.api.routers._monitoring import MAX_ID, bounds, id_cursor
from duly.api.schemas import Instant, Response
from duly.api.security import roles
from duly.audit import AuditEvent, AuditFilter, AuditKeyError, AuditLog
from duly.auth.roles import Role

router = APIRouter(prefix=f"{API_PREFIX}/audit", tags=["audit"])

AUDIT_ROLES = (Role.ADMIN, Role.AUDITOR)


class AuditEventOut(Response):
    """One recorded change: who, what, on which object, in which request, and its hashes."""

    id: int
    seq: int | None
    at: datetime
    actor: str
    actor_name: str | None
    actor_role: str | None
    action: str
    object_type: str
    object_id: str | None
    request_id: str | None
    details: dict[str, Any]
    prev_hash: str | None
    hash: str | None


class Problem(Response):
    """The first thing wrong: at sequence number ``seq``, because ``reason``."""

    seq: int
    reason: str


class VerifyReportOut(Response):
    """What verifying the chain found."""

    ok: bool
    events: int
    first_seq: int | None
    last_seq: int | None
    last_hash: str | None
    checkpoints: int
    last_checkpoint: int | None
    signatures_checked: bool
    unsigned_tail: int
    unsealed: int
    problem: Problem | None
    notes: list[str]


def audit_log(ctx: ApiContext) -> AuditLog:
    """The audit trail of the API's database."""
    return AuditLog(ctx.store.engine, ctx.clock, ctx.settings.audit)


def event_out(event: AuditEvent) -> AuditEventOut:
    """The API's view of an event."""
    r = event.record
    return AuditEventOut(
        id=event.id, seq=r.seq, at=event.at, actor=r.actor, actor_name=r.actor_name,
        actor_role=r.actor_role, action=r.action, object_type=r.object_type,
        object_id=r.object_id, request_id=r.request_id, details=json.loads(r.details),
        prev_hash=r.prev_hash, hash=r.hash,
    )  # fmt: skip


@router.get("", summary="Audit events, newest first", **roles(*AUDIT_ROLES))
def list_events(
    ctx: Ctx,
    actor: Annotated[
        str | None, Query(max_length=200, description="e.g. `token:7f3k2m9q`.")
    ] = None,
    action: Annotated[str | None, Query(max_length=64, description="e.g. `run.fire`.")] = None,
    object_type: Annotated[str | None, Query(max_length=64, description="e.g. `schedule`.")] = None,
    object_id: Annotated[str | None, Query(max_length=200)] = None,
    since: Annotated[Instant | None, Query(description="Recorded at or after.")] = None,
    until: Annotated[Instant | None, Query(description="Recorded before.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[AuditEventOut]:
    start, end = bounds(since, until)
    flt = AuditFilter(
        actor=actor, action=action, object_type=object_type, object_id=object_id,
        since=start, until=end, limit=limit + 1, before_id=id_cursor(cursor),
    )  # fmt: skip
    return page_of(audit_log(ctx).list(flt), limit, event_out, lambda e: e.id)


@router.get("/verify", summary="Verify the chain and its signed checkpoints (409: no key)",
            **roles(*AUDIT_ROLES))  # fmt: skip
def verify_chain(
    ctx: Ctx,
    from_seq: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Start at this sequence number.")
    ] = None,
) -> VerifyReportOut:
    log = audit_log(ctx)
    try:
        key = log.verify_key()
    except AuditKeyError:
        raise ApiError(409, "no audit key is configured (audit.signing_key_file): "
                       "signatures cannot be checked", code="AUDIT_KEY_MISSING") from None  # fmt: skip
    return VerifyReportOut.model_validate(log.verify(from_seq, key).as_json())
