"""A scheduled transfer as the shared executor sees it (:data:`TRANSFERS`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select

from duly.engine.store.dialect import any_of
from duly.operations.execution.models import Kind, Target
from duly.operations.policy import FailurePolicy
from duly.operations.transfers.models import TRANSFER_JOB, scheduled_transfers

__all__ = ["TRANSFERS", "transfer_target"]

_T = scheduled_transfers


# -- the executor's view --------------------------------------------------------------


def load_target(conn: Connection, ref_id: int, lock: bool) -> Target | None:
    return _load_many(conn, [ref_id], lock).get(ref_id)


#: What an attempt reads of a transfer (not the whole row: a batch reads hundreds).
_TARGET_COLUMNS = [
    _T.c[name]
    for name in ("id", "customer_id", "transfer_key", "bank", "from_account", "to_account",
                 "amount_minor", "currency", "memo", "status", "attempts", "version",
                 "execute_at", "next_attempt_at", "run_attempt", "run_id", "max_attempts",
                 "retry_every_seconds", "retry_window_seconds")
]  # fmt: skip


def _load_many(conn: Connection, ref_ids: Sequence[int], lock: bool) -> dict[int, Target]:
    """The transfers ``ref_ids`` by id (locked in id order when ``lock``, on PostgreSQL)."""
    stmt = (
        select(*_TARGET_COLUMNS)
        .where(any_of(_T.c.id, sorted(set(ref_ids)), postgres=conn.dialect.name == "postgresql"))
        .order_by(_T.c.id)
    )
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return {int(row.id): _target(row) for row in conn.execute(stmt)}


def _banks(conn: Connection, ref_ids: Sequence[int]) -> dict[int, str]:
    rows = conn.execute(
        select(_T.c.id, _T.c.bank).where(
            any_of(_T.c.id, sorted(set(ref_ids)), postgres=conn.dialect.name == "postgresql")
        )
    )
    return {int(ref): bank for ref, bank in rows}


def transfer_target(row: Any) -> Target:
    """The executor's view of a transfer row (one with at least the target's columns)."""
    return _target(row)


def _target(row: Any) -> Target:
    return Target(
        ref_id=int(row.id),
        customer_id=row.customer_id,
        transfer_key=row.transfer_key,
        bank=row.bank,
        from_account=row.from_account,
        to_account=row.to_account,
        amount_minor=int(row.amount_minor),
        currency=row.currency,
        memo=row.memo,
        status=row.status,
        attempts=int(row.attempts),
        version=int(row.version),
        execute_at=row.execute_at,
        next_attempt_at=row.next_attempt_at,
        run_attempt=int(row.run_attempt),
        run_id=row.run_id,
        policy=FailurePolicy.from_seconds(
            row.max_attempts, row.retry_every_seconds, row.retry_window_seconds
        ),
    )


def _run_key(target: Target, attempt: int) -> str:
    if target.version == 1 and attempt == 1:
        return target.transfer_key
    return f"{target.transfer_key}:v{target.version}:a{attempt}"


TRANSFERS = Kind(
    name="transfer",
    aggregate="transfer",
    table=_T,
    job_name=TRANSFER_JOB,
    waiting_status="executing",
    load=load_target,
    run_key=_run_key,
    load_many=_load_many,
    load_banks=_banks,
)
