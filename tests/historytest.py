"""Rows of a customer's execution history, written straight into the operations' tables.

The history reads what the executor, the reminder relay and the balance check leave behind;
these helpers write the same rows (every column those writers fill) without running the
engine for days of manual time, so a test can place entries at exact instants, with ties.
``tests/integration/test_money_history.py`` covers the same reads after real engine runs.
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert

from duly.banking.customers import Customers, NewAccount, NewCustomer
from duly.clock import ManualClock
from duly.notify.schema import deliveries, reminders
from duly.operations.balance_check.models import balance_check_results
from duly.operations.execution.models import payment_attempts
from duly.operations.recurring.models import recurring_occurrences, recurring_payments
from duly.operations.transfers.models import scheduled_transfers

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

_seq = itertools.count(1)


def customer(engine: Engine, external_id: str, *, name: str | None = None,
             timezone: str = "UTC", accounts: tuple[str, ...] = ()) -> int:  # fmt: skip
    """A customer (and its accounts, in EUR) created through the customers service."""
    people = Customers(engine, ManualClock(T0))
    row = people.add(NewCustomer(external_id, timezone=timezone, name=name))
    for number in accounts:
        people.open_account(NewAccount(number, "EUR", row.id))
    return row.id


def transfer(
    engine: Engine, customer_id: int, at: datetime, *, amount_minor: int = 1000,
    currency: str = "EUR", status: str = "executed", memo: str | None = None,
    from_account: str = "DE-OWN-000001", to_account: str = "DE-PAYEE-00042",
    error_code: str | None = None, attempts: int = 1, run_id: int | None = None,
) -> int:  # fmt: skip
    """A scheduled transfer at ``at`` with ``attempts`` attempt rows (the last one's outcome)."""
    n = next(_seq)
    with engine.begin() as conn:
        tid = conn.execute(
            insert(scheduled_transfers).values(
                request_key=f"h-{n}",
                request_hash="0" * 64,
                customer_id=customer_id,
                from_account=from_account,
                to_account=to_account,
                amount_minor=amount_minor,
                currency=currency,
                memo=memo,
                local_date=at.date(),
                local_time=f"{at:%H:%M}",
                timezone="UTC",
                convention="following",
                execution_date=at.date(),
                max_attempts=3,
                retry_every_seconds=3600,
                retry_window_seconds=86400,
                transfer_key=f"st-h-{n}",
                execute_at=at,
                status=status,
                attempts=attempts,
                run_id=run_id,
                error_code=error_code,
                error_message="refused" if error_code else None,
                executed_at=at + timedelta(seconds=2) if status == "executed" else None,
                cancelled_at=at - timedelta(days=1) if status == "cancelled" else None,
                created_at=at - timedelta(days=3),
                updated_at=_last_change(at, attempts),
            )
        ).inserted_primary_key[0]
        _attempts(conn, "transfer", int(tid), at, attempts, status, error_code)
    return int(tid)


def payment(engine: Engine, customer_id: int, *, amount_minor: int = 4000, currency: str = "EUR",
            memo: str | None = "gym", to_account: str = "DE-GYM-0000077") -> int:  # fmt: skip
    """A monthly recurring payment (occurrences are added with :func:`occurrence`)."""
    n = next(_seq)
    with engine.begin() as conn:
        pid = conn.execute(
            insert(recurring_payments).values(
                request_key=f"rp-h-{n}",
                request_hash="0" * 64,
                customer_id=customer_id,
                from_account="DE-OWN-000001",
                to_account=to_account,
                amount_minor=amount_minor,
                currency=currency,
                memo=memo,
                frequency="monthly",
                start_date=date(2026, 1, 1),
                time_of_day="09:00",
                timezone="UTC",
                convention="following",
                max_attempts=3,
                retry_every_seconds=3600,
                retry_window_seconds=86400,
                status="active",
                created_at=T0,
                updated_at=T0,
            )
        ).inserted_primary_key[0]
    return int(pid)


def occurrence(engine: Engine, payment_id: int, customer_id: int, at: datetime, *,
               status: str = "executed", error_code: str | None = None, attempts: int = 1) -> int:  # fmt: skip
    """An occurrence of ``payment_id`` executing at ``at``."""
    n = next(_seq)
    with engine.begin() as conn:
        oid = conn.execute(
            insert(recurring_occurrences).values(
                payment_id=payment_id,
                customer_id=customer_id,
                seq=n,
                unadjusted_date=at.date(),
                execution_date=at.date(),
                transfer_key=f"rp-h-{n}",
                execute_at=at,
                status=status,
                attempts=attempts,
                error_code=error_code,
                executed_at=at + timedelta(seconds=1) if status == "executed" else None,
                created_at=at - timedelta(days=1),
                updated_at=_last_change(at, attempts),
            )
        ).inserted_primary_key[0]
        _attempts(conn, "occurrence", int(oid), at, attempts, status, error_code)
    return int(oid)


def reminder(engine: Engine, customer_id: int, transfer_id: int, send_at: datetime, *,
             status: str = "sent", channel: str = "email") -> int:  # fmt: skip
    """A reminder of ``transfer_id`` handed to ``channel`` (its delivery in ``status``)."""
    n = next(_seq)
    with engine.begin() as conn:
        did = conn.execute(
            insert(deliveries).values(
                dedupe_key=f"rem-h-{n}",
                source="reminder",
                source_ref=str(n),
                channel=channel,
                recipient_ref=f"customer:{customer_id}",
                recipient_masked="a***@example.com",
                template="reminder",
                context={},
                status=status,
                attempts=1,
                created_at=send_at,
                updated_at=send_at + timedelta(seconds=3),
                sent_at=send_at + timedelta(seconds=3) if status == "sent" else None,
            )
        ).inserted_primary_key[0]
        rid = conn.execute(
            insert(reminders).values(
                reminder_key=f"rk-h-{n}",
                kind="transfer",
                ref_id=transfer_id,
                occurrence_key=f"st-{transfer_id}",
                version=1,
                customer_id=customer_id,
                offset="1d",
                channel=channel,
                execute_at=send_at + timedelta(days=1),
                send_at=send_at,
                status="planned",
                delivery_id=did,
                created_at=send_at,
                updated_at=send_at,
            )
        ).inserted_primary_key[0]
    return int(rid)


def check(engine: Engine, customer_id: int, at: datetime, *, result: str = "PASS",
          error_code: str | None = None, run_id: int = 7) -> int:  # fmt: skip
    """A night's balance-check result for the customer."""
    with engine.begin() as conn:
        bid = conn.execute(
            insert(balance_check_results).values(
                run_id=run_id,
                business_date=at.date(),
                customer_id=customer_id,
                result=result,
                error_code=error_code,
                attempts=1,
                accounts_checked=1,
                checked_at=at,
            )
        ).inserted_primary_key[0]
    return int(bid)


def _attempts(conn: Any, kind: str, ref_id: int, at: datetime, attempts: int, status: str,
              error_code: str | None) -> None:  # fmt: skip
    for k in range(1, attempts + 1):
        last = k == attempts
        ok = last and status == "executed"
        start = at + timedelta(hours=6 * (k - 1))
        conn.execute(
            insert(payment_attempts).values(
                kind=kind,
                ref_id=ref_id,
                attempt=k,
                started_at=start,
                finished_at=start + timedelta(seconds=1),
                status="succeeded" if ok else "failed",
                error_code=None if ok else (error_code or "TIMEOUT"),
            )
        )


def _last_change(at: datetime, attempts: int) -> datetime:
    """When the executor last wrote the row: as its last attempt finished (or at ``at``)."""
    return at + timedelta(hours=6 * (attempts - 1), seconds=1) if attempts else at
