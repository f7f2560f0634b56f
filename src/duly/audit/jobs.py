"""The audit trail's retention job, ``duly.audit.prune``, in :data:`audit_registry`."""

from __future__ import annotations

from typing import Any

from duly.audit.service import AuditLog
from duly.config.audit import AuditSettings
from duly.engine.context import JobContext
from duly.engine.registry import JobRegistry
from duly.engine.retry import RetryPolicy

__all__ = ["AUDIT_PRUNE_JOB", "audit_registry"]

AUDIT_PRUNE_JOB = "duly.audit.prune"

audit_registry = JobRegistry()


@audit_registry.job(
    AUDIT_PRUNE_JOB, timeout=3600, retry=RetryPolicy.fixed([300, 900]), max_concurrency=1
)
def prune_audit(ctx: JobContext) -> dict[str, Any]:
    """Delete audit events older than ``retention_days``, whole checkpointed ranges only.

    The pruning records its own ``audit.prune`` event in the same transaction.
    """
    days = int(ctx.args.get("retention_days", AuditSettings().retention_days))
    if days < 1:
        raise ValueError("retention_days must be ≥ 1")
    assert ctx._store is not None
    audit = AuditLog(ctx._store.engine, ctx.clock, AuditSettings(retention_days=days))
    removed, through = audit.prune()
    ctx.log.info("audit.pruned", events_removed=removed, through_seq=through)
    return {"events_removed": removed, "through_seq": through, "retention_days": days}
