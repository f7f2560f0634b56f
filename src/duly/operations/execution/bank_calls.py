"""Calls to the bank for an attempt: one transfer request, or many on a bounded thread pool.

A bank outside duly's database (the HTTP adapter) is called outside any transaction, in
chunks on a small shared pool, so one slow bank call does not hold a database connection.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import Connection

from duly.banking.errors import BankingError, to_job_error
from duly.banking.port import TransferRequest, TransferResult
from duly.engine.context import JobContext
from duly.engine.store.sql import SqlStore
from duly.operations.banks import BankDirectory
from duly.operations.execution.models import TECHNICAL, Target

__all__ = ["EXTERNAL_CHUNK", "EXTERNAL_CONCURRENCY", "Called"]


#: External bank calls in flight at once in this process (all batches together). Each
#: holds a database connection while it starts its attempt, so this stays well below the
#: connection pool, which the engine's heartbeats also need.
EXTERNAL_CONCURRENCY = 12

_external_calls: ThreadPoolExecutor | None = None

_external_lock = threading.Lock()


def _external_pool() -> ThreadPoolExecutor:
    global _external_calls
    with _external_lock:
        if _external_calls is None:
            _external_calls = ThreadPoolExecutor(
                max_workers=EXTERNAL_CONCURRENCY, thread_name_prefix="duly-bank"
            )
        return _external_calls


#: Transfers per set-based call to an external bank that takes many at once
#: (``transfer_many``); several such calls of a batch run at once.
EXTERNAL_CHUNK = 100

Called = tuple[TransferResult | BankingError | None, Exception | None]


def call_banks(
    moving: list[tuple[JobContext, Target, int]], banks: BankDirectory, store: SqlStore
) -> list[Called]:
    """Each attempt's bank outcome (a refusal is one) or what fails its run, in order.

    A bank with ``transfer_many`` gets one call per :data:`EXTERNAL_CHUNK` transfers,
    another one call per transfer; the calls run in parallel (:data:`EXTERNAL_CONCURRENCY`).
    """
    by_bank: dict[str, list[tuple[JobContext, Target, int]]] = {}
    for item in moving:
        by_bank.setdefault(item[1].bank, []).append(item)
    units: list[tuple[Any, list[tuple[JobContext, Target, int]]]] = []
    for name, items in by_bank.items():
        bank = banks.get(name, store.engine, items[0][0].clock)
        step = EXTERNAL_CHUNK if callable(getattr(bank, "transfer_many", None)) else 1
        units += [(bank, items[i : i + step]) for i in range(0, len(items), step)]
    called: dict[int, Called] = {}
    for unit, outcomes in zip(units, _external_pool().map(_call_unit, units), strict=True):
        called.update(zip([ctx.run_id for ctx, _, _ in unit[1]], outcomes, strict=True))
    return [called[ctx.run_id] for ctx, _, _ in moving]


def _call_unit(unit: tuple[Any, list[tuple[JobContext, Target, int]]]) -> list[Called]:
    """One call to an external bank (one transfer, or a chunk), each outcome settled."""
    bank, items = unit
    try:
        if len(items) == 1 and not callable(getattr(bank, "transfer_many", None)):
            raw = [move_money(bank, items[0][1], None)]
        else:
            raw = list(bank.transfer_many([transfer_request(t) for _, t, _ in items]))
    except Exception as exc:  # a bug in the adapter: fails these runs, for the engine
        return [(None, exc)] * len(items)
    out: list[Called] = []
    for (ctx, target, _), outcome in zip(items, raw, strict=True):
        try:
            out.append((_settle(ctx, bank, target, outcome), None))
        except Exception as exc:
            out.append((None, exc))
    return out


def transfer_request(target: Target) -> TransferRequest:
    return TransferRequest(target.from_account, target.to_account, target.amount_minor,
                           target.currency, target.transfer_key)  # fmt: skip


def call_bank(
    ctx: JobContext, target: Target, banks: BankDirectory, store: SqlStore
) -> TransferResult | BankingError:
    """Call the operation's bank with its key, outside any transaction (see :func:`_settle`)."""
    bank = banks.get(target.bank, store.engine, ctx.clock)
    return _settle(ctx, bank, target, move_money(bank, target, None))


def _settle(
    ctx: JobContext, bank: Any, target: Target, outcome: TransferResult | BankingError
) -> TransferResult | BankingError:
    """The outcome an attempt records: a technical failure is the engine's to retry.

    :raises JobError: a technical failure before the run's last try (the engine retries);
        on the last try, whether the bank recorded the transfer after all decides.
    """
    if isinstance(outcome, BankingError) and outcome.code in TECHNICAL:
        if not ctx.is_last_attempt:
            raise to_job_error(outcome)
        outcome = _settled_anyway(bank, target) or outcome
    return outcome


def move_money(bank: Any, target: Target, conn: Connection | None) -> TransferResult | BankingError:
    try:
        result: TransferResult = bank.transfer(
            target.from_account,
            target.to_account,
            target.amount_minor,
            target.currency,
            target.transfer_key,
            conn=conn,
        )
    except BankingError as exc:
        return exc
    return result


def _settled_anyway(bank: Any, target: Target) -> TransferResult | None:
    """After a lost answer, whether the bank recorded the transfer after all."""
    try:
        found: TransferResult | None = bank.get_transfer(target.transfer_key)
    except BankingError:
        return None
    return found
