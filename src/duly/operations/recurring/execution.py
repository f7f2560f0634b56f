"""A recurring payment's occurrence as the shared executor sees it (:data:`OCCURRENCES`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from duly.audit import AuditEntry, record
from duly.banking.errors import BankingError, ErrorCode
from duly.engine.store.dialect import any_of
from duly.operations.execution.models import ACTIVE, Kind, Target
from duly.operations.outbox import emit
from duly.operations.policy import FailurePolicy
from duly.operations.recurring.models import (
    RECURRING_JOB,
    recurring_occurrences,
    recurring_payments,
)

__all__ = ["OCCURRENCES"]

_P = recurring_payments

_O = recurring_occurrences


# -- the executor's view --------------------------------------------------------------


def load_target(conn: Connection, ref_id: int, lock: bool) -> Target | None:
    return _load_many(conn, [ref_id], lock).get(ref_id)


def _load_many(conn: Connection, ref_ids: Sequence[int], lock: bool) -> dict[int, Target]:
    """The occurrences ``ref_ids`` with their payments' terms (locked in id order when ``lock``)."""
    stmt = (
        select(
            _O,
            _P.c.customer_id,
            _P.c.bank,
            _P.c.from_account,
            _P.c.to_account,
            _P.c.amount_minor,
            _P.c.currency,
            _P.c.memo,
            _P.c.max_attempts,
            _P.c.retry_every_seconds,
            _P.c.retry_window_seconds,
            _P.c.status.label("payment_status"),
        )
        .join(_P, _P.c.id == _O.c.payment_id)
        .where(any_of(_O.c.id, sorted(set(ref_ids)), postgres=conn.dialect.name == "postgresql"))
        .order_by(_O.c.id)
    )
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(of=_O)
    return {int(row.id): _target(row) for row in conn.execute(stmt)}


def _banks(conn: Connection, ref_ids: Sequence[int]) -> dict[int, str]:
    rows = conn.execute(
        select(_O.c.id, _P.c.bank)
        .join(_P, _P.c.id == _O.c.payment_id)
        .where(any_of(_O.c.id, sorted(set(ref_ids)), postgres=conn.dialect.name == "postgresql"))
    )
    return {int(ref): bank for ref, bank in rows}


def _target(row: Any) -> Target:
    blocked = None
    if row.status in ACTIVE and row.status != "executing":
        if row.payment_status == "paused":
            blocked = ("skipped", "the payment is paused")
        elif row.payment_status == "cancelled":
            blocked = ("cancelled", "the payment is cancelled")
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
        version=0,
        execute_at=row.execute_at,
        next_attempt_at=row.next_attempt_at,
        run_attempt=int(row.run_attempt),
        run_id=row.run_id,
        policy=FailurePolicy.from_seconds(
            row.max_attempts, row.retry_every_seconds, row.retry_window_seconds
        ),
        blocked=blocked,
    )


def _run_key(target: Target, attempt: int) -> str:
    return target.transfer_key if attempt == 1 else f"{target.transfer_key}:a{attempt}"


def _after_final_failure(
    conn: Connection, target: Target, error: BankingError, now: datetime
) -> None:
    """Pause the payment if its policy says so or the account cannot be paid from any more."""
    payment = conn.execute(
        select(_P.c.id, _P.c.status, _P.c.version, _P.c.on_final_failure)
        .join(_O, _O.c.payment_id == _P.c.id)
        .where(_O.c.id == target.ref_id)
    ).one()
    terminal_for_account = error.code == ErrorCode.ACCOUNT_CLOSED
    if payment.status != "active" or not (
        terminal_for_account or payment.on_final_failure == "pause"
    ):
        return
    reason = f"paused after occurrence {target.ref_id} failed: {error.code}"
    set_payment_status(conn, int(payment.id), int(payment.version), "paused", now, reason,
                       previous=payment.status)  # fmt: skip


#: The audit verb of moving a payment to each status.
_VERB_OF_STATUS = {"paused": "pause", "active": "resume", "cancelled": "cancel",
                   "completed": "complete"}  # fmt: skip


def set_payment_status(
    conn: Connection,
    payment_id: int,
    version: int,
    status: str,
    now: datetime,
    reason: str | None,
    *,
    previous: str,
    details: dict[str, Any] | None = None,
) -> None:
    """Move the payment to ``status`` (from ``previous``) with its outbox and audit events."""
    conn.execute(
        update(_P)
        .where(_P.c.id == payment_id)
        .values(status=status, status_reason=reason, version=version + 1, updated_at=now)
    )
    emit(
        conn,
        event_type=f"recurring_payment.{status}",
        aggregate="recurring_payment",
        aggregate_id=payment_id,
        dedupe_key=f"recurring_payment:{payment_id}:v{version + 1}",
        payload={"status": status, "reason": reason, "version": version + 1},
        now=now,
    )
    audited = {"status": {"before": previous, "after": status}, "reason": reason,
               "version": version + 1, **(details or {})}  # fmt: skip
    verb = _VERB_OF_STATUS.get(status, status)
    record(conn, [AuditEntry(f"recurring_payment.{verb}", "recurring_payment", payment_id,
                             audited)], now)  # fmt: skip


OCCURRENCES = Kind(
    name="occurrence",
    aggregate="occurrence",
    table=_O,
    job_name=RECURRING_JOB,
    waiting_status="retrying",
    load=load_target,
    run_key=_run_key,
    after_final_failure=_after_final_failure,
    load_many=_load_many,
    load_banks=_banks,
)
