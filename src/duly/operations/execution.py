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

import contextlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, Table, bindparam, insert, select, update

from duly.banking.catalog import describe
from duly.banking.errors import BankingError, ErrorCode, to_job_error
from duly.banking.money import from_minor
from duly.banking.port import TransferRequest, TransferResult
from duly.engine.client import EngineClient
from duly.engine.context import JobContext
from duly.engine.errors import NotFound as RunNotFound
from duly.engine.errors import RunConflict
from duly.engine.store.schema import runs
from duly.engine.store.sql import SqlStore, any_of, insert_rows, pg_execute
from duly.operations.banks import BankDirectory
from duly.operations.outbox import NewEvent, emit, emit_many
from duly.operations.policy import FailurePolicy
from duly.operations.schema import payment_attempts

__all__ = [
    "ACTIVE",
    "FINAL",
    "Kind",
    "Target",
    "cancel_run",
    "ensure_run",
    "execute",
    "execute_many",
    "reconcile_run",
    "set_state",
]

log = structlog.get_logger("duly.operations")

#: States in which an operation still has work to do.
ACTIVE = ("scheduled", "executing", "retrying")
#: States an operation never leaves.
FINAL = ("executed", "failed", "cancelled", "skipped")
#: Failures the engine retries within the run before they count as a business attempt.
TECHNICAL = frozenset(
    {ErrorCode.TIMEOUT, ErrorCode.NETWORK_ERROR, ErrorCode.API_ERROR, ErrorCode.INVALID_RESPONSE}
)


@dataclass(frozen=True, slots=True)
class Target:
    """What one attempt needs to know about its transfer or occurrence."""

    ref_id: int
    customer_id: int | None
    transfer_key: str
    bank: str
    from_account: str
    to_account: str
    amount_minor: int
    currency: str
    memo: str | None
    status: str
    attempts: int
    version: int
    execute_at: datetime
    next_attempt_at: datetime | None
    run_attempt: int
    run_id: int | None
    policy: FailurePolicy
    #: Why it must not run although it is active (e.g. its payment is paused): (status, reason).
    blocked: tuple[str, str] | None = None


@dataclass(frozen=True)
class Kind:
    """How the executor reads and writes one kind of operation.

    :ivar name: ``transfer`` or ``occurrence`` (``payment_attempts.kind``).
    :ivar aggregate: outbox aggregate name.
    :ivar waiting_status: the state while a retry is pending.
    :ivar load: ``(conn, ref_id, lock) -> Target | None``.
    :ivar run_key: the engine run's idempotency key for an attempt.
    :ivar after_final_failure: called on the failure's transaction (e.g. pause a payment).
    :ivar load_many: ``(conn, ref_ids, lock) -> {ref_id: Target}``, for batches.
    :ivar load_banks: ``(conn, ref_ids) -> {ref_id: bank name}``, for batches.
    """

    name: str
    aggregate: str
    table: Table
    job_name: str
    waiting_status: str
    load: Callable[[Connection, int, bool], Target | None]
    run_key: Callable[[Target, int], str]
    after_final_failure: Callable[[Connection, Target, BankingError, datetime], None] | None = None
    load_many: Callable[[Connection, Sequence[int], bool], dict[int, Target]] | None = None
    load_banks: Callable[[Connection, Sequence[int]], dict[int, str]] | None = None

    def banks(self, conn: Connection, ref_ids: Sequence[int]) -> dict[int, str]:
        """The bank of each of ``ref_ids`` (one light statement where the kind has ``load_banks``)."""
        if self.load_banks is not None:
            return self.load_banks(conn, ref_ids)
        return {ref: t.bank for ref, t in self.targets(conn, ref_ids, False).items()}

    def targets(self, conn: Connection, ref_ids: Sequence[int], lock: bool) -> dict[int, Target]:
        """Several targets by id, with one statement where the kind has ``load_many``."""
        if self.load_many is not None:
            return self.load_many(conn, ref_ids, lock)
        found = {ref: self.load(conn, ref, lock) for ref in sorted(set(ref_ids))}
        return {ref: t for ref, t in found.items() if t is not None}


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


def _skip_reason(target: Target | None, attempt: int, version: int | None) -> str | None:
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


# -- the job --------------------------------------------------------------------------


def execute(ctx: JobContext, kind: Kind, banks: BankDirectory) -> dict[str, Any]:
    """Run one attempt (the body of ``transfers.execute`` and ``recurring.execute``)."""
    store = _store(ctx)
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
    store = _store(ctxs[0])
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
    return int(ctx.args["ref_id"]), int(ctx.args["attempt"]), (
        int(version) if version is not None else None
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
    reason = _skip_reason(target, attempt, version)
    if reason is not None or target is None:
        return {"outcome": "noop", "reason": reason}
    if target.blocked is not None:
        status, why = target.blocked
        set_state(conn, kind, target, status, started, event=status, dedupe=status,
                  payload={"reason": why}, next_attempt_at=None, error_message=why)  # fmt: skip
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
    bank = banks.get(target.bank, _store(ctx).engine, ctx.clock)
    outcome = _move(bank, target, conn)
    return _record(conn, kind, target, attempt, outcome, ctx.run_id, started, ctx.clock.now())


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
            outcomes.update({t.ref_id: _move(bank, t, conn) for t in group})
            continue
        requests = [_request(t) for t in group]
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
    """:func:`_record` for many attempts: successes with one statement per table."""
    out: dict[int, Any] = {}
    events = [
        _executing_event(kind, target, attempt)
        for _, target, attempt in moving
        if target.status != "executing"
    ]
    emit_many(conn, events, started)
    attempt_rows: list[dict[str, Any]] = []
    executed: list[dict[str, Any]] = []
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
        events.append(_event(kind, target, "executed", "executed",
                             {"status": "executed", "attempt": attempt,
                              "replayed": outcome.exists}))  # fmt: skip
        out[ctx.run_id] = {"outcome": "executed", "attempt": attempt, "replayed": outcome.exists}
    if executed:
        insert_rows(conn, payment_attempts, attempt_rows)
        _mark_executed(conn, kind.table, executed, now)
        emit_many(conn, events, now)
        log.info("payment.executed_batch", kind=kind.name, executed=len(executed),
                 failed=len(failures))  # fmt: skip
    for ctx, target, attempt, error in failures:
        out[ctx.run_id] = _record(conn, kind, target, attempt, error, ctx.run_id, started, now)
    return out


def _mark_executed(conn: Connection, table: Table, rows: list[dict[str, Any]], now: datetime) -> None:
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


def _event(
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


def _execute_apart(ctxs: Sequence[JobContext], kind: Kind, banks: BankDirectory) -> dict[int, Any]:
    """Attempts on external banks, set-based around the calls.

    1. one short transaction of its own marks them all ``executing`` (so that is what the
       rows show while the banks are called);
    2. the calls, outside any transaction, each transfer with its key: set-based per chunk
       where the bank takes many (:func:`_call_banks`), in parallel; a technical failure
       before the run's last try fails that run, for the engine to retry;
    3. the outcomes recorded on the batch's transaction, each re-checked under lock.
    """
    store = _store(ctxs[0])
    clock = ctxs[0].clock
    started = clock.now()
    out: dict[int, Any] = {}
    with store.engine.begin() as conn:
        moving = _startable(conn, kind, ctxs, started, out)
        _mark_executing(conn, kind, [(t, a) for _, t, a in moving if t.status != "executing"],
                        started)  # fmt: skip
    called = _call_banks(moving, banks, store)
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
            reason = _skip_reason(now_target, attempt, version)
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


def _mark_executing(
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
    emit_many(conn, [_executing_event(kind, t, a) for t, a in items], now)


def _executing_event(kind: Kind, target: Target, attempt: int) -> NewEvent:
    return _event(kind, target, "executing", f"executing:a{attempt}", {"attempt": attempt})


#: Transfers per set-based call to an external bank that takes many at once
#: (``transfer_many``); several such calls of a batch run at once.
EXTERNAL_CHUNK = 100

Called = tuple[TransferResult | BankingError | None, Exception | None]


def _call_banks(
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
            raw = [_move(bank, items[0][1], None)]
        else:
            raw = list(bank.transfer_many([_request(t) for _, t, _ in items]))
    except Exception as exc:  # a bug in the adapter: fails these runs, for the engine
        return [(None, exc)] * len(items)
    out: list[Called] = []
    for (ctx, target, _), outcome in zip(items, raw, strict=True):
        try:
            out.append((_settle(ctx, bank, target, outcome), None))
        except Exception as exc:
            out.append((None, exc))
    return out


def _request(target: Target) -> TransferRequest:
    return TransferRequest(target.from_account, target.to_account, target.amount_minor,
                           target.currency, target.transfer_key)  # fmt: skip


def _call_bank(
    ctx: JobContext, target: Target, banks: BankDirectory, store: SqlStore
) -> TransferResult | BankingError:
    """Call the operation's bank with its key, outside any transaction (see :func:`_settle`)."""
    bank = banks.get(target.bank, store.engine, ctx.clock)
    return _settle(ctx, bank, target, _move(bank, target, None))


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


def _call_external(
    ctx: JobContext, kind: Kind, banks: BankDirectory, started: datetime
) -> dict[str, Any] | tuple[Target, TransferResult | BankingError, datetime]:
    """Start an attempt (own transaction) and call the bank outside any transaction.

    Returns the attempt's summary if there is nothing to move, else what :func:`_record_external`
    needs. A technical failure before the run's last try raises, for the engine to retry.
    """
    store = _store(ctx)
    ref_id, attempt, version = _args(ctx)
    with store.engine.begin() as conn:
        target = kind.load(conn, ref_id, True)
        early = _before_moving(conn, kind, target, attempt, version, started)
        if early is not None or target is None:
            return early or {"outcome": "noop", "reason": "missing"}
        if target.status != "executing":
            set_state(conn, kind, target, "executing", started, event="executing",
                      dedupe=f"executing:a{attempt}", payload={"attempt": attempt})  # fmt: skip
    return target, _call_bank(ctx, target, banks, store), started


def _record_external(
    ctx: JobContext, kind: Kind, target: Target, outcome: TransferResult | BankingError,
    started: datetime,
) -> dict[str, Any]:  # fmt: skip
    """Record an external call's outcome on the run's transaction (re-checked under lock)."""
    ref_id, attempt, version = _args(ctx)
    with ctx.transaction() as conn:
        current = kind.load(conn, ref_id, True)
        reason = _skip_reason(current, attempt, version)
        if current is None or reason is not None:
            return {"outcome": "noop", "reason": reason}
        return _record(conn, kind, current, attempt, outcome, ctx.run_id, started, ctx.clock.now())


def _move(bank: Any, target: Target, conn: Connection | None) -> TransferResult | BankingError:
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


def _record(
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
        log.info("payment.retry_scheduled", kind=kind.name, ref_id=target.ref_id, attempt=attempt,
                 code=error.code, retry_at=retry_at.isoformat())  # fmt: skip
        return {"outcome": "retry", "attempt": attempt, "code": error.code,
                "retry_at": retry_at.isoformat()}  # fmt: skip
    set_state(conn, kind, target, "failed", now, event="failed", dedupe="failed",
              payload={"attempt": attempt, "code": error.code, "transient": error.transient},
              next_attempt_at=None, **common)  # fmt: skip
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


# -- runs -----------------------------------------------------------------------------


def ensure_run(client: EngineClient, kind: Kind, ref_id: int) -> int | None:
    """Enqueue the engine run of the operation's next attempt if it has none; return its id.

    Idempotent: the run's key is deterministic and the row remembers the attempt it was
    enqueued for.
    """
    with client.store.engine.connect() as conn:
        target = kind.load(conn, ref_id, False)
    if target is None or target.status not in ACTIVE or target.next_attempt_at is None:
        return None
    attempt = target.attempts + 1
    if target.run_attempt >= attempt:
        return target.run_id
    run, _ = client.trigger(
        kind.job_name,
        {"ref_id": ref_id, "attempt": attempt, "version": target.version},
        idempotency_key=kind.run_key(target, attempt),
        scheduled_for=target.next_attempt_at,
        origin=kind.name,
    )
    with client.store.engine.begin() as conn:
        conn.execute(
            update(kind.table)
            .where(
                kind.table.c.id == ref_id,
                kind.table.c.run_attempt < attempt,
                kind.table.c.attempts == target.attempts,
            )
            .values(run_attempt=attempt, run_id=run.id)
        )
    return run.id


def cancel_run(store: SqlStore, run_id: int | None, now: datetime) -> None:
    """Cancel a queued run (ask a running one to stop); a finished or missing run is left alone."""
    if run_id is None:
        return
    with contextlib.suppress(RunNotFound, RunConflict):
        store.run_cancel(run_id, now)


def reconcile_run(engine: Engine, kind: Kind, ref_id: int, now: datetime) -> str | None:
    """Record the attempt of a run that ended ``failed``/``cancelled`` without recording it.

    A failed run counts as a failed attempt with the run's error code (the policy decides
    on a retry); a cancelled one cancels the operation. Returns what was done, if anything.
    """
    with engine.begin() as conn:
        target = kind.load(conn, ref_id, True)
        if target is None or target.status not in ACTIVE or target.run_id is None:
            return None
        if target.run_attempt != target.attempts + 1:
            return None
        run = conn.execute(
            select(runs.c.status, runs.c.error_code, runs.c.error_message, runs.c.started_at).where(
                runs.c.id == target.run_id
            )
        ).one_or_none()
        if run is None or run.status not in ("failed", "cancelled"):
            return None
        attempt = target.attempts + 1
        if run.status == "cancelled":
            set_state(conn, kind, target, "cancelled", now, event="cancelled", dedupe="cancelled",
                      payload={"reason": "run cancelled by an operator"}, next_attempt_at=None,
                      error_code="CANCELLED", error_message="run cancelled by an operator")  # fmt: skip
            return "cancelled"
        code = run.error_code or "INTERNAL"
        error = BankingError(code, run.error_message or code)
        _record(conn, kind, target, attempt, error, target.run_id, run.started_at or now, now)
        return "failed_attempt"


def _store(ctx: JobContext) -> SqlStore:
    store = ctx._store
    if store is None:
        raise RuntimeError("this job needs a running engine (ctx has no store)")
    return store
