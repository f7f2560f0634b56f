"""The balance check's reads and writes: premium customers, decided nights, missed nights, results."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, and_, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from duly.banking.http import HttpBank
from duly.banking.port import BankingPort
from duly.banking.schema import accounts, customers
from duly.clock import Clock
from duly.config import BalanceCheckSettings
from duly.engine.batch import ItemResult
from duly.engine.context import JobContext
from duly.engine.errors import JobError
from duly.engine.states import RunStatus
from duly.engine.store.base import RunFilter
from duly.engine.store.sql import SqlStore
from duly.operations.balance_check.models import (
    BELOW_MINIMUM_EVENT,
    JOB_NAME,
    SCHEDULE_NAME,
    Decision,
    PremiumCustomer,
    Result,
    balance_check_results,
    error_logs,
)
from duly.operations.banks import BankDirectory, default_banks
from duly.operations.outbox import outbox

__all__ = [
    "ALERT_FIRST_CUSTOMERS",
    "decided_customers",
    "default_port",
    "load_premium_customers",
    "missed_nights",
    "night_counts",
]

#: How many customers the aggregated alert names.
ALERT_FIRST_CUSTOMERS = 10


# --------------------------------------------------------------------------- reads


def load_premium_customers(engine: Engine) -> list[PremiumCustomer]:
    """Every premium customer by id, with their open accounts in the minimum's currency."""
    query = (
        select(
            customers.c.id,
            customers.c.min_balance_minor,
            customers.c.min_balance_currency,
            accounts.c.id.label("account_id"),
        )
        .select_from(
            customers.outerjoin(
                accounts,
                and_(
                    accounts.c.customer_id == customers.c.id,
                    accounts.c.status == "open",
                    accounts.c.currency == customers.c.min_balance_currency,
                ),
            )
        )
        .where(customers.c.tier == "premium")
        .order_by(customers.c.id, accounts.c.id)
    )
    out: list[PremiumCustomer] = []
    with engine.connect() as conn:
        current: tuple[int, int | None, str | None] | None = None
        ids: list[str] = []
        for row in conn.execute(query):
            if current is None or current[0] != row.id:
                if current is not None:
                    out.append(PremiumCustomer(*current, tuple(ids)))
                minimum = None if row.min_balance_minor is None else int(row.min_balance_minor)
                current, ids = (int(row.id), minimum, row.min_balance_currency), []
            if row.account_id is not None:
                ids.append(row.account_id)
        if current is not None:
            out.append(PremiumCustomer(*current, tuple(ids)))
    return out


def decided_customers(engine: Engine, business_date: date) -> set[int]:
    """Customers that already have a result for ``business_date``."""
    with engine.connect() as conn:
        return {
            int(c)
            for c in conn.execute(
                select(balance_check_results.c.customer_id).where(
                    balance_check_results.c.business_date == business_date
                )
            ).scalars()
        }


def night_counts(engine: Engine, business_date: date) -> tuple[Counter[str], Counter[str]]:
    """(results by outcome, errors by code) recorded for ``business_date``."""
    r = balance_check_results.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(r.result, r.error_code, func.count())
            .where(r.business_date == business_date)
            .group_by(r.result, r.error_code)
        ).all()
    results: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    for result, code, n in rows:
        results[result] += int(n)
        if code is not None:
            codes[code] += int(n)
    return results, codes


def missed_nights(store: SqlStore, cfg: BalanceCheckSettings, now: datetime) -> list[date]:
    """Business dates in the lookback whose check should have finished by ``now`` but never
    succeeded (the schedule existed and was not paused then). Backfill each with
    ``duly trigger daily_balance_check --arg business_date=YYYY-MM-DD``."""
    sched = store.schedule_get(SCHEDULE_NAME)
    days = cfg.missed_night_lookback_days
    if sched is None or days == 0:
        return []
    zone = ZoneInfo(cfg.timezone)
    window = timedelta(minutes=cfg.window_minutes)
    today = now.astimezone(zone).date()
    due: list[date] = []
    for back in range(days, -1, -1):
        day = today - timedelta(days=back)
        fire = datetime.combine(day, cfg.schedule_clock, zone)
        if fire >= sched.created_at and fire + window <= now:
            due.append(day)
    if not due:
        return []
    since = datetime.combine(due[0], time(0), zone) - timedelta(days=1)
    covered: set[str] = set()
    before: int | None = None
    while True:  # every succeeded run since then (normally one a night)
        rows = store.run_list(
            RunFilter(
                job_name=JOB_NAME,
                status=RunStatus.SUCCEEDED,
                since=since,
                limit=500,
                before_id=before,
            )
        )
        covered |= {str(r.result.get("business_date")) for r in rows if isinstance(r.result, dict)}
        if len(rows) < 500:
            break
        before = rows[-1].id
    return [d for d in due if d.isoformat() not in covered]


# --------------------------------------------------------------------------- the job


def default_port(cfg: BalanceCheckSettings, engine: Engine, clock: Clock) -> BankingPort:
    """The bank named by ``cfg.bank``.

    ``http`` gets a client of its own (``DULY_BANK_HTTP_URL``, ``DULY_BANK_HTTP_TOKEN``) whose
    every call times out after ``per_call_timeout_seconds``, with a connection per concurrent
    read; other names come from :data:`~duly.operations.banks.default_banks`.
    """
    if cfg.bank == "http":
        url = os.environ.get("DULY_BANK_HTTP_URL")
        if not url:
            raise JobError(
                "VALIDATION_ERROR",
                "jobs.daily_balance_check.bank is http but DULY_BANK_HTTP_URL is not set",
                retryable=False,
            )
        return HttpBank(
            url,
            token=os.environ.get("DULY_BANK_HTTP_TOKEN") or None,
            timeout=cfg.per_call_timeout_seconds,
            max_connections=cfg.concurrency,
        )
    return _directory_port(default_banks, cfg, engine, clock)


def _directory_port(
    banks: BankDirectory, cfg: BalanceCheckSettings, engine: Engine, clock: Clock
) -> BankingPort:
    try:
        return banks.get(cfg.bank, engine, clock)
    except LookupError as exc:
        raise JobError("VALIDATION_ERROR", str(exc), retryable=False) from None


class ResultRecorder:
    """Writes a chunk of results in one transaction: result rows, outbox events, error logs."""

    def __init__(self, ctx: JobContext, engine: Engine, business_date: date) -> None:
        self.ctx = ctx
        self.engine = engine
        self.business_date = business_date
        self.first_errors: list[int] = []

    def __call__(self, chunk: Sequence[ItemResult[PremiumCustomer, Decision]]) -> None:
        ctx, day = self.ctx, self.business_date
        rows = []
        for item in chunk:
            decision = item.value
            rows.append(
                {
                    "run_id": ctx.run_id,
                    "business_date": day,
                    "customer_id": item.item.id,
                    "result": Result.ERROR if decision is None else decision.result,
                    "error_code": item.error.code if item.error is not None else None,
                    "attempts": item.attempts,
                    "accounts_checked": decision.accounts_checked if decision else 0,
                    "checked_at": item.finished_at,
                }
            )
        with self.engine.begin() as conn:
            upsert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
            stmt = (
                upsert(balance_check_results)
                .on_conflict_do_nothing(index_elements=["business_date", "customer_id"])
                .returning(balance_check_results.c.customer_id)
            )
            new = {int(c) for c in conn.execute(stmt, rows).scalars()}
            logs: list[dict[str, Any]] = []
            events: list[dict[str, Any]] = []
            for item in chunk:
                if item.item.id not in new:
                    continue  # decided meanwhile by another attempt: keep the first result
                if item.error is not None:
                    logs.append(
                        {
                            "run_id": ctx.run_id,
                            "job_name": ctx.job_name,
                            "customer_id": item.item.id,
                            "business_date": day,
                            "error_code": item.error.code,
                            "message": item.error.message,
                            "retry_count": item.attempts - 1,
                            "stack_trace": item.error.trace,
                            "logged_at": item.finished_at,
                        }
                    )
                elif item.value is not None and item.value.result is Result.FAIL:
                    events.append(
                        {
                            "event_type": BELOW_MINIMUM_EVENT,
                            "aggregate": "customer",
                            "aggregate_id": str(item.item.id),
                            "dedupe_key": f"{JOB_NAME}:{day.isoformat()}:{item.item.id}",
                            "payload": {
                                "customer_id": item.item.id,
                                "business_date": day.isoformat(),
                                "run_id": ctx.run_id,
                            },
                            "created_at": item.finished_at,
                        }
                    )
            if events:  # the customer notifications, in the results' transaction
                conn.execute(upsert(outbox).on_conflict_do_nothing(), events)
            if logs:
                conn.execute(insert(error_logs), logs)
        for entry in logs:
            if len(self.first_errors) < ALERT_FIRST_CUSTOMERS:
                self.first_errors.append(int(entry["customer_id"]))
            ctx.log.warning(
                "balance_check.customer_error",
                customer_id=entry["customer_id"],
                error_code=entry["error_code"],
                attempts=entry["retry_count"] + 1,
                business_date=day.isoformat(),
            )
