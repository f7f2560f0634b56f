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
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Engine

from duly.banking.errors import BankingError, ErrorCode
from duly.banking.http import HttpBank
from duly.banking.port import Balance, BankingPort, read_balances
from duly.clock import Clock
from duly.config import BalanceCheckSettings
from duly.engine.alerts import StoreAlertSink
from duly.engine.batch import BatchSummary, run_batch
from duly.engine.context import JobContext
from duly.engine.errors import JobError
from duly.engine.registry import JobRegistry
from duly.engine.retry import RetryPolicy
from duly.engine.store.base import NewAlert
from duly.operations.balance_check.models import JOB_NAME, Decision, PremiumCustomer, Result
from duly.operations.balance_check.planning import business_date_of, classify, error_of
from duly.operations.balance_check.service import (
    ResultRecorder,
    decided_customers,
    default_port,
    load_premium_customers,
    missed_nights,
    night_counts,
)

__all__ = ["PortFactory", "balance_check_registry", "run_check"]

PortFactory = Callable[[BalanceCheckSettings, Engine, Clock], BankingPort]


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


def _reader(port: BankingPort, cfg: BalanceCheckSettings) -> Callable[[PremiumCustomer], Decision]:
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
    recorder = ResultRecorder(ctx, engine, day)
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
