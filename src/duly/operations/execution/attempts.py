"""One attempt of a money movement — a scheduled transfer or a recurring occurrence.

Each attempt is an engine run (job ``transfers.execute`` or ``recurring.execute``, args
``ref_id``, ``attempt``, ``version``). The effect is exactly-once because the bank applies
the operation's ``transfer_key`` at most once, and the state is exact because it is
written under a row lock:

1. **start** (own short transaction): lock the row; do nothing if it is final,
   rescheduled, or this attempt is already recorded; mark it ``executing`` (outbox event).
2. **move money**: with the built-in ledger the posting happens on the run's own
   transaction (``ctx.transaction()``), so posting, state and run completion commit
   together; an external bank is called outside any transaction, with the key.
3. **record** (on ``ctx.transaction()``): the attempt row, the new state, outbox events —
   ``executed``; or a failure: a transient one is retried ``retry_every`` later within
   the policy (the state says when, the sweeper enqueues the run); a terminal one, or the
   last, makes the operation ``failed`` and writes one customer notification.

A bank's *technical* failures (timeout, network, 5xx, malformed answer) are first retried
by the engine within the run (short backoff, nothing recorded); on the run's last try they
become a business attempt like any other failure. Runs that end ``failed`` or
``cancelled`` without recording their attempt (a crash loop, an operator) are reconciled by
the sweeper (:func:`reconcile_run`).

Payment failures are business outcomes: the run *succeeds* and its summary says
``{"outcome": "failed", "code": ...}``; only failures of the machinery fail the run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from duly.audit import record
from duly.banking.errors import BankingError
from duly.banking.port import TransferResult
from duly.engine.context import JobContext
from duly.engine.store.dialect import insert_rows
from duly.engine.store.sql import SqlStore
from duly.operations.auditing import target_entry
from duly.operations.banks import BankDirectory
from duly.operations.execution.bank_calls import call_bank, call_banks, move_money, transfer_request
from duly.operations.execution.models import Kind, Target, payment_attempts
from duly.operations.execution.outcomes import (
    executing_event,
    log,
    mark_executed,
    mark_executing,
    record_outcome,
    set_state,
    skip_reason,
    state_event,
)
from duly.operations.execution.runs import store_of
from duly.operations.outbox import emit_many

__all__ = ["execute", "execute_many"]


# -- the job --------------------------------------------------------------------------


def execute(ctx: JobContext, kind: Kind, banks: BankDirectory) -> dict[str, Any]:
    """Run one attempt (the body of ``transfers.execute`` and ``recurring.execute``)."""
    store = store_of(ctx)
    ref_id, attempt, version = _args(ctx)
    started = ctx.clock.now()
    with store.engine.connect() as conn:
        peek = kind.load(conn, ref_id, False)
    if peek is not None and banks.get(peek.bank, store.engine, ctx.clock).shares_transaction:
        # the bank posts on duly's own database: start, post, record and the run's
        # completion all commit in one transaction (one round of locks per transfer)
        with ctx.transaction() as conn:
            return _execute_in(conn, kind, banks, ctx, ref_id, attempt, version, started)
    called = _call_external(ctx, kind, banks, started)
    if isinstance(called, dict):
        return called
    return _record_external(ctx, kind, *called)


def execute_many(ctxs: Sequence[JobContext], kind: Kind, banks: BankDirectory) -> list[Any]:
    """One attempt for each of several runs claimed together: the batch form of :func:`execute`.

    Runs whose bank shares duly's database (the ledger) are executed set-based on the
    batch's one transaction: their rows locked with one statement, the postings made with
    :meth:`~duly.banking.ledger.LedgerBank.transfer_many`, attempts, states and events
    written with one statement each; all of it commits with the runs' completions. Runs on
    an external bank call it outside any transaction (set-based per chunk where the bank
    takes many, concurrently), each transfer with its key, then record on the batch's
    transaction. One entry per run, in order: its summary
    or the exception that fails it (a technical failure to retry).
    """
    if len(ctxs) == 1:
        return [_caught(execute, ctxs[0], kind, banks)]
    store = store_of(ctxs[0])
    clock = ctxs[0].clock
    with store.engine.connect() as conn:
        bank_of = kind.banks(conn, [_args(c)[0] for c in ctxs])
    sharing = {
        name: banks.get(name, store.engine, clock).shares_transaction
        for name in set(bank_of.values())
    }
    together: list[JobContext] = []
    apart: list[JobContext] = []
    for ctx in ctxs:
        bank = bank_of.get(_args(ctx)[0])
        (together if bank is not None and sharing[bank] else apart).append(ctx)
    results: dict[int, Any] = {}
    # External calls first: they start in transactions of their own, which must not wait
    # for the batch's transaction (on SQLite it holds the one write lock until the end).
    if apart:
        results.update(_execute_apart(apart, kind, banks))
    if together:
        results.update(_execute_together(together, kind, banks, store))
    return [results[ctx.run_id] for ctx in ctxs]


def _args(ctx: JobContext) -> tuple[int, int, int | None]:
    version = ctx.args.get("version")
    return (
        int(ctx.args["ref_id"]),
        int(ctx.args["attempt"]),
        (int(version) if version is not None else None),
    )


def _caught(work: Callable[..., Any], *args: Any) -> Any:
    """``work(*args)``, or the exception it raised (a batch's per-run failure)."""
    try:
        return work(*args)
    except Exception as exc:
        return exc


def _before_moving(
    conn: Connection,
    kind: Kind,
    target: Target | None,
    attempt: int,
    version: int | None,
    started: datetime,
) -> dict[str, Any] | None:
    """The attempt's summary if it must not move money (done, rescheduled, blocked), else None."""
    reason = skip_reason(target, attempt, version)
    if reason is not None or target is None:
        return {"outcome": "noop", "reason": reason}
    if target.blocked is not None:
        status, why = target.blocked
        set_state(conn, kind, target, status, started, event=status, dedupe=status,
                  payload={"reason": why}, next_attempt_at=None, error_message=why)  # fmt: skip
        verb = {"skipped": "skip", "cancelled": "cancel"}.get(status, status)
        record(conn, [target_entry(kind, target, verb, reason=why)], started)
        return {"outcome": status, "reason": why}
    return None


def _execute_in(
    conn: Connection,
    kind: Kind,
    banks: BankDirectory,
    ctx: JobContext,
    ref_id: int,
    attempt: int,
    version: int | None,
    started: datetime,
) -> dict[str, Any]:
    """One attempt with a bank that shares duly's transaction, all of it on ``conn``."""
    target = kind.load(conn, ref_id, True)
    early = _before_moving(conn, kind, target, attempt, version, started)
    if early is not None or target is None:
        return early or {"outcome": "noop", "reason": "missing"}
    if target.status != "executing":
        set_state(conn, kind, target, "executing", started, event="executing",
                  dedupe=f"executing:a{attempt}", payload={"attempt": attempt})  # fmt: skip
    bank = banks.get(target.bank, store_of(ctx).engine, ctx.clock)
    outcome = move_money(bank, target, conn)
    return record_outcome(
        conn, kind, target, attempt, outcome, ctx.run_id, started, ctx.clock.now()
    )


def _execute_together(
    ctxs: Sequence[JobContext], kind: Kind, banks: BankDirectory, store: SqlStore
) -> dict[int, Any]:
    """Attempts on banks sharing duly's database, set-based on the batch's transaction."""
    clock = ctxs[0].clock
    started = clock.now()
    out: dict[int, Any] = {}
    with ctxs[0].transaction() as conn:
        moving = _startable(conn, kind, ctxs, started, out)
        if not moving:
            return out
        outcomes = _move_many(banks, store, clock, conn, [t for _, t, _ in moving])
        out.update(_record_many(conn, kind, moving, outcomes, started, clock.now()))
    return out


def _move_many(
    banks: BankDirectory, store: SqlStore, clock: Any, conn: Connection, targets: list[Target]
) -> list[TransferResult | BankingError]:
    """Post every target, with one set-based call per bank that has one."""
    outcomes: dict[int, TransferResult | BankingError] = {}
    by_bank: dict[str, list[Target]] = {}
    for target in targets:
        by_bank.setdefault(target.bank, []).append(target)
    for name, group in by_bank.items():
        bank = banks.get(name, store.engine, clock)
        many = getattr(bank, "transfer_many", None)
        if many is None:
            outcomes.update({t.ref_id: move_money(bank, t, conn) for t in group})
            continue
        requests = [transfer_request(t) for t in group]
        outcomes.update(zip([t.ref_id for t in group], many(requests, conn=conn), strict=True))
    return [outcomes[t.ref_id] for t in targets]


def _record_many(
    conn: Connection,
    kind: Kind,
    moving: list[tuple[JobContext, Target, int]],
    outcomes: list[TransferResult | BankingError],
    started: datetime,
    now: datetime,
) -> dict[int, Any]:
    """:func:`record_outcome` for many attempts: successes with one statement per table."""
    out: dict[int, Any] = {}
    events = [
        executing_event(kind, target, attempt)
        for _, target, attempt in moving
        if target.status != "executing"
    ]
    emit_many(conn, events, started)
    attempt_rows: list[dict[str, Any]] = []
    executed: list[dict[str, Any]] = []
    audited = []
    events = []
    failures: list[tuple[JobContext, Target, int, BankingError]] = []
    for (ctx, target, attempt), outcome in zip(moving, outcomes, strict=True):
        if isinstance(outcome, BankingError):
            failures.append((ctx, target, attempt, outcome))
            continue
        attempt_rows.append({"kind": kind.name, "ref_id": target.ref_id, "attempt": attempt,
                             "run_id": ctx.run_id, "started_at": started, "finished_at": now,
                             "status": "succeeded", "error_code": None,
                             "error_message": None})  # fmt: skip
        executed.append({"ref": target.ref_id, "made": attempt})
        audited.append(target_entry(kind, target, "execute", attempt=attempt,
                                    replayed=outcome.exists))  # fmt: skip
        events.append(state_event(kind, target, "executed", "executed",
                             {"status": "executed", "attempt": attempt,
                              "replayed": outcome.exists}))  # fmt: skip
        out[ctx.run_id] = {"outcome": "executed", "attempt": attempt, "replayed": outcome.exists}
    if executed:
        insert_rows(conn, payment_attempts, attempt_rows)
        mark_executed(conn, kind.table, executed, now)
        emit_many(conn, events, now)
        record(conn, audited, now)
        log.info("payment.executed_batch", kind=kind.name, executed=len(executed),
                 failed=len(failures))  # fmt: skip
    for ctx, target, attempt, error in failures:
        out[ctx.run_id] = record_outcome(
            conn, kind, target, attempt, error, ctx.run_id, started, now
        )
    return out


def _execute_apart(ctxs: Sequence[JobContext], kind: Kind, banks: BankDirectory) -> dict[int, Any]:
    """Attempts on external banks, set-based around the calls.

    1. one short transaction of its own marks them all ``executing`` (so that is what the
       rows show while the banks are called);
    2. the calls, outside any transaction, each transfer with its key: set-based per chunk
       where the bank takes many (:func:`call_banks`), in parallel; a technical failure
       before the run's last try fails that run, for the engine to retry;
    3. the outcomes recorded on the batch's transaction, each re-checked under lock.
    """
    store = store_of(ctxs[0])
    clock = ctxs[0].clock
    started = clock.now()
    out: dict[int, Any] = {}
    with store.engine.begin() as conn:
        moving = _startable(conn, kind, ctxs, started, out)
        mark_executing(conn, kind, [(t, a) for _, t, a in moving if t.status != "executing"],
                        started)  # fmt: skip
    called = call_banks(moving, banks, store)
    done: list[tuple[JobContext, Target, int]] = []
    outcomes: list[TransferResult | BankingError] = []
    for (ctx, target, attempt), (outcome, raised) in zip(moving, called, strict=True):
        if raised is not None:  # a technical failure to retry, or a bug: fails the run
            out[ctx.run_id] = raised
        else:
            assert outcome is not None
            done.append((ctx, target, attempt))
            outcomes.append(outcome)  # a bank's answer, a refusal (BankingError) included
    if not done:
        return out
    with ctxs[0].transaction() as conn:
        current = kind.targets(conn, [t.ref_id for _, t, _ in done], True)
        keep: list[tuple[JobContext, Target, int]] = []
        kept: list[TransferResult | BankingError] = []
        for (ctx, _, attempt), outcome in zip(done, outcomes, strict=True):
            ref_id, _, version = _args(ctx)
            now_target = current.get(ref_id)
            reason = skip_reason(now_target, attempt, version)
            if now_target is None or reason is not None:
                out[ctx.run_id] = {"outcome": "noop", "reason": reason}
                continue
            keep.append((ctx, now_target, attempt))
            kept.append(outcome)
        out.update(_record_many(conn, kind, keep, kept, started, clock.now()))
    return out


def _startable(
    conn: Connection,
    kind: Kind,
    ctxs: Sequence[JobContext],
    started: datetime,
    out: dict[int, Any],
) -> list[tuple[JobContext, Target, int]]:
    """Lock the batch's operations; the attempts that may move money (others' summaries to ``out``)."""
    targets = kind.targets(conn, [_args(c)[0] for c in ctxs], True)
    taken: set[int] = set()
    moving: list[tuple[JobContext, Target, int]] = []
    for ctx in ctxs:
        ref_id, attempt, version = _args(ctx)
        if ref_id in taken:  # two runs for one attempt (a bug, an operator): one moves money
            out[ctx.run_id] = {"outcome": "noop", "reason": "attempt already recorded"}
            continue
        target = targets.get(ref_id)
        early = _before_moving(conn, kind, target, attempt, version, started)
        if early is not None or target is None:
            out[ctx.run_id] = early
            continue
        taken.add(ref_id)
        moving.append((ctx, target, attempt))
    return moving


def _call_external(
    ctx: JobContext, kind: Kind, banks: BankDirectory, started: datetime
) -> dict[str, Any] | tuple[Target, TransferResult | BankingError, datetime]:
    """Start an attempt (own transaction) and call the bank outside any transaction.

    Returns the attempt's summary if there is nothing to move, else what :func:`_record_external`
    needs. A technical failure before the run's last try raises, for the engine to retry.
    """
    store = store_of(ctx)
    ref_id, attempt, version = _args(ctx)
    with store.engine.begin() as conn:
        target = kind.load(conn, ref_id, True)
        early = _before_moving(conn, kind, target, attempt, version, started)
        if early is not None or target is None:
            return early or {"outcome": "noop", "reason": "missing"}
        if target.status != "executing":
            set_state(conn, kind, target, "executing", started, event="executing",
                      dedupe=f"executing:a{attempt}", payload={"attempt": attempt})  # fmt: skip
    return target, call_bank(ctx, target, banks, store), started


def _record_external(
    ctx: JobContext, kind: Kind, target: Target, outcome: TransferResult | BankingError,
    started: datetime,
) -> dict[str, Any]:  # fmt: skip
    """Record an external call's outcome on the run's transaction (re-checked under lock)."""
    ref_id, attempt, version = _args(ctx)
    with ctx.transaction() as conn:
        current = kind.load(conn, ref_id, True)
        reason = skip_reason(current, attempt, version)
        if current is None or reason is not None:
            return {"outcome": "noop", "reason": reason}
        return record_outcome(
            conn, kind, current, attempt, outcome, ctx.run_id, started, ctx.clock.now()
        )
