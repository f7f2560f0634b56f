"""A customer's execution history: every transfer and recurring occurrence, with its attempts.

Each entry has what a customer (or the API, CSV and PDF exports built on it) needs: what it
was, when it was scheduled, when it executed, its status, the amount, and — if it failed —
the reason code, its description and the suggested action (from ``error_codes``).

Entries are ordered newest scheduled first; pages are cut with an opaque cursor (keyset
pagination on ``(scheduled_for, kind, id)``), so a page never repeats or skips an entry while
new ones are added.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, or_, select

from duly.banking.money import from_minor, mask_account
from duly.banking.schema import error_codes
from duly.operations.errors import InvalidRequest
from duly.operations.execution.models import payment_attempts
from duly.operations.history.models import (
    KINDS,
    MAX_LIMIT,
    AttemptEntry,
    HistoryEntry,
    HistoryFilter,
    HistoryPage,
)
from duly.operations.recurring.models import recurring_occurrences, recurring_payments
from duly.operations.transfers.models import scheduled_transfers

__all__ = ["history"]

#: Position of each kind in the order of entries scheduled at the same instant.
_RANK = {"transfer": 0, "recurring": 1}


def history(
    engine: Engine, flt: HistoryFilter, *, limit: int = 50, cursor: str | None = None
) -> HistoryPage:
    """One page of the customer's history, newest scheduled first.

    :raises InvalidRequest: a bad cursor, kind or limit.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be 1–{MAX_LIMIT}")
    unknown = set(flt.kinds) - set(KINDS)
    if unknown:
        raise InvalidRequest(
            f"unknown kind(s) {', '.join(sorted(unknown))}: use transfer, recurring"
        )
    after = _decode(cursor) if cursor else None
    rows: list[dict[str, Any]] = []
    with engine.connect() as conn:
        if "transfer" in flt.kinds and flt.payment_id is None:
            rows += [_transfer_row(r) for r in conn.execute(_transfers(flt, after, limit + 1))]
        if "recurring" in flt.kinds:
            rows += [_occurrence_row(r) for r in conn.execute(_occurrences(flt, after, limit + 1))]
        rows.sort(key=lambda r: (r["scheduled_for"], _RANK[r["kind"]], r["id"]), reverse=True)
        page, more = rows[:limit], len(rows) > limit
        attempts = _attempts(conn, page)
        codes = {r["error_code"] for r in page if r["error_code"]}
        catalog = {
            c.code: c
            for c in conn.execute(select(error_codes).where(error_codes.c.code.in_(codes)))
        }
    entries = tuple(_entry(r, attempts, catalog) for r in page)
    next_cursor = _encode(page[-1]) if more and page else None
    return HistoryPage(entries, next_cursor)


# -- queries ------------------------------------------------------------------------------


def _keyset(column: Any, id_column: Any, kind: str, after: tuple[datetime, int, int] | None) -> Any:
    """Rows strictly after the cursor in (scheduled_for desc, rank desc, id desc) order."""
    if after is None:
        return None
    at, rank, last_id = after
    mine = _RANK[kind]
    if mine > rank:
        return column < at
    if mine < rank:
        return column <= at
    return or_(column < at, and_(column == at, id_column < last_id))


def _transfers(flt: HistoryFilter, after: tuple[datetime, int, int] | None, limit: int) -> Any:
    t = scheduled_transfers
    conds = [t.c.customer_id == flt.customer_id]
    conds += _common(t.c.execute_at, t.c.status, flt)
    if flt.account_id is not None:
        conds.append(or_(t.c.from_account == flt.account_id, t.c.to_account == flt.account_id))
    page = _keyset(t.c.execute_at, t.c.id, "transfer", after)
    if page is not None:
        conds.append(page)
    return select(t).where(*conds).order_by(t.c.execute_at.desc(), t.c.id.desc()).limit(limit)


def _occurrences(flt: HistoryFilter, after: tuple[datetime, int, int] | None, limit: int) -> Any:
    o, p = recurring_occurrences, recurring_payments
    conds = [p.c.customer_id == flt.customer_id]
    conds += _common(o.c.execute_at, o.c.status, flt)
    if flt.account_id is not None:
        conds.append(or_(p.c.from_account == flt.account_id, p.c.to_account == flt.account_id))
    if flt.payment_id is not None:
        conds.append(o.c.payment_id == flt.payment_id)
    page = _keyset(o.c.execute_at, o.c.id, "recurring", after)
    if page is not None:
        conds.append(page)
    return (
        select(
            o,
            p.c.from_account,
            p.c.to_account,
            p.c.amount_minor,
            p.c.currency,
            p.c.memo,
        )
        .join(p, p.c.id == o.c.payment_id)
        .where(*conds)
        .order_by(o.c.execute_at.desc(), o.c.id.desc())
        .limit(limit)
    )


def _common(when: Any, status: Any, flt: HistoryFilter) -> list[Any]:
    conds = []
    if flt.statuses is not None:
        conds.append(status.in_(list(flt.statuses)))
    if flt.scheduled_from is not None:
        conds.append(when >= flt.scheduled_from)
    if flt.scheduled_until is not None:
        conds.append(when < flt.scheduled_until)
    return conds


def _attempts(conn: Any, page: list[dict[str, Any]]) -> dict[tuple[str, int], list[AttemptEntry]]:
    out: dict[tuple[str, int], list[AttemptEntry]] = {}
    for kind, table_kind in (("transfer", "transfer"), ("recurring", "occurrence")):
        ids = [r["id"] for r in page if r["kind"] == kind]
        if not ids:
            continue
        rows = conn.execute(
            select(payment_attempts)
            .where(payment_attempts.c.kind == table_kind, payment_attempts.c.ref_id.in_(ids))
            .order_by(payment_attempts.c.ref_id, payment_attempts.c.attempt)
        )
        for a in rows:
            out.setdefault((kind, int(a.ref_id)), []).append(
                AttemptEntry(
                    a.attempt, a.started_at, a.finished_at, a.status, a.error_code, a.error_message
                )
            )
    return out


# -- rows -> entries ----------------------------------------------------------------------


def _transfer_row(r: Any) -> dict[str, Any]:
    return {
        "kind": "transfer",
        "id": int(r.id),
        "payment_id": None,
        "reference": r.transfer_key,
        "memo": r.memo,
        "from_account": r.from_account,
        "to_account": r.to_account,
        "amount_minor": int(r.amount_minor),
        "currency": r.currency,
        "scheduled_date": r.local_date,
        "execution_date": r.execution_date,
        "scheduled_for": r.execute_at,
        "executed_at": r.executed_at,
        "status": r.status,
        "error_code": r.error_code,
        "error_message": r.error_message,
    }


def _occurrence_row(r: Any) -> dict[str, Any]:
    return {
        "kind": "recurring",
        "id": int(r.id),
        "payment_id": int(r.payment_id),
        "reference": r.transfer_key,
        "memo": r.memo,
        "from_account": r.from_account,
        "to_account": r.to_account,
        "amount_minor": int(r.amount_minor),
        "currency": r.currency,
        "scheduled_date": r.unadjusted_date,
        "execution_date": r.execution_date,
        "scheduled_for": r.execute_at,
        "executed_at": r.executed_at,
        "status": r.status,
        "error_code": r.error_code,
        "error_message": r.error_message,
    }


def _entry(
    r: dict[str, Any], attempts: dict[tuple[str, int], list[AttemptEntry]], catalog: dict[str, Any]
) -> HistoryEntry:
    failed = r["status"] in ("failed", "executing", "retrying") and r["error_code"]
    info = catalog.get(r["error_code"]) if failed else None
    return HistoryEntry(
        kind=r["kind"],
        id=r["id"],
        payment_id=r["payment_id"],
        reference=r["reference"],
        description=r["memo"],
        from_account=mask_account(r["from_account"]),
        to_account=mask_account(r["to_account"]),
        amount=from_minor(r["amount_minor"], r["currency"]),
        currency=r["currency"],
        scheduled_date=r["scheduled_date"],
        execution_date=r["execution_date"],
        scheduled_for=r["scheduled_for"],
        executed_at=r["executed_at"],
        status=r["status"],
        failure_code=r["error_code"] if failed else None,
        failure_message=r["error_message"] if failed else None,
        failure_description=info.description if info is not None else None,
        suggested_action=info.suggested_action if info is not None else None,
        attempts=tuple(attempts.get((r["kind"], r["id"]), [])),
    )


def _encode(row: dict[str, Any]) -> str:
    raw = json.dumps([row["scheduled_for"].isoformat(), _RANK[row["kind"]], row["id"]])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime, int, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at, rank, last_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        when = datetime.fromisoformat(at)
        if when.tzinfo is None or rank not in _RANK.values():
            raise ValueError
        return when, int(rank), int(last_id)
    except (ValueError, TypeError, json.JSONDecodeError):
        raise InvalidRequest("the cursor is not one this service issued") from None
