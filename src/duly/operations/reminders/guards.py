"""The last check before a reminder is sent: is its occurrence still going to execute as announced?"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, select, update

from duly.notify.deliveries import (
    DeliveryRow,
)
from duly.notify.schema import reminders
from duly.operations.recurring.models import recurring_occurrences, recurring_payments
from duly.operations.transfers.models import scheduled_transfers

__all__ = ["reminder_guard", "reminder_guards"]

_R = reminders
_T = scheduled_transfers
_P = recurring_payments
_O = recurring_occurrences


def reminder_guard(conn: Connection, delivery: DeliveryRow, now: datetime) -> str | None:
    """The send-time check: why this reminder must not go out now, or ``None``."""
    return reminder_guards(conn, [delivery], now).get(delivery.id)


def reminder_guards(
    conn: Connection, batch: Sequence[DeliveryRow], now: datetime
) -> dict[int, str]:
    """:func:`reminder_guard` for a batch, in a few set-based statements: the reasons not
    to send, by delivery id (a reminder still ``planned`` is marked ``cancelled``)."""
    if not batch:
        return {}
    columns = [_R.c.id, _R.c.reminder_key, _R.c.status, _R.c.kind, _R.c.ref_id, _R.c.version,
               _R.c.execute_at, _R.c.occurrence_key, _T.c.status.label("t_status"),
               _T.c.version.label("t_version"), _T.c.execute_at.label("t_execute_at")]  # fmt: skip
    found = conn.execute(
        select(*columns)
        .outerjoin(_T, and_(_R.c.kind == "transfer", _T.c.id == _R.c.ref_id))
        .where(_R.c.reminder_key.in_([d.dedupe_key for d in batch]))
    ).all()
    by_key = {r.reminder_key: r for r in found}
    occurrence = [r for r in found if r.kind != "transfer"]
    payments: dict[int, str] = {}
    occurrences: dict[str, Any] = {}
    if occurrence:
        payments = {
            int(pid): status
            for pid, status in conn.execute(
                select(_P.c.id, _P.c.status).where(_P.c.id.in_({int(r.ref_id) for r in occurrence}))
            )
        }
        occurrences = {
            o.transfer_key: o
            for o in conn.execute(
                select(_O.c.transfer_key, _O.c.status, _O.c.execute_at).where(
                    _O.c.transfer_key.in_({r.occurrence_key for r in occurrence})
                )
            )
        }
    reasons: dict[int, str] = {}
    to_cancel: dict[str, list[int]] = {}
    for d in batch:
        r = by_key.get(d.dedupe_key)
        reason = _why_not(r, now, payments, occurrences)
        if reason is None:
            continue
        reasons[d.id] = reason
        if r is not None and r.status == "planned":
            to_cancel.setdefault(reason, []).append(int(r.id))
    for reason, ids in to_cancel.items():
        conn.execute(
            update(_R)
            .where(_R.c.id.in_(ids), _R.c.status == "planned")
            .values(status="cancelled", reason=reason, updated_at=now)
        )
    return reasons


def _why_not(
    r: Any, now: datetime, payments: dict[int, str], occurrences: dict[str, Any]
) -> str | None:
    if r is None:
        return "no such reminder"
    if r.status != "planned":
        return f"reminder {r.status}"
    if now >= r.execute_at:
        return "the operation's time has come"
    if r.kind == "transfer":
        if r.t_status is None or r.t_status != "scheduled":
            return f"transfer {r.t_status or 'missing'}"
        if int(r.t_version) != int(r.version) or r.t_execute_at != r.execute_at:
            return "transfer rescheduled"
        return None
    p = payments.get(int(r.ref_id))
    if p not in ("active", "completed"):
        return f"payment {p or 'missing'}"
    occ = occurrences.get(r.occurrence_key)
    if occ is not None and (occ.status != "scheduled" or occ.execute_at != r.execute_at):
        return f"occurrence {occ.status}"
    return None
