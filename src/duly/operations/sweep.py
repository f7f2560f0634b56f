"""The sweeper (job ``operations.sweep``, every few minutes): keeps every operation moving.

Each pass, for work due within the horizon:

1. materialises recurring occurrences (:meth:`RecurringPayments.materialize_due`);
2. enqueues the engine run of every transfer's or occurrence's next attempt that has none
   (a retry ``retry_every`` later, or a first run lost between commit and enqueue);
3. reconciles attempts whose run ended ``failed`` or ``cancelled`` without recording them;
4. expires pending ledger transfers past their timeout.

Everything it does is idempotent, so a pass after downtime catches up on all of it, and
two passes at once (two nodes) do each thing once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from duly.banking.ledger import LedgerBank
from duly.engine.client import EngineClient
from duly.engine.store.base import NewSchedule
from duly.engine.store.schema import runs
from duly.operations.banks import BankDirectory, default_banks
from duly.operations.execution.models import ACTIVE, Kind
from duly.operations.execution.runs import ensure_run, reconcile_run
from duly.operations.recurring.execution import OCCURRENCES
from duly.operations.recurring.service import RecurringPayments
from duly.operations.transfers.execution import TRANSFERS

__all__ = ["KINDS", "SWEEP_JOB", "SweepResult", "sweep", "sweep_schedule"]

SWEEP_JOB = "operations.sweep"
KINDS: tuple[Kind, ...] = (TRANSFERS, OCCURRENCES)
_BATCH = 1000


@dataclass(frozen=True, slots=True)
class SweepResult:
    """What one pass did."""

    occurrences_created: int
    runs_enqueued: int
    reconciled: int
    pending_expired: int

    def to_json(self) -> dict[str, Any]:
        """The run's summary."""
        return asdict(self)


def sweep(
    client: EngineClient, *, horizon: timedelta, banks: BankDirectory = default_banks
) -> SweepResult:
    """One pass of the sweeper (see the module docstring)."""
    created = RecurringPayments(client, banks, horizon=horizon).materialize_due()
    enqueued = sum(_ensure_runs_due(client, kind, horizon) for kind in KINDS)
    reconciled = sum(_reconcile(client, kind) for kind in KINDS)
    expired = LedgerBank(client.store.engine, client.clock).expire_pending()
    return SweepResult(created, enqueued, reconciled, expired)


def _ensure_runs_due(client: EngineClient, kind: Kind, horizon: timedelta) -> int:
    table = kind.table
    until = client.clock.now() + horizon
    total, after = 0, 0
    while True:
        with client.store.engine.connect() as conn:
            ids = (
                conn.execute(
                    select(table.c.id)
                    .where(
                        table.c.status.in_(ACTIVE),
                        table.c.next_attempt_at <= until,
                        table.c.run_attempt <= table.c.attempts,
                        table.c.id > after,
                    )
                    .order_by(table.c.id)
                    .limit(_BATCH)
                )
                .scalars()
                .all()
            )
        for ref_id in ids:
            if ensure_run(client, kind, int(ref_id)) is not None:
                total += 1
        if len(ids) < _BATCH:
            return total
        after = int(ids[-1])


def _reconcile(client: EngineClient, kind: Kind) -> int:
    table = kind.table
    with client.store.engine.connect() as conn:
        ids = (
            conn.execute(
                select(table.c.id)
                .join(runs, runs.c.id == table.c.run_id)
                .where(
                    table.c.status.in_(ACTIVE),
                    table.c.run_attempt == table.c.attempts + 1,
                    runs.c.status.in_(("failed", "cancelled")),
                )
                .limit(_BATCH)
            )
            .scalars()
            .all()
        )
    now = client.clock.now()
    return sum(1 for ref_id in ids if reconcile_run(client.store.engine, kind, int(ref_id), now))


def sweep_schedule(spec: str = "every:5m", horizon: timedelta = timedelta(hours=1)) -> NewSchedule:
    """The system schedule that runs the sweeper (``horizon`` should exceed the interval)."""
    return NewSchedule(
        name=SWEEP_JOB,
        job_name=SWEEP_JOB,
        spec=spec,
        timezone="UTC",
        args={"horizon_seconds": int(horizon.total_seconds())},
        misfire="run_once",
        overlap="skip",
        source="system",
    )
