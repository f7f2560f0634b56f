"""The built-in ledger: TigerBeetle-style double entry in duly's own database.

Every account holds ``debits_posted``, ``credits_posted``, ``debits_pending`` and
``credits_pending`` (integer minor units). A transfer debits one account and credits
another by the same amount, so over all accounts Σ debits = Σ credits, posted and pending
alike (finance-rules.md §3).

* **Idempotency.** A transfer's id *is* its idempotency key (primary key). Replaying a
  key with the same fields returns the stored transfer (``exists``); with other fields it
  is refused with ``IDEMPOTENCY_CONFLICT``, nothing is posted and an alert is raised.
* **No overdraft beyond the limit, on every path** (transfer, reserve, reversal): a debit
  needs ``debits_posted + debits_pending + amount <= credits_posted + overdraft_limit``;
  a NULL limit (the bank's internal accounts) means no limit. A CHECK constraint on
  ``accounts`` holds the same line in the database.
* **Two-phase.** :meth:`LedgerBank.reserve` makes a pending transfer; it ends exactly once
  by :meth:`~LedgerBank.post_pending` (full or partial), :meth:`~LedgerBank.void_pending`
  or :meth:`~LedgerBank.expire_pending`, each a transfer whose unique ``pending_id`` names it.
* **Immutability.** Transfers are never updated or deleted; :meth:`~LedgerBank.reverse`
  corrects one with a new transfer the other way that references it.
* **Concurrency.** Account rows are locked ``FOR UPDATE`` in id order on PostgreSQL;
  on SQLite every write transaction is ``BEGIN IMMEDIATE`` (one writer).
* **Transactions.** Pass ``conn`` (a job's ``ctx.transaction()``) and the posting happens
  in a savepoint on it and commits with the run; without it each call is its own transaction.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog
from sqlalchemy import Connection, Engine, Text, any_, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from duly.banking.alerts import write_alert
from duly.banking.errors import BankingError, ErrorCode
from duly.banking.money import check_currency, mask_account
from duly.banking.port import Balance, BalanceReads, TransferRequest, TransferResult
from duly.banking.schema import accounts, ledger_transfers
from duly.clock import Clock
from duly.engine.store.base import NewAlert
from duly.engine.store.dialect import any_of, insert_rows, pg_execute

__all__ = ["LedgerBank", "LedgerCheck", "funding_account_id"]


def _log() -> Any:
    """The ledger's logger, looked up per call (a CLI run may close the stream of a cached one)."""
    return structlog.get_logger("duly.ledger")


T = TypeVar("T")

#: Account ids per query of :meth:`LedgerBank.get_balances`.
BALANCE_CHUNK = 1000

#: Kinds of ledger transfer (column ``kind``).
POSTED, PENDING = "posted", "pending"
POST_PENDING, VOID_PENDING, EXPIRE_PENDING = "post_pending", "void_pending", "expire_pending"
_STATUS_OF_KIND = {
    POSTED: "posted",
    PENDING: "pending",
    POST_PENDING: "posted",
    VOID_PENDING: "voided",
    EXPIRE_PENDING: "expired",
}


def funding_account_id(currency: str) -> str:
    """The bank's internal account that funds deposits in ``currency`` (no overdraft limit)."""
    return f"BANK-FUNDING-{check_currency(currency)}"


@dataclass(frozen=True, slots=True)
class _New:
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


class _Conflict(Exception):
    """Raised inside a posting when its key exists with other fields; turned into an alert."""

    def __init__(self, new: _New, row: Any) -> None:
        super().__init__(new.id)
        self.new = new
        self.row = row


@dataclass(frozen=True, slots=True)
class LedgerCheck:
    """The ledger's invariants, checked (``duly ledger check``)."""

    accounts: int
    transfers: int
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """Whether every invariant holds."""
        return not self.problems


class LedgerBank:
    """The :class:`~duly.banking.port.BankingPort` on duly's own database.

    :param engine: the database (the store's ``engine``).
    :param clock: where transfer timestamps and pending expiry come from.
    """

    name = "ledger"
    shares_transaction = True

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self._pg = engine.dialect.name == "postgresql"

    # -- plumbing -------------------------------------------------------------------

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
        except _Conflict as conflict:
            error = self._conflict_error(conflict)
            if conn is None:
                with self.engine.begin() as own:
                    self._alert_conflict(own, conflict, error)
            else:
                self._alert_conflict(conn, conflict, error)
            raise error from None

    def _conflict_error(self, conflict: _Conflict) -> BankingError:
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

    def _alert_conflict(self, conn: Connection, conflict: _Conflict, error: BankingError) -> None:
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

    def _replay(self, new: _New, row: Any) -> TransferResult:
        if not new.same_as(row):
            raise _Conflict(new, row)
        return _result(row, exists=True)

    # -- reading --------------------------------------------------------------------

    def get_balance(self, account_id: str, *, conn: Connection | None = None) -> Balance:
        """The account's posted balance (credits − debits), pending debits and overdraft limit.

        :raises BankingError: ``MISSING_DATA`` if there is no such account.
        """
        with contextlib.ExitStack() as stack:
            c = conn if conn is not None else stack.enter_context(self.engine.connect())
            row = c.execute(select(accounts).where(accounts.c.id == account_id)).one_or_none()
        if row is None:
            raise BankingError(ErrorCode.MISSING_DATA, f"no account {mask_account(account_id)}")
        return Balance(
            account_id=row.id,
            currency=row.currency,
            posted_minor=int(row.credits_posted) - int(row.debits_posted),
            pending_debits_minor=int(row.debits_pending),
            overdraft_limit_minor=None
            if row.overdraft_limit_minor is None
            else int(row.overdraft_limit_minor),
        )

    def get_balances(
        self, account_ids: Iterable[str], *, conn: Connection | None = None
    ) -> BalanceReads:
        """Balances of many accounts (each id once, in the order asked), one query per
        :data:`BALANCE_CHUNK` ids.

        An unknown id maps to ``MISSING_DATA`` (as :meth:`get_balance` would raise).
        """
        ids = list(dict.fromkeys(account_ids))
        found: dict[str, Balance] = {}
        cols = (
            accounts.c.id,
            accounts.c.currency,
            accounts.c.credits_posted,
            accounts.c.debits_posted,
            accounts.c.debits_pending,
            accounts.c.overdraft_limit_minor,
        )
        with contextlib.ExitStack() as stack:
            c = conn if conn is not None else stack.enter_context(self.engine.connect())
            for start in range(0, len(ids), BALANCE_CHUNK):
                chunk = ids[start : start + BALANCE_CHUNK]
                if c.dialect.name == "postgresql":  # one array parameter, not one per id
                    match = accounts.c.id == any_(bindparam("ids", chunk, type_=ARRAY(Text)))
                else:
                    match = accounts.c.id.in_(chunk)
                for row in c.execute(select(*cols).where(match)):
                    found[row.id] = Balance(
                        account_id=row.id,
                        currency=row.currency,
                        posted_minor=int(row.credits_posted) - int(row.debits_posted),
                        pending_debits_minor=int(row.debits_pending),
                        overdraft_limit_minor=None
                        if row.overdraft_limit_minor is None
                        else int(row.overdraft_limit_minor),
                    )
        return {  # in the order asked
            account_id: found.get(account_id)
            or BankingError(ErrorCode.MISSING_DATA, f"no account {mask_account(account_id)}")
            for account_id in ids
        }

    def get_transfer(
        self, idempotency_key: str, *, conn: Connection | None = None
    ) -> TransferResult | None:
        """The transfer whose id is ``idempotency_key``, if any."""
        with contextlib.ExitStack() as stack:
            c = conn if conn is not None else stack.enter_context(self.engine.connect())
            row = self._existing(c, idempotency_key)
        return _result(row, exists=True) if row is not None else None

    # -- single-phase ---------------------------------------------------------------

    def transfer(
        self,
        from_account: str,
        to_account: str,
        amount_minor: int,
        currency: str,
        idempotency_key: str,
        *,
        conn: Connection | None = None,
        reference: str | None = None,
    ) -> TransferResult:
        """Post ``amount_minor`` from ``from_account`` to ``to_account`` once per key.

        :raises BankingError: ``INSUFFICIENT_FUNDS``, ``ACCOUNT_CLOSED``, ``MISSING_DATA``
            (unknown account), ``VALIDATION_ERROR`` (amount, currency, same account) or
            ``IDEMPOTENCY_CONFLICT``.
        """
        new = self._validated(
            _New(idempotency_key, from_account, to_account, amount_minor, currency, POSTED,
                 reference=reference)
        )  # fmt: skip
        return self._run(conn, lambda c: self._create(c, new))

    def transfer_many(
        self, requests: Sequence[TransferRequest], *, conn: Connection
    ) -> list[TransferResult | BankingError]:
        """Post many transfers at once on ``conn``: the set-based :meth:`transfer`.

        One result per request, in order: the transfer (``exists=True`` for a replay) or the
        :class:`BankingError` that :meth:`transfer` would have raised; a failed request
        writes nothing. The accounts of all requests are locked in one statement (in id
        order, as :meth:`transfer` does, so the two never deadlock), funds are checked in
        request order against the balances as the earlier requests leave them, and the
        transfers and balance changes are written with one statement each. Runs in a
        savepoint: if writing fails, nothing of the batch is kept.
        """
        out: list[TransferResult | BankingError | None] = [None] * len(requests)
        news: list[tuple[int, _New]] = []
        for i, r in enumerate(requests):
            try:
                news.append((i, self._validated(
                    _New(r.idempotency_key, r.from_account, r.to_account, r.amount_minor,
                         r.currency, POSTED)
                )))  # fmt: skip
            except BankingError as exc:
                out[i] = exc
        if news:
            with conn.begin_nested():
                self._post_many(conn, news, out)
        return [r if r is not None else _internal("no outcome") for r in out]

    def _post_many(
        self,
        conn: Connection,
        news: list[tuple[int, _New]],
        out: list[TransferResult | BankingError | None],
    ) -> None:
        locked = self._lock(conn, [a for _, new in news for a in (new.debit, new.credit)])
        # read after the locks: a twin committed meanwhile is seen, not inserted again
        keys = sorted({new.id for _, new in news})
        pg = conn.dialect.name == "postgresql"
        existing = {
            row.id: row
            for row in conn.execute(
                select(ledger_transfers).where(any_of(ledger_transfers.c.id, keys, postgres=pg))
            )
        }
        now = self.clock.now()
        moved: dict[str, list[int]] = {}  # account -> [debits_posted, credits_posted] added
        rows: list[dict[str, Any]] = []
        made: dict[str, _New] = {}
        for i, new in news:
            try:
                out[i] = self._post_one(new, locked, existing, made, moved)
            except _Conflict as conflict:
                error = self._conflict_error(conflict)
                self._alert_conflict(conn, conflict, error)
                out[i] = error
                continue
            except BankingError as exc:
                out[i] = exc
                continue
            if new.id in made and made[new.id] is new:
                rows.append(_transfer_values(new, now))
        if not rows:
            return
        insert_rows(conn, ledger_transfers, rows)
        changes = sorted(moved.items())
        if pg:  # one statement over arrays rather than one per account
            pg_execute(
                conn,
                _PG_ADD_POSTED,
                {
                    "ids": [a for a, _ in changes],
                    "debits": [d for _, (d, _c) in changes],
                    "credits": [c for _, (_d, c) in changes],
                },
            )
        else:
            conn.execute(
                update(accounts)
                .where(accounts.c.id == bindparam("account"))
                .values(
                    debits_posted=accounts.c.debits_posted + bindparam("debits"),
                    credits_posted=accounts.c.credits_posted + bindparam("credits"),
                ),
                [{"account": a, "debits": d, "credits": c} for a, (d, c) in changes],
            )
        _log().info("ledger.transfers", posted=len(rows), accounts=len(moved))
        for i, _new in news:
            result = out[i]
            if isinstance(result, TransferResult) and not result.exists:
                out[i] = replace(result, created_at=now)

    def _post_one(
        self,
        new: _New,
        locked: dict[str, Any],
        existing: dict[str, Any],
        made: dict[str, _New],
        moved: dict[str, list[int]],
    ) -> TransferResult:
        """Decide one request of :meth:`transfer_many` against the locked rows and the batch so far."""
        if new.id in existing:
            return self._replay(new, existing[new.id])
        if new.id in made:  # the same key twice in one batch: the second is a replay
            first = made[new.id]
            if new != first:
                raise BankingError(
                    ErrorCode.IDEMPOTENCY_CONFLICT,
                    f"transfer {new.id} appears twice in one batch with different fields",
                )
            return _result_of(first, exists=True)
        debit, credit = self._open_accounts(locked, new)
        already = moved.get(debit.id, [0, 0])
        _check_funds(debit, new.amount + already[0] - already[1])
        moved.setdefault(debit.id, [0, 0])[0] += new.amount
        moved.setdefault(credit.id, [0, 0])[1] += new.amount
        made[new.id] = new
        return _result_of(new, exists=False)

    def fund(
        self,
        account_id: str,
        amount_minor: int,
        currency: str,
        idempotency_key: str,
        *,
        conn: Connection | None = None,
    ) -> TransferResult:
        """Credit ``account_id`` from the bank's funding account in ``currency`` (deposits, demos, tests)."""
        funding = funding_account_id(currency)

        def work(c: Connection) -> TransferResult:
            c.execute(
                self._insert(c)(accounts)
                .values(
                    id=funding,
                    currency=check_currency(currency),
                    overdraft_limit_minor=None,
                    created_at=self.clock.now(),
                )
                .on_conflict_do_nothing()
            )
            new = self._validated(
                _New(idempotency_key, funding, account_id, amount_minor, currency)
            )
            return self._create(c, new)

        return self._run(conn, work)

    # -- two-phase ------------------------------------------------------------------

    def reserve(
        self,
        from_account: str,
        to_account: str,
        amount_minor: int,
        currency: str,
        idempotency_key: str,
        *,
        timeout: timedelta | None = None,
        conn: Connection | None = None,
    ) -> TransferResult:
        """Reserve ``amount_minor`` as a pending transfer; it ends by post, void or expiry."""
        expires = self.clock.now() + timeout if timeout is not None else None
        new = self._validated(
            _New(idempotency_key, from_account, to_account, amount_minor, currency, PENDING,
                 expires_at=expires)
        )  # fmt: skip
        return self._run(conn, lambda c: self._create(c, new))

    def post_pending(
        self,
        pending_id: str,
        idempotency_key: str,
        amount_minor: int | None = None,
        *,
        conn: Connection | None = None,
    ) -> TransferResult:
        """Post a pending transfer, in full or for less (the rest is released).

        :raises BankingError: ``VALIDATION_ERROR`` if it is not pending, already resolved,
            expired, or ``amount_minor`` is not in 1..reserved; ``IDEMPOTENCY_CONFLICT``.
        """
        return self._run(
            conn,
            lambda c: self._resolve(c, pending_id, idempotency_key, POST_PENDING, amount_minor),
        )

    def void_pending(
        self, pending_id: str, idempotency_key: str, *, conn: Connection | None = None
    ) -> TransferResult:
        """Release a pending transfer's reservation."""
        return self._run(
            conn, lambda c: self._resolve(c, pending_id, idempotency_key, VOID_PENDING, None)
        )

    def expire_pending(self, limit: int = 1000) -> int:
        """Resolve pending transfers past their timeout as expired; return how many."""
        now = self.clock.now()
        resolution = ledger_transfers.alias("resolution")
        with self.engine.begin() as conn:
            due = (
                conn.execute(
                    select(ledger_transfers.c.id)
                    .outerjoin(resolution, resolution.c.pending_id == ledger_transfers.c.id)
                    .where(
                        ledger_transfers.c.kind == PENDING,
                        ledger_transfers.c.expires_at <= now,
                        resolution.c.id.is_(None),
                    )
                    .order_by(ledger_transfers.c.expires_at)
                    .limit(limit)
                )
                .scalars()
                .all()
            )
            expired = 0
            for pending_id in due:
                try:
                    with conn.begin_nested():
                        self._resolve(
                            conn, pending_id, f"{pending_id}:expired", EXPIRE_PENDING, None
                        )
                    expired += 1
                except BankingError:  # resolved meanwhile by a post or void
                    continue
        return expired

    # -- corrections ----------------------------------------------------------------

    def reverse(
        self,
        original_id: str,
        idempotency_key: str,
        amount_minor: int | None = None,
        *,
        conn: Connection | None = None,
    ) -> TransferResult:
        """Correct a posted transfer with a new one the other way that references it.

        The original stays as it was. Reversals of one transfer never add up to more than it.

        :raises BankingError: ``MISSING_DATA`` for an unknown original, ``VALIDATION_ERROR``
            if it is not a posting or is already fully reversed, ``INSUFFICIENT_FUNDS`` if
            the account to debit back lacks the funds.
        """

        def work(c: Connection) -> TransferResult:
            original = self._existing(c, original_id)
            if original is None:
                raise BankingError(ErrorCode.MISSING_DATA, f"no transfer {original_id}")
            if original.kind not in (POSTED, POST_PENDING):
                raise BankingError(
                    ErrorCode.VALIDATION_ERROR,
                    f"transfer {original_id} is {original.kind}; only postings can be reversed",
                )
            reversed_so_far = int(
                c.execute(
                    select(func.coalesce(func.sum(ledger_transfers.c.amount), 0)).where(
                        ledger_transfers.c.reverses_id == original_id,
                        ledger_transfers.c.id != idempotency_key,
                    )
                ).scalar_one()
            )
            remaining = int(original.amount) - reversed_so_far
            amount = remaining if amount_minor is None else amount_minor
            existing = self._existing(c, idempotency_key)
            new = _New(
                idempotency_key,
                original.credit_account_id,
                original.debit_account_id,
                amount if existing is None or amount_minor is not None else int(existing.amount),
                original.currency,
                POSTED,
                reverses_id=original_id,
            )
            if existing is not None:
                return self._replay(new, existing)
            if not 0 < amount <= remaining:
                raise BankingError(
                    ErrorCode.VALIDATION_ERROR,
                    f"transfer {original_id} has {remaining} minor units left to reverse",
                )
            return self._create(c, self._validated(new))

        return self._run(conn, work)

    # -- core -----------------------------------------------------------------------

    def _validated(self, new: _New) -> _New:
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

    def _create(self, conn: Connection, new: _New) -> TransferResult:
        """Write ``new`` (posted or pending) after the checks; replays return the stored one."""
        existing = self._existing(conn, new.id)
        if existing is not None:
            return self._replay(new, existing)
        locked = self._lock(conn, [new.debit, new.credit])
        existing = self._existing(conn, new.id)  # a concurrent twin may have committed meanwhile
        if existing is not None:
            return self._replay(new, existing)
        debit, credit = self._open_accounts(locked, new)
        _check_funds(debit, new.amount)
        if not self._insert_transfer(conn, new):
            return self._replay(new, self._existing(conn, new.id))
        posted = new.kind == POSTED
        self._move(conn, debit.id, "debits_posted" if posted else "debits_pending", new.amount)
        self._move(conn, credit.id, "credits_posted" if posted else "credits_pending", new.amount)
        _log().info(
            "ledger.transfer",
            transfer_id=new.id,
            kind=new.kind,
            debit=mask_account(new.debit),
            credit=mask_account(new.credit),
            currency=new.currency,
        )
        return _result(self._existing(conn, new.id), exists=False)

    def _resolve(
        self, conn: Connection, pending_id: str, key: str, kind: str, amount: int | None
    ) -> TransferResult:
        pending = self._existing(conn, pending_id)
        if pending is None:
            raise BankingError(ErrorCode.MISSING_DATA, f"no pending transfer {pending_id}")
        reserved = int(pending.amount)
        new = _New(
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
                f"pending transfer {pending_id} was already {_STATUS_OF_KIND[resolved.kind]} "
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
        _log().info("ledger.pending_resolved", transfer_id=key, pending_id=pending_id, kind=kind)
        return _result(self._existing(conn, key), exists=False)

    def _open_accounts(self, locked: dict[str, Any], new: _New) -> tuple[Any, Any]:
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

    def _insert_transfer(self, conn: Connection, new: _New) -> bool:
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

    # -- invariants -----------------------------------------------------------------

    def check(self) -> LedgerCheck:
        """Check every invariant of finance-rules.md §3 against the stored rows.

        Σ debits = Σ credits (posted and pending); no limited account beyond its overdraft;
        each account's balances equal the sums of its transfers; no pending transfer
        resolved twice; no transfer reversed beyond its amount.
        """
        problems: list[str] = []
        with self.engine.connect() as conn:
            rows = conn.execute(select(accounts)).all()
            transfers = conn.execute(select(ledger_transfers)).all()
        sums = {
            key: sum(int(getattr(r, key)) for r in rows)
            for key in ("debits_posted", "credits_posted", "debits_pending", "credits_pending")
        }
        if sums["debits_posted"] != sums["credits_posted"]:
            problems.append(
                f"Σ debits_posted {sums['debits_posted']} ≠ Σ credits_posted {sums['credits_posted']}"
            )
        if sums["debits_pending"] != sums["credits_pending"]:
            problems.append(
                f"Σ debits_pending {sums['debits_pending']} ≠ Σ credits_pending {sums['credits_pending']}"
            )
        expected = _balances_from_transfers(list(transfers))
        for r in rows:
            limit = r.overdraft_limit_minor
            if limit is not None and r.debits_posted + r.debits_pending > r.credits_posted + limit:
                problems.append(f"account {mask_account(r.id)} is beyond its overdraft limit")
            want = expected.get(r.id, (0, 0, 0, 0))
            have = (r.debits_posted, r.credits_posted, r.debits_pending, r.credits_pending)
            if tuple(int(v) for v in have) != want:
                problems.append(f"account {mask_account(r.id)}: balances differ from its transfers")
        resolutions: dict[str, int] = {}
        reversed_total: dict[str, int] = {}
        amounts = {t.id: int(t.amount) for t in transfers}
        for t in transfers:
            if t.pending_id is not None:
                resolutions[t.pending_id] = resolutions.get(t.pending_id, 0) + 1
            if t.reverses_id is not None:
                reversed_total[t.reverses_id] = reversed_total.get(t.reverses_id, 0) + int(t.amount)
        problems += [
            f"pending transfer {p} resolved {n} times" for p, n in resolutions.items() if n > 1
        ]
        problems += [
            f"transfer {t} reversed beyond its amount"
            for t, total in reversed_total.items()
            if total > amounts.get(t, 0)
        ]
        return LedgerCheck(
            accounts=len(rows),
            transfers=len(transfers),
            debits_posted=sums["debits_posted"],
            credits_posted=sums["credits_posted"],
            debits_pending=sums["debits_pending"],
            credits_pending=sums["credits_pending"],
            problems=tuple(problems),
        )


_PG_ADD_POSTED = (
    "UPDATE accounts AS a SET debits_posted = a.debits_posted + v.debits,"
    " credits_posted = a.credits_posted + v.credits"
    " FROM unnest(CAST(:ids AS text[]), CAST(:debits AS bigint[]), CAST(:credits AS bigint[]))"
    " AS v(id, debits, credits) WHERE a.id = v.id"
)


def _transfer_values(new: _New, now: datetime) -> dict[str, Any]:
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


def _result_of(new: _New, *, exists: bool) -> TransferResult:
    return TransferResult(
        id=new.id,
        debit_account_id=new.debit,
        credit_account_id=new.credit,
        amount_minor=new.amount,
        currency=new.currency,
        status=_STATUS_OF_KIND[new.kind],
        created_at=None,
        exists=exists,
    )


def _internal(message: str) -> BankingError:
    return BankingError("INTERNAL", message)


def _check_funds(debit: Any, amount: int) -> None:
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


def _balances_from_transfers(transfers: list[Any]) -> dict[str, tuple[int, int, int, int]]:
    """(debits_posted, credits_posted, debits_pending, credits_pending) per account, recomputed."""
    resolved = {t.pending_id for t in transfers if t.pending_id is not None}
    out: dict[str, list[int]] = {}
    for t in transfers:
        amount = int(t.amount)
        debit = out.setdefault(t.debit_account_id, [0, 0, 0, 0])
        credit = out.setdefault(t.credit_account_id, [0, 0, 0, 0])
        if t.kind in (POSTED, POST_PENDING):
            debit[0] += amount
            credit[1] += amount
        elif t.kind == PENDING and t.id not in resolved:
            debit[2] += amount
            credit[3] += amount
    return {k: (v[0], v[1], v[2], v[3]) for k, v in out.items()}


def _result(row: Any, *, exists: bool) -> TransferResult:
    return TransferResult(
        id=row.id,
        debit_account_id=row.debit_account_id,
        credit_account_id=row.credit_account_id,
        amount_minor=int(row.amount),
        currency=row.currency,
        status=_STATUS_OF_KIND[row.kind],
        created_at=row.created_at,
        exists=exists,
    )
