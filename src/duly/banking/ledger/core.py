"""The ledger's core: one posting validated, its accounts locked, funds checked, written once.

Every way of moving money (single-phase, two-phase, reversal) ends in :meth:`LedgerCore._create`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

import structlog
from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from duly.audit import AuditEntry, record
from duly.banking.alerts import write_alert
from duly.banking.errors import BankingError, ErrorCode
from duly.banking.money import check_currency, from_minor, mask_account, mask_accounts_in
from duly.banking.port import TransferResult
from duly.banking.schema import accounts, ledger_transfers
from duly.clock import Clock
from duly.engine.store.base import NewAlert
from duly.engine.store.dialect import any_of


def ledger_log() -> Any:
    """The ledger's logger, looked up per call (a CLI run may close the stream of a cached one)."""
    return structlog.get_logger("duly.ledger")


T = TypeVar("T")


#: Kinds of ledger transfer (column ``kind``).
POSTED, PENDING = "posted", "pending"


POST_PENDING, VOID_PENDING, EXPIRE_PENDING = "post_pending", "void_pending", "expire_pending"


STATUS_OF_KIND = {
    POSTED: "posted",
    PENDING: "pending",
    POST_PENDING: "posted",
    VOID_PENDING: "voided",
    EXPIRE_PENDING: "expired",
}


#: The audit action of writing a transfer of each kind (a reversal is ``ledger.reverse``).
ACTION_OF_KIND = {
    POSTED: "ledger.post",
    PENDING: "ledger.reserve",
    POST_PENDING: "ledger.post",
    VOID_PENDING: "ledger.void",
    EXPIRE_PENDING: "ledger.expire",
}


def funding_account_id(currency: str) -> str:
    """The bank's internal account that funds deposits in ``currency`` (no overdraft limit)."""
    return f"BANK-FUNDING-{check_currency(currency)}"


@dataclass(frozen=True, slots=True)
class Posting:
    """A transfer to create, before it is written."""

    id: str
    debit: str
    credit: str
    amount: int
    currency: str
    kind: str = POSTED
    pending_id: str | None = None
    reverses_id: str | None = None
    expires_at: datetime | None = None
    reference: str | None = None

    def same_as(self, row: Any) -> bool:
        """Whether the stored ``row`` has this transfer's fields (a replay, not a conflict)."""
        return (
            row.debit_account_id == self.debit
            and row.credit_account_id == self.credit
            and int(row.amount) == self.amount
            and row.currency == self.currency
            and row.kind == self.kind
            and row.pending_id == self.pending_id
            and row.reverses_id == self.reverses_id
        )


def posting_entry(new: Posting) -> AuditEntry:
    """The audit event of writing ``new``: what moved between which accounts, masked.

    Never a balance: an account's totals are not the posting's business. The transfer's id
    and references are the caller's keys, which may contain an account number: masked too.
    """

    def safe(text: str | None) -> str | None:
        return None if text is None else mask_accounts_in(text, new.debit, new.credit)

    action = "ledger.reverse" if new.reverses_id is not None else ACTION_OF_KIND[new.kind]
    details = {
        "kind": new.kind,
        "amount": str(from_minor(new.amount, new.currency)),
        "currency": new.currency,
        "debit_account": mask_account(new.debit),
        "credit_account": mask_account(new.credit),
        "reference": safe(new.reference),
        "pending_id": safe(new.pending_id),
        "reverses_id": safe(new.reverses_id),
        "expires_at": new.expires_at,
    }
    return AuditEntry(
        action, "ledger_transfer", safe(new.id), {k: v for k, v in details.items() if v is not None}
    )


class PostingConflict(Exception):
    """Raised inside a posting when its key exists with other fields; turned into an alert."""

    def __init__(self, new: Posting, row: Any) -> None:
        super().__init__(new.id)
        self.new = new
        self.row = row


PG_ADD_POSTED = (
    "UPDATE accounts AS a SET debits_posted = a.debits_posted + v.debits,"
    " credits_posted = a.credits_posted + v.credits"
    " FROM unnest(CAST(:ids AS text[]), CAST(:debits AS bigint[]), CAST(:credits AS bigint[]))"
    " AS v(id, debits, credits) WHERE a.id = v.id"
)


def transfer_values(new: Posting, now: datetime) -> dict[str, Any]:
    return {
        "id": new.id,
        "debit_account_id": new.debit,
        "credit_account_id": new.credit,
        "amount": new.amount,
        "currency": new.currency,
        "kind": new.kind,
        "pending_id": new.pending_id,
        "reverses_id": new.reverses_id,
        "expires_at": new.expires_at,
        "reference": new.reference,
        "created_at": now,
    }


def result_of(new: Posting, *, exists: bool) -> TransferResult:
    return TransferResult(
        id=new.id,
        debit_account_id=new.debit,
        credit_account_id=new.credit,
        amount_minor=new.amount,
        currency=new.currency,
        status=STATUS_OF_KIND[new.kind],
        created_at=None,
        exists=exists,
    )


def internal_error(message: str) -> BankingError:
    return BankingError("INTERNAL", message)


def check_funds(debit: Any, amount: int) -> None:
    limit = debit.overdraft_limit_minor
    if limit is None:
        return
    if int(debit.debits_posted) + int(debit.debits_pending) + amount > int(
        debit.credits_posted
    ) + int(limit):
        raise BankingError(
            ErrorCode.INSUFFICIENT_FUNDS,
            f"account {mask_account(debit.id)} lacks the available funds",
        )


def result_from_row(row: Any, *, exists: bool) -> TransferResult:
    return TransferResult(
        id=row.id,
        debit_account_id=row.debit_account_id,
        credit_account_id=row.credit_account_id,
        amount_minor=int(row.amount),
        currency=row.currency,
        status=STATUS_OF_KIND[row.kind],
        created_at=row.created_at,
        exists=exists,
    )


class LedgerCore:
    """Transactions, locks, idempotent replays and the posting of one transfer."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self._pg = engine.dialect.name == "postgresql"

    @contextlib.contextmanager
    def _tx(self, conn: Connection | None) -> Iterator[Connection]:
        if conn is None:
            with self.engine.begin() as own:
                yield own
        else:
            with conn.begin_nested():
                yield conn

    def _run(self, conn: Connection | None, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in a transaction (or a savepoint of ``conn``); alert on a key conflict."""
        try:
            with self._tx(conn) as c:
                return work(c)
        except PostingConflict as conflict:
            error = self._conflict_error(conflict)
            if conn is None:
                with self.engine.begin() as own:
                    self._alert_conflict(own, conflict, error)
            else:
                self._alert_conflict(conn, conflict, error)
            raise error from None

    def _conflict_error(self, conflict: PostingConflict) -> BankingError:
        differs = [
            name
            for name, mine, theirs in (
                ("debit account", conflict.new.debit, conflict.row.debit_account_id),
                ("credit account", conflict.new.credit, conflict.row.credit_account_id),
                ("amount", conflict.new.amount, int(conflict.row.amount)),
                ("currency", conflict.new.currency, conflict.row.currency),
                ("kind", conflict.new.kind, conflict.row.kind),
                ("pending transfer", conflict.new.pending_id, conflict.row.pending_id),
                ("reversed transfer", conflict.new.reverses_id, conflict.row.reverses_id),
            )
            if mine != theirs
        ]
        return BankingError(
            ErrorCode.IDEMPOTENCY_CONFLICT,
            f"transfer {conflict.new.id} exists with a different {', '.join(differs)}; "
            "nothing was posted",
            details={"transfer_id": conflict.new.id, "differs": differs},
        )

    def _alert_conflict(
        self, conn: Connection, conflict: PostingConflict, error: BankingError
    ) -> None:
        write_alert(
            conn,
            NewAlert(
                dedupe_key=f"ledger.idempotency_conflict:{conflict.new.id}",
                rule="ledger.idempotency_conflict",
                severity="critical",
                title=f"idempotency key {conflict.new.id} reused with different fields; "
                "nothing posted",
                now=self.clock.now(),
                details=error.details,
            ),
        )

    def _insert(self, conn: Connection) -> Any:
        return pg_insert if conn.dialect.name == "postgresql" else sqlite_insert

    def _lock(self, conn: Connection, ids: list[str]) -> dict[str, Any]:
        """The rows of ``ids``, locked in id order (PostgreSQL) so concurrent postings never deadlock."""
        pg = conn.dialect.name == "postgresql"
        stmt = (
            select(accounts)
            .where(any_of(accounts.c.id, sorted(set(ids)), postgres=pg))
            .order_by(accounts.c.id)
        )
        if conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        return {row.id: row for row in conn.execute(stmt).all()}

    def _existing(self, conn: Connection, transfer_id: str) -> Any:
        return conn.execute(
            select(ledger_transfers).where(ledger_transfers.c.id == transfer_id)
        ).one_or_none()

    def _replay(self, new: Posting, row: Any) -> TransferResult:
        if not new.same_as(row):
            raise PostingConflict(new, row)
        return result_from_row(row, exists=True)

    def _validated(self, new: Posting) -> Posting:
        try:
            currency = check_currency(new.currency)
        except ValueError as exc:
            raise BankingError(ErrorCode.VALIDATION_ERROR, str(exc)) from None
        if isinstance(new.amount, bool) or not isinstance(new.amount, int) or new.amount <= 0:
            raise BankingError(
                ErrorCode.VALIDATION_ERROR, "the amount must be a positive integer of minor units"
            )
        if new.debit == new.credit:
            raise BankingError(ErrorCode.VALIDATION_ERROR, "debit and credit accounts are the same")
        if not new.id or len(new.id) > 255:
            raise BankingError(
                ErrorCode.VALIDATION_ERROR, "the idempotency key must be 1–255 characters"
            )
        return new if currency == new.currency else replace(new, currency=currency)

    def _create(self, conn: Connection, new: Posting) -> TransferResult:
        """Write ``new`` (posted or pending) after the checks; replays return the stored one."""
        existing = self._existing(conn, new.id)
        if existing is not None:
            return self._replay(new, existing)
        locked = self._lock(conn, [new.debit, new.credit])
        existing = self._existing(conn, new.id)  # a concurrent twin may have committed meanwhile
        if existing is not None:
            return self._replay(new, existing)
        debit, credit = self._open_accounts(locked, new)
        check_funds(debit, new.amount)
        if not self._insert_transfer(conn, new):
            return self._replay(new, self._existing(conn, new.id))
        posted = new.kind == POSTED
        self._move(conn, debit.id, "debits_posted" if posted else "debits_pending", new.amount)
        self._move(conn, credit.id, "credits_posted" if posted else "credits_pending", new.amount)
        record(conn, [posting_entry(new)], self.clock.now())
        ledger_log().info(
            "ledger.transfer",
            transfer_id=new.id,
            kind=new.kind,
            debit=mask_account(new.debit),
            credit=mask_account(new.credit),
            currency=new.currency,
        )
        return result_from_row(self._existing(conn, new.id), exists=False)

    def _resolve(
        self, conn: Connection, pending_id: str, key: str, kind: str, amount: int | None
    ) -> TransferResult:
        pending = self._existing(conn, pending_id)
        if pending is None:
            raise BankingError(ErrorCode.MISSING_DATA, f"no pending transfer {pending_id}")
        reserved = int(pending.amount)
        new = Posting(
            key,
            pending.debit_account_id,
            pending.credit_account_id,
            reserved if amount is None else amount,
            pending.currency,
            kind,
            pending_id=pending_id,
        )
        existing = self._existing(conn, key)
        if existing is not None:
            return self._replay(new, existing)
        if pending.kind != PENDING:
            raise BankingError(ErrorCode.VALIDATION_ERROR, f"transfer {pending_id} is not pending")
        self._lock(conn, [new.debit, new.credit])
        existing = self._existing(conn, key)
        if existing is not None:
            return self._replay(new, existing)
        resolved = conn.execute(
            select(ledger_transfers.c.id, ledger_transfers.c.kind).where(
                ledger_transfers.c.pending_id == pending_id
            )
        ).one_or_none()
        if resolved is not None:
            raise BankingError(
                ErrorCode.VALIDATION_ERROR,
                f"pending transfer {pending_id} was already {STATUS_OF_KIND[resolved.kind]} "
                f"by {resolved.id}",
            )
        now = self.clock.now()
        if kind != EXPIRE_PENDING and pending.expires_at is not None and pending.expires_at <= now:
            raise BankingError(
                ErrorCode.VALIDATION_ERROR, f"pending transfer {pending_id} has expired"
            )
        if kind == POST_PENDING and not 0 < new.amount <= reserved:
            raise BankingError(
                ErrorCode.VALIDATION_ERROR,
                f"a post of {pending_id} must be 1..{reserved} minor units",
            )
        if not self._insert_transfer(conn, new):
            existing = self._existing(conn, key)
            if existing is not None:
                return self._replay(new, existing)
            raise BankingError(
                ErrorCode.VALIDATION_ERROR, f"pending transfer {pending_id} was already resolved"
            )
        posted = new.amount if kind == POST_PENDING else 0
        self._move(conn, new.debit, "debits_pending", -reserved, also=("debits_posted", posted))
        self._move(conn, new.credit, "credits_pending", -reserved, also=("credits_posted", posted))
        record(conn, [posting_entry(new)], now)
        ledger_log().info(
            "ledger.pending_resolved", transfer_id=key, pending_id=pending_id, kind=kind
        )
        return result_from_row(self._existing(conn, key), exists=False)

    def _open_accounts(self, locked: dict[str, Any], new: Posting) -> tuple[Any, Any]:
        rows = []
        for account_id in (new.debit, new.credit):
            row = locked.get(account_id)
            if row is None:
                raise BankingError(ErrorCode.MISSING_DATA, f"no account {mask_account(account_id)}")
            if row.status != "open":
                raise BankingError(
                    ErrorCode.ACCOUNT_CLOSED, f"account {mask_account(account_id)} is closed"
                )
            if row.currency != new.currency:
                raise BankingError(
                    ErrorCode.VALIDATION_ERROR,
                    f"account {mask_account(account_id)} holds {row.currency}, not {new.currency}",
                )
            rows.append(row)
        return rows[0], rows[1]

    def _insert_transfer(self, conn: Connection, new: Posting) -> bool:
        """Insert the transfer row; ``False`` if its id (or its pending resolution) already exists."""
        inserted = conn.execute(
            self._insert(conn)(ledger_transfers)
            .values(
                id=new.id,
                debit_account_id=new.debit,
                credit_account_id=new.credit,
                amount=new.amount,
                currency=new.currency,
                kind=new.kind,
                pending_id=new.pending_id,
                reverses_id=new.reverses_id,
                expires_at=new.expires_at,
                reference=new.reference,
                created_at=self.clock.now(),
            )
            .on_conflict_do_nothing()
            .returning(ledger_transfers.c.id)
        ).scalar()
        return inserted is not None

    def _move(
        self,
        conn: Connection,
        account_id: str,
        column: str,
        delta: int,
        *,
        also: tuple[str, int] | None = None,
    ) -> None:
        values = {column: accounts.c[column] + delta}
        if also is not None and also[1]:
            values[also[0]] = accounts.c[also[0]] + also[1]
        conn.execute(update(accounts).where(accounts.c.id == account_id).values(values))
