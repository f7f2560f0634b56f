"""The jobs of money movement, in :data:`operations_registry` (merged into every node's registry).

============================  ==============================================================
``transfers.execute``         one attempt of a scheduled transfer
``recurring.execute``         one attempt of a recurring payment's occurrence
``operations.sweep``          materialise occurrences, enqueue retries, reconcile, expire
``history.prune``             delete finished operation history past its retention, audited
============================  ==============================================================

The execute jobs' own retry policy only covers the machinery (a bank's timeout or 5xx, a
crash): short waits, a few tries. Payment failures follow each payment's
:class:`~duly.operations.policy.FailurePolicy` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from duly.engine.client import EngineClient
from duly.engine.context import JobContext
from duly.engine.registry import JobRegistry
from duly.engine.retry import RetryPolicy
from duly.operations.banks import default_banks
from duly.operations.execution.attempts import execute_many
from duly.operations.history.retention import prune_history
from duly.operations.recurring.execution import OCCURRENCES
from duly.operations.recurring.models import RECURRING_JOB
from duly.operations.sweep import SWEEP_JOB, sweep
from duly.operations.transfers.execution import TRANSFERS
from duly.operations.transfers.models import TRANSFER_JOB

__all__ = ["EXECUTE_BATCH", "EXECUTE_RETRY", "HISTORY_PRUNE_JOB", "operations_registry"]

operations_registry = JobRegistry()

#: Retries of an execute run for technical failures (bank timeouts, 5xx, crashes).
EXECUTE_RETRY = RetryPolicy.fixed([10, 60, 300])


#: Runs of an execute job one worker executes together (one transaction with the ledger).
EXECUTE_BATCH = 200


@operations_registry.batch_job(TRANSFER_JOB, size=EXECUTE_BATCH, timeout=300, retry=EXECUTE_RETRY)
def execute_transfers(ctxs: Sequence[JobContext]) -> list[Any]:
    """Execute one attempt of each of several scheduled transfers."""
    return execute_many(ctxs, TRANSFERS, default_banks)


@operations_registry.batch_job(RECURRING_JOB, size=EXECUTE_BATCH, timeout=300, retry=EXECUTE_RETRY)
def execute_occurrences(ctxs: Sequence[JobContext]) -> list[Any]:
    """Execute one attempt of each of several recurring payments' occurrences."""
    return execute_many(ctxs, OCCURRENCES, default_banks)


@operations_registry.job(SWEEP_JOB, timeout=900, retry=RetryPolicy.fixed([60]), max_concurrency=1)
def sweep_job(ctx: JobContext) -> dict[str, Any]:
    """Materialise recurring occurrences, enqueue due attempts, reconcile lost ones."""
    store = ctx._store
    if store is None:
        raise RuntimeError("operations.sweep needs a running engine")
    horizon = timedelta(seconds=int(ctx.args.get("horizon_seconds", 3600)))
    client = EngineClient(store, operations_registry, ctx.clock)
    return sweep(client, horizon=horizon).to_json()


HISTORY_PRUNE_JOB = "history.prune"


@operations_registry.job(
    HISTORY_PRUNE_JOB, timeout=3600, retry=RetryPolicy.fixed([300, 900]), max_concurrency=1
)
def history_prune_job(ctx: JobContext) -> dict[str, Any]:
    """Delete finished operation history older than ``retention_days`` (7 years by default)."""
    store = ctx._store
    if store is None:
        raise RuntimeError("history.prune needs a running engine")
    days = int(ctx.args.get("retention_days", 2557))
    if days < 1:
        raise ValueError("retention_days must be ≥ 1")
    report = prune_history(store.engine, ctx.clock.now() - timedelta(days=days), ctx.clock)
    ctx.log.info("history.pruned", **report.deleted)
    return report.to_json()
