"""Jobs every node has: retention (``duly.prune``) and diagnostics (``duly.noop``, ``duly.sleep``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from duly.engine.context import JobContext
from duly.engine.registry import JobRegistry
from duly.engine.retry import RetryPolicy

__all__ = ["builtin_registry"]

builtin_registry = JobRegistry()


@builtin_registry.job(
    "duly.prune", timeout=3600, retry=RetryPolicy.fixed([300, 900]), max_concurrency=1
)
def prune(ctx: JobContext) -> dict[str, Any]:
    """Delete attempt records (``job_executions``) older than the retention period."""
    days = int(ctx.args.get("retention_days", 90))
    if days < 1:
        raise ValueError("retention_days must be ≥ 1")
    now = ctx.clock.now()
    before = now - timedelta(days=days)
    assert ctx._store is not None
    deleted = ctx._store.execution_prune(before, now=now)
    ctx.log.info("prune.done", deleted=deleted, before=before.isoformat())
    return {"job_executions_deleted": deleted, "before": before.isoformat()}


@builtin_registry.job("duly.noop", timeout=60, retry=1, inline=True)
def noop(ctx: JobContext) -> dict[str, Any]:
    """Do nothing; measures the engine's own overhead (inline: no thread hand-off)."""
    return {"ok": True}


@builtin_registry.job("duly.sleep", timeout=3600, retry=3)
async def sleep(ctx: JobContext) -> dict[str, Any]:
    """Wait ``seconds`` (argument) of the engine's clock, reporting progress each second."""
    seconds = float(ctx.args.get("seconds", 1))
    steps = max(int(seconds), 1)
    for step in range(steps):
        ctx.check_cancelled()
        await ctx.clock.sleep(seconds / steps)
        ctx.report_progress(step + 1, steps)
    return {"slept_seconds": seconds}
