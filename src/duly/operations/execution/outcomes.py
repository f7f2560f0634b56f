"""Recording what an attempt did: state changes, attempt rows, outbox events, failure handling."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Connection, Table, bindparam, insert, update

from duly.audit import record
from duly.banking.catalog import describe
from duly.banking.errors import BankingError
from duly.banking.money import from_minor
from duly.banking.port import TransferResult
from duly.engine.store.dialect import any_of, pg_execute
from duly.operations.auditing import target_entry
from duly.operations.execution.models import FINAL, Kind, Target, payment_attempts
from duly.operations.outbox import NewEvent, emit, emit_many

__all__ = ["set_state"]

log = structlog.get_logger("duly.operations")


# -- state changes --------------------------------------------------------------------


def set_state(
    conn: Connection,
    kind: Kind,
    target: Target,
    status: str,
    now: datetime,
    *,
    event: str,
    dedupe: str,
    payload: dict[str, Any] | None = None,
    **values: Any,
) -> None:
    """Move ``target`` to ``status`` (and other ``values``) with its outbox event, on ``conn``."""
    conn.execute(
        update(kind.table)
        .where(kind.table.c.id == target.ref_id)
        .values(status=status, updated_at=now, **values)
    )
    emit(
        conn,
        event_type=f"{kind.aggregate}.{event}",
        aggregate=kind.aggregate,
        aggregate_id=target.ref_id,
        dedupe_key=f"{kind.aggregate}:{target.ref_id}:{dedupe}",
        payload={"status": status, "reference": target.transfer_key, **(payload or {})},
        now=now,
    )


def _audit_target(
    conn: Connection, kind: Kind, target: Target, verb: str, now: datetime, **details: Any
) -> None:
    """Record ``<aggregate>.<verb>`` of ``target`` on ``conn`` (the attempt's transaction)."""
    record(conn, [target_entry(kind, target, verb, **details)], now)


def skip_reason(target: Target | None, attempt: int, version: int | None) -> str | None:
    if target is None:
        return "missing"
    if target.status in FINAL:
        return f"already {target.status}"
    if version is not None and target.version != version:
        return "rescheduled"
    if target.attempts >= attempt:
        return "attempt already recorded"
    if target.attempts != attempt - 1:
        return "out of order"
    return None


def mark_executed(
    conn: Connection, table: Table, rows: list[dict[str, Any]], now: datetime
) -> None:
    """Set rows ``{"ref": id, "made": attempts}`` of ``table`` executed, with one statement."""
    if conn.dialect.name == "postgresql":
        pg_execute(
            conn,
            f"UPDATE {table.name} AS t SET status = 'executed', updated_at = :now,"
            " attempts = v.made, executed_at = :now, next_attempt_at = NULL,"
            " error_code = NULL, error_message = NULL"
            " FROM unnest(CAST(:refs AS bigint[]), CAST(:made AS integer[])) AS v(id, made)"
            " WHERE t.id = v.id",
            {"now": now, "refs": [r["ref"] for r in rows], "made": [r["made"] for r in rows]},
        )
        return
    conn.execute(
        update(table)
        .where(table.c.id == bindparam("ref"))
        .values(
            status="executed",
            updated_at=now,
            attempts=bindparam("made"),
            executed_at=now,
            next_attempt_at=None,
            error_code=None,
            error_message=None,
        ),
        rows,
    )


def state_event(
    kind: Kind, target: Target, status: str, dedupe: str, payload: dict[str, Any]
) -> NewEvent:
    """The outbox event :func:`set_state` writes for ``status``."""
    return NewEvent(
        event_type=f"{kind.aggregate}.{status}",
        aggregate=kind.aggregate,
        aggregate_id=target.ref_id,
        dedupe_key=f"{kind.aggregate}:{target.ref_id}:{dedupe}",
        payload={"status": status, "reference": target.transfer_key, **payload},
    )


def mark_executing(
    conn: Connection, kind: Kind, items: list[tuple[Target, int]], now: datetime
) -> None:
    """Set operations ``executing`` with their outbox events, with one statement each."""
    if not items:
        return
    pg = conn.dialect.name == "postgresql"
    conn.execute(
        update(kind.table)
        .where(any_of(kind.table.c.id, [t.ref_id for t, _ in items], postgres=pg))
        .values(status="executing", updated_at=now)
    )
    emit_many(conn, [executing_event(kind, t, a) for t, a in items], now)


def executing_event(kind: Kind, target: Target, attempt: int) -> NewEvent:
    return state_event(kind, target, "executing", f"executing:a{attempt}", {"attempt": attempt})


def record_outcome(
    conn: Connection,
    kind: Kind,
    target: Target,
    attempt: int,
    outcome: TransferResult | BankingError,
    run_id: int | None,
    started: datetime,
    now: datetime,
) -> dict[str, Any]:
    """Write the attempt's outcome, its state change and its events on ``conn``."""
    failed = isinstance(outcome, BankingError)
    conn.execute(
        insert(payment_attempts).values(
            kind=kind.name,
            ref_id=target.ref_id,
            attempt=attempt,
            run_id=run_id,
            started_at=started,
            finished_at=now,
            status="failed" if failed else "succeeded",
            error_code=outcome.code if isinstance(outcome, BankingError) else None,
            error_message=outcome.message[:500] if isinstance(outcome, BankingError) else None,
        )
    )
    if isinstance(outcome, TransferResult):
        set_state(conn, kind, target, "executed", now, event="executed", dedupe="executed",
                  payload={"attempt": attempt, "replayed": outcome.exists},
                  attempts=attempt, executed_at=now, next_attempt_at=None,
                  error_code=None, error_message=None)  # fmt: skip
        _audit_target(conn, kind, target, "execute", now, attempt=attempt, replayed=outcome.exists)
        log.info("payment.executed", kind=kind.name, ref_id=target.ref_id, attempt=attempt,
                 replayed=outcome.exists)  # fmt: skip
        return {"outcome": "executed", "attempt": attempt, "replayed": outcome.exists}
    return _record_failure(conn, kind, target, attempt, outcome, now)


def _record_failure(
    conn: Connection, kind: Kind, target: Target, attempt: int, error: BankingError, now: datetime
) -> dict[str, Any]:
    retry_at = target.policy.next_attempt(
        code=error.code,
        transient=error.transient,
        attempts_made=attempt,
        failed_at=now,
        scheduled_at=target.execute_at,
    )
    common = {"attempts": attempt, "error_code": error.code, "error_message": error.message[:500]}
    if retry_at is not None:
        set_state(conn, kind, target, kind.waiting_status, now, event="retry_scheduled",
                  dedupe=f"retry:a{attempt}",
                  payload={"attempt": attempt, "code": error.code, "retry_at": retry_at.isoformat()},
                  next_attempt_at=retry_at, **common)  # fmt: skip
        _audit_target(conn, kind, target, "retry", now, attempt=attempt, code=error.code,
                      retry_at=retry_at)  # fmt: skip
        log.info("payment.retry_scheduled", kind=kind.name, ref_id=target.ref_id, attempt=attempt,
                 code=error.code, retry_at=retry_at.isoformat())  # fmt: skip
        return {"outcome": "retry", "attempt": attempt, "code": error.code,
                "retry_at": retry_at.isoformat()}  # fmt: skip
    set_state(conn, kind, target, "failed", now, event="failed", dedupe="failed",
              payload={"attempt": attempt, "code": error.code, "transient": error.transient},
              next_attempt_at=None, **common)  # fmt: skip
    _audit_target(conn, kind, target, "fail", now, attempt=attempt, code=error.code,
                  transient=error.transient)  # fmt: skip
    _notify_failure(conn, kind, target, attempt, error, now)
    if kind.after_final_failure is not None:
        kind.after_final_failure(conn, target, error, now)
    log.info("payment.failed", kind=kind.name, ref_id=target.ref_id, attempt=attempt,
             code=error.code)  # fmt: skip
    return {"outcome": "failed", "attempt": attempt, "code": error.code}


def _notify_failure(
    conn: Connection, kind: Kind, target: Target, attempt: int, error: BankingError, now: datetime
) -> None:
    """The one customer notification of a final failure (delivered later by the relay)."""
    info = describe(error.code)
    emit(
        conn,
        event_type="customer.notification",
        aggregate=kind.aggregate,
        aggregate_id=target.ref_id,
        dedupe_key=f"notify:{kind.aggregate}:{target.ref_id}:failed",
        payload={
            "template": "payment_failed",
            "customer_id": target.customer_id,
            "reference": target.transfer_key,
            "amount": str(from_minor(target.amount_minor, target.currency)),
            "currency": target.currency,
            "memo": target.memo,
            "scheduled_for": target.execute_at.isoformat(),
            "attempts": attempt,
            "reason_code": error.code,
            "reason_class": "transient" if error.transient else "terminal",
            "suggested_action": info.suggested_action if info else None,
        },
        now=now,
    )
