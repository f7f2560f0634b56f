"""What the shared executor knows of an operation: its target row and its kind.

A transfer and a recurring occurrence share the execution columns (``status``, ``attempts``,
``next_attempt_at``, ``run_attempt``, ``run_id``, ``error_code``, ``error_message``,
``executed_at``, ``transfer_key``) and the ``payment_attempts`` table, so one executor
serves both: a :class:`Kind` tells it how to load, key and finish one of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

import duly.banking.schema  # noqa: F401  (accounts and customers: referenced below)
from duly.banking.errors import BankingError, ErrorCode
from duly.engine.store.schema import metadata
from duly.engine.store.types import IdType, UTCDateTime
from duly.operations.policy import FailurePolicy

__all__ = ["ACTIVE", "FINAL", "TECHNICAL", "Kind", "Target", "payment_attempts"]


def execution_columns() -> list[Column[Any]]:
    """The columns the executor reads and writes on a transfer or an occurrence."""
    return [
        Column("transfer_key", String(255), nullable=False, unique=True),
        Column("execute_at", UTCDateTime(), nullable=False),
        Column("status", String(16), nullable=False),
        Column("attempts", Integer, nullable=False, server_default="0"),
        Column("next_attempt_at", UTCDateTime()),
        # The attempt number the latest engine run was enqueued for, and that run.
        Column("run_attempt", Integer, nullable=False, server_default="0"),
        Column("run_id", IdType),
        Column("error_code", String(64)),
        Column("error_message", Text),
        Column("executed_at", UTCDateTime()),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("updated_at", UTCDateTime(), nullable=False),
    ]


def policy_columns() -> list[Column[Any]]:
    """The failure policy for transient failures (finance-rules.md §4)."""
    return [
        Column("max_attempts", Integer, nullable=False),
        Column("retry_every_seconds", Integer, nullable=False),
        Column("retry_window_seconds", Integer, nullable=False),
    ]


payment_attempts = Table(
    "payment_attempts",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # transfer | occurrence
    Column("ref_id", IdType, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("run_id", IdType),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=False),
    Column("status", String(16), nullable=False),  # succeeded | failed
    Column("error_code", String(64)),
    Column("error_message", Text),
    UniqueConstraint("kind", "ref_id", "attempt"),
)

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
