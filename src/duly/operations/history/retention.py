"""Retention of operation history: finished operations past their period are deleted.

The record classes, each with the time it is aged by:

============================  ===================  =========================================
class                         aged by              deleted with it
============================  ===================  =========================================
``transfer``                  ``execute_at``       its attempts and ACH returns
``recurring_occurrence``      ``execute_at``       its attempts
``reminder``                  ``send_at``          —
``balance_check_result``      ``checked_at``       —
============================  ===================  =========================================

Only operations in a final state go (``executed``, ``failed``, ``cancelled``, ``skipped``): a
transfer still scheduled is never history, however old its date. The ledger's postings are
not touched (they are never deleted, finance-rules.md checklist 18), nor is the recurring
payment itself. Each batch is one transaction that also records, in the audit trail, what it
removed (class, count, id range, the cut-off), so a pruning is itself audited.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table, and_, delete, select

from duly.audit import AuditEntry, record
from duly.clock import Clock
from duly.notify.schema import reminders
from duly.operations.balance_check.models import balance_check_results
from duly.operations.execution.models import FINAL, payment_attempts
from duly.operations.recurring.models import recurring_occurrences
from duly.operations.transfers.models import payment_returns, scheduled_transfers

__all__ = ["PRUNE_ACTION", "PruneReport", "prune_history"]

PRUNE_ACTION = "retention.prune"

#: Rows deleted per transaction: short enough never to hold locks for long.
BATCH = 2000


@dataclass
class PruneReport:
    """How many rows of each class one pruning deleted, and the cut-off."""

    before: datetime
    deleted: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The run's result summary."""
        return {"before": self.before.isoformat(), "deleted": dict(self.deleted)}


@dataclass(frozen=True)
class _Class:
    name: str
    table: Table
    aged_by: str
    final_only: bool
    attempts_kind: str | None = None


_CLASSES = (
    _Class("transfer", scheduled_transfers, "execute_at", True, "transfer"),
    _Class("recurring_occurrence", recurring_occurrences, "execute_at", True, "occurrence"),
    _Class("reminder", reminders, "send_at", False),
    _Class("balance_check_result", balance_check_results, "checked_at", False),
)


def prune_history(
    engine: Engine, before: datetime, clock: Clock, *, batch: int = BATCH
) -> PruneReport:
    """Delete finished operation history scheduled before ``before``; audit each batch."""
    report = PruneReport(before)
    for cls in _CLASSES:
        total = 0
        while True:
            with engine.begin() as conn:
                ids = _old_ids(conn, cls, before, batch)
                if not ids:
                    break
                _delete(conn, cls, ids)
                record(conn, [_entry(cls, ids, before)], clock.now())
            total += len(ids)
        report.deleted[cls.name] = total
    return report


def _old_ids(conn: Connection, cls: _Class, before: datetime, batch: int) -> list[int]:
    t = cls.table
    conds = [t.c[cls.aged_by] < before]
    if cls.final_only:
        conds.append(t.c.status.in_(FINAL))
    query = select(t.c.id).where(and_(*conds)).order_by(t.c.id).limit(batch)
    return [int(i) for i in conn.execute(query).scalars()]


def _delete(conn: Connection, cls: _Class, ids: Sequence[int]) -> None:
    if cls.attempts_kind is not None:
        a = payment_attempts
        conn.execute(delete(a).where(a.c.kind == cls.attempts_kind, a.c.ref_id.in_(ids)))
    if cls.table is scheduled_transfers:
        conn.execute(delete(payment_returns).where(payment_returns.c.transfer_id.in_(ids)))
    conn.execute(delete(cls.table).where(cls.table.c.id.in_(ids)))


def _entry(cls: _Class, ids: Sequence[int], before: datetime) -> AuditEntry:
    details = {
        "class": cls.name,
        "deleted": len(ids),
        "first_id": min(ids),
        "last_id": max(ids),
        "before": before.isoformat(),
    }
    return AuditEntry(PRUNE_ACTION, "operation_history", cls.name, details)
