"""The nightly premium balance check: job ``daily_balance_check``.

Every night (``jobs.daily_balance_check``, default 22:00 UTC) each premium customer's
balance is read through the :class:`~duly.banking.port.BankingPort` and compared with the
customer's minimum:

* ``PASS``: the balance is at or above the minimum (equality passes);
* ``FAIL``: below it — one customer notification event is written to the outbox;
* ``ERROR``: the balance could not be read or makes no sense, with a taxonomy code
  (``TIMEOUT``, ``MISSING_DATA``, ``INVALID_RESPONSE``, ``API_ERROR``, ``NETWORK_ERROR``,
  ``NULL_BALANCE``, ``NEGATIVE_BALANCE``; ``INTERNAL`` for a bug): neither pass nor fail,
  and a row in ``error_logs``.

The balance is ``posted - pending debits`` (finance-rules.md checklist 15). With
``account_rule: total`` the customer's open accounts in the minimum's currency are added
up; with ``each`` every one of them must reach the minimum.

Reads run through :func:`duly.engine.batch.run_batch`: bounded concurrency, transient
failures retried after 5, 10 and 20 s of the job's clock, one customer's failure never
stops the batch. Results are written in chunks, one row per (business date, customer),
so a rerun or a retried run resumes and never decides a customer twice for a night.
Nothing here writes or logs a balance amount or a full account number.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, and_, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from duly.banking.catalog import describe
from duly.banking.errors import BankingError, ErrorCode
from duly.banking.http import HttpBank
from duly.banking.port import Balance, BankingPort, read_balances
from duly.banking.schema import accounts, customers
from duly.clock import Clock
from duly.config import BalanceCheckSettings
from duly.engine.alerts import StoreAlertSink
from duly.engine.batch import BatchSummary, ItemError, ItemResult, classify_exception, run_batch
from duly.engine.context import JobContext
from duly.engine.errors import JobError
from duly.engine.registry import JobRegistry
from duly.engine.retry import RetryPolicy
from duly.engine.states import RunStatus
from duly.engine.store.base import NewAlert, NewSchedule, RunFilter
from duly.engine.store.sql import SqlStore
from duly.operations.balance_schema import balance_check_results, error_logs
from duly.operations.banks import BankDirectory, default_banks
from duly.operations.schema import outbox

__all__ = [
    "BELOW_MINIMUM_EVENT",
    "ERROR_CODES",
    "JOB_NAME",
    "SCHEDULE_NAME",
    "Decision",
    "PremiumCustomer",
    "Result",
    "balance_check_registry",
    "balance_check_schedule",
    "business_date_of",
    "classify",
    "decided_customers",
    "default_port",
    "load_premium_customers",
    "missed_nights",
    "night_counts",
]

JOB_NAME = "daily_balance_check"
SCHEDULE_NAME = "daily_balance_check"
#: The outbox event a ``FAIL`` writes (for the customer notification).
BELOW_MINIMUM_EVENT = "balance_check.below_minimum"
#: The codes a customer's ``ERROR`` carries (plus ``INTERNAL`` for a bug in duly).
ERROR_CODES: tuple[str, ...] = (
    ErrorCode.TIMEOUT,
    ErrorCode.MISSING_DATA,
    ErrorCode.INVALID_RESPONSE,
    ErrorCode.API_ERROR,
    ErrorCode.NETWORK_ERROR,
    ErrorCode.NULL_BALANCE,
    ErrorCode.NEGATIVE_BALANCE,
)
#: How many customers the aggregated alert names.
ALERT_FIRST_CUSTOMERS = 10

PortFactory = Callable[[BalanceCheckSettings, Engine, Clock], BankingPort]


class Result(StrEnum):
    """A customer's outcome for a night."""

    PASS = "PASS"
    FAIL = "FAIL"
    ERROR = "ERROR"


@dataclass(frozen=True, slots=True)
class PremiumCustomer:
    """A premium customer to check: the minimum (minor units) and the accounts it applies to."""

    id: int
    min_balance_minor: int | None
    currency: str | None
    accounts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Decision:
    """A decided check (``PASS`` or ``FAIL``): never carries the balance itself."""

    result: Result
    accounts_checked: int


# --------------------------------------------------------------------------- pure rules


def classify(
    min_balance_minor: int, currency: str, balances: Sequence[Balance], rule: str = "total"
) -> Decision:
    """``PASS`` or ``FAIL`` for balances read against a minimum (pure).

    The balance used is :attr:`Balance.available_minor` (posted minus pending debits); a
    balance equal to the minimum passes.

    :raises BankingError: ``MISSING_DATA`` without any balance, ``INVALID_RESPONSE`` for a
        balance in another currency, ``NEGATIVE_BALANCE`` for one below its overdraft limit.
    """
    if not balances:
        raise BankingError(ErrorCode.MISSING_DATA, f"no open account in {currency}")
    for b in balances:
        if b.currency != currency:
            raise BankingError(
                ErrorCode.INVALID_RESPONSE, "the bank reported a balance in another currency"
            )
        if b.overdraft_limit_minor is not None and b.available_minor < -b.overdraft_limit_minor:
            raise BankingError(
                ErrorCode.NEGATIVE_BALANCE, "a balance is below the account's overdraft limit"
            )
    if rule == "each":
        ok = all(b.available_minor >= min_balance_minor for b in balances)
    else:
        ok = sum(b.available_minor for b in balances) >= min_balance_minor
    return Decision(Result.PASS if ok else Result.FAIL, len(balances))


def business_date_of(instant: datetime, timezone: str) -> date:
    """The business date a check at ``instant`` is for: its local date in ``timezone``."""
    return instant.astimezone(ZoneInfo(timezone)).date()


def error_of(exc: BaseException) -> ItemError:
    """A failed read as an :class:`ItemError`: a banking code, or ``INTERNAL`` with the trace."""
    if isinstance(exc, BankingError):
        code = exc.code if describe(exc.code) is not None else "INTERNAL"
        return ItemError(code, exc.message[:500], exc.transient)
    return classify_exception(exc)


def balance_check_schedule(cfg: BalanceCheckSettings, grace_seconds: int = 60) -> NewSchedule:
    """The system schedule of the check, from its settings (paused when disabled)."""
    return NewSchedule(
        name=SCHEDULE_NAME,
        job_name=JOB_NAME,
        spec=f"daily:{cfg.schedule_time}",
        timezone=cfg.timezone,
        misfire="run_once",
        misfire_grace_seconds=grace_seconds,
        overlap="queue",
        paused=not cfg.enabled,
        source="config",
    )


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
                job_name=JOB_NAME, status=RunStatus.SUCCEEDED, since=since, limit=500,
                before_id=before,
            )
        )
        covered |= {
            str(r.result.get("business_date")) for r in rows if isinstance(r.result, dict)
        }
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


class _Recorder:
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


def _decide(
    customer: PremiumCustomer, reads: Sequence[Balance | BankingError], rule: str
) -> Decision:
    """A customer's decision from its accounts' reads; the first failed read (in account
    order) is the customer's error."""
    if customer.min_balance_minor is None or customer.currency is None:
        raise BankingError(
            ErrorCode.MISSING_DATA, "the premium customer has no minimum balance configured"
        )
    balances: list[Balance] = []
    for read in reads:
        if isinstance(read, BankingError):
            raise read
        balances.append(read)
    return classify(customer.min_balance_minor, customer.currency, balances, rule)


def _reader(
    port: BankingPort, cfg: BalanceCheckSettings
) -> Callable[[PremiumCustomer], Decision]:
    """One customer's check, one read per account (the retry of a failed customer)."""

    def check(customer: PremiumCustomer) -> Decision:
        if customer.min_balance_minor is None or customer.currency is None:
            return _decide(customer, (), cfg.account_rule)
        reads = [port.get_balance(account_id) for account_id in customer.accounts]
        return _decide(customer, reads, cfg.account_rule)

    return check


def _chunk_reader(
    port: BankingPort, cfg: BalanceCheckSettings
) -> Callable[[Sequence[PremiumCustomer]], list[Decision | BaseException]]:
    """First checks of many customers with one batched read of all their accounts."""

    def check_many(people: Sequence[PremiumCustomer]) -> list[Decision | BaseException]:
        ids = [
            account_id
            for c in people
            if c.min_balance_minor is not None and c.currency is not None
            for account_id in c.accounts
        ]
        failure: Exception | None = None  # the whole read failed: for those who needed it
        reads: dict[str, Balance | BankingError] = {}
        try:
            reads = read_balances(port, ids) if ids else {}
        except Exception as exc:
            failure = exc
        out: list[Decision | BaseException] = []
        for customer in people:
            configured = customer.min_balance_minor is not None and customer.currency
            if configured and customer.accounts and failure is not None:
                out.append(failure)
                continue
            try:
                mine = [reads[a] for a in customer.accounts] if configured else []
                out.append(_decide(customer, mine, cfg.account_rule))
            except BankingError as exc:
                out.append(exc)
        return out

    return check_many


def _requested_date(ctx: JobContext, cfg: BalanceCheckSettings) -> date:
    today = business_date_of(ctx.clock.now(), cfg.timezone)
    raw = ctx.args.get("business_date")
    if raw is None:
        return business_date_of(ctx.scheduled_for, cfg.timezone)
    try:
        day = date.fromisoformat(str(raw))
    except ValueError:
        raise JobError(
            "VALIDATION_ERROR", f"business_date {raw!r}: expected YYYY-MM-DD", retryable=False
        ) from None
    if day > today:
        raise JobError(
            "VALIDATION_ERROR",
            f"business_date {day.isoformat()} is in the future (today is {today.isoformat()})",
            retryable=False,
        )
    return day


async def run_check(
    ctx: JobContext, cfg: BalanceCheckSettings, ports: PortFactory = default_port
) -> dict[str, Any]:
    """One attempt of the check; returns the run's summary (counts only, never an amount)."""
    store = ctx._store
    if store is None:
        raise RuntimeError(f"{JOB_NAME} needs a running engine")
    engine, clock = store.engine, ctx.clock
    started = clock.now()
    day = _requested_date(ctx, cfg)
    sink = StoreAlertSink(store)

    missed = await asyncio.to_thread(missed_nights, store, cfg, started)
    missed = [d for d in missed if d != day]
    for night in missed:
        command = f"duly trigger {JOB_NAME} --arg business_date={night.isoformat()}"
        sink.raise_alert(
            NewAlert(
                dedupe_key=f"balance_check.missed_night:{night.isoformat()}",
                rule="balance_check.missed_night",
                severity="high",
                title=f"{JOB_NAME} never completed for business date {night.isoformat()}; "
                f"backfill with `{command}`",
                now=started,
                details={"business_date": night.isoformat(), "backfill": command},
                job_name=JOB_NAME,
            )
        )

    people = await asyncio.to_thread(load_premium_customers, engine)
    done = await asyncio.to_thread(decided_customers, engine, day)
    ctx.log.info(
        "balance_check.started",
        business_date=day.isoformat(),
        customers=len(people),
        already_decided=len(done),
        concurrency=cfg.concurrency,
        bank=cfg.bank,
    )
    port = ports(cfg, engine, clock)
    recorder = _Recorder(ctx, engine, day)
    try:
        batch: BatchSummary = await run_batch(
            ctx,
            people,
            _reader(port, cfg),
            work_chunk=_chunk_reader(port, cfg),
            chunk_size=cfg.read_batch_size,
            key=lambda c: c.id,
            record=recorder,
            concurrency=cfg.concurrency,
            retry_delays=cfg.call_retry_delays,
            classify=error_of,
            done=done,
            total=len(people),
            flush_every=500,
        )
    finally:
        if ports is default_port and cfg.bank == "http" and isinstance(port, HttpBank):
            port.close()  # the client made for this run

    results, codes = await asyncio.to_thread(night_counts, engine, day)
    completed = clock.now()
    summary: dict[str, Any] = {
        "business_date": day.isoformat(),
        "started_at": started.isoformat(),
        "completed_at": completed.isoformat(),
        "duration_seconds": round((completed - started).total_seconds(), 3),
        "customers": len(people),
        "processed": batch.processed,
        "resumed_after": batch.skipped,
        "passed": results[Result.PASS],
        "failed": results[Result.FAIL],
        "errors": results[Result.ERROR],
        "errors_by_code": dict(sorted(codes.items())),
        "read_retries": batch.retries,
        "missed_nights": [d.isoformat() for d in missed],
    }
    if batch.failed:
        by_code = ", ".join(f"{c} {n}" for c, n in sorted(codes.items()))
        sink.raise_alert(
            NewAlert(
                dedupe_key=f"balance_check.customer_errors:{day.isoformat()}",
                rule="balance_check.customer_errors",
                severity="high",
                title=f"{JOB_NAME} {day.isoformat()}: {results[Result.ERROR]} customer(s) could "
                f"not be checked after retries ({by_code})",
                now=completed,
                details={
                    "business_date": day.isoformat(),
                    "errors_by_code": dict(sorted(codes.items())),
                    "first_customers": recorder.first_errors,
                    "this_attempt": batch.failed,
                },
                run_id=ctx.run_id,
                job_name=JOB_NAME,
            )
        )
    ctx.log.info("balance_check.completed", **summary)
    return summary


def balance_check_registry(
    cfg: BalanceCheckSettings | None = None, *, ports: PortFactory = default_port
) -> JobRegistry:
    """A registry holding ``daily_balance_check`` configured by ``cfg``.

    The job's own retries are ``retry_attempts`` more tries ``retry_delay_seconds`` apart; its
    timeout and its window are ``window_minutes`` (past the window the watchdog alerts).
    """
    settings = cfg or BalanceCheckSettings()
    window = timedelta(minutes=settings.window_minutes)
    registry = JobRegistry()
    policy = RetryPolicy(
        max_attempts=settings.retry_attempts + 1,
        delays=(settings.retry_delay_seconds,),
        jitter=0.0,
    )

    @registry.job(JOB_NAME, timeout=window, retry=policy, max_concurrency=1, window=window)
    async def daily_balance_check(ctx: JobContext) -> dict[str, Any]:
        """Compare every premium customer's balance with their minimum (PASS/FAIL/ERROR)."""
        return await run_check(ctx, settings, ports)

    return registry
