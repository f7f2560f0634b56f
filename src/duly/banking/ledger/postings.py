"""Single-phase transfers: one, many in one transaction, and funding from the bank's own account."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from duly.audit import record
from duly.banking.errors import BankingError, ErrorCode
from duly.banking.ledger.core import (
    PG_ADD_POSTED,
    POSTED,
    LedgerCore,
    Posting,
    PostingConflict,
    check_funds,
    funding_account_id,
    internal_error,
    ledger_log,
    posting_entry,
    result_of,
    transfer_values,
)
from duly.banking.money import check_currency
from duly.banking.port import TransferRequest, TransferResult
from duly.banking.schema import accounts, ledger_transfers
from duly.engine.store.dialect import any_of, insert_rows, pg_execute


class LedgerPostings(LedgerCore):
    """Transfers posted at once."""

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
            Posting(idempotency_key, from_account, to_account, amount_minor, currency, POSTED,
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
        news: list[tuple[int, Posting]] = []
        for i, r in enumerate(requests):
            try:
                news.append((i, self._validated(
                    Posting(r.idempotency_key, r.from_account, r.to_account, r.amount_minor,
                         r.currency, POSTED)
                )))  # fmt: skip
            except BankingError as exc:
                out[i] = exc
        if news:
            with conn.begin_nested():
                self._post_many(conn, news, out)
        return [r if r is not None else internal_error("no outcome") for r in out]

    def _post_many(
        self,
        conn: Connection,
        news: list[tuple[int, Posting]],
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
        made: dict[str, Posting] = {}
        for i, new in news:
            try:
                out[i] = self._post_one(new, locked, existing, made, moved)
            except PostingConflict as conflict:
                error = self._conflict_error(conflict)
                self._alert_conflict(conn, conflict, error)
                out[i] = error
                continue
            except BankingError as exc:
                out[i] = exc
                continue
            if new.id in made and made[new.id] is new:
                rows.append(transfer_values(new, now))
        if not rows:
            return
        insert_rows(conn, ledger_transfers, rows)
        changes = sorted(moved.items())
        if pg:  # one statement over arrays rather than one per account
            pg_execute(
                conn,
                PG_ADD_POSTED,
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
        record(conn, [posting_entry(new) for new in made.values()], now)
        ledger_log().info("ledger.transfers", posted=len(rows), accounts=len(moved))
        for i, _new in news:
            result = out[i]
            if isinstance(result, TransferResult) and not result.exists:
                out[i] = replace(result, created_at=now)

    def _post_one(
        self,
        new: Posting,
        locked: dict[str, Any],
        existing: dict[str, Any],
        made: dict[str, Posting],
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
            return result_of(first, exists=True)
        debit, credit = self._open_accounts(locked, new)
        already = moved.get(debit.id, [0, 0])
        check_funds(debit, new.amount + already[0] - already[1])
        moved.setdefault(debit.id, [0, 0])[0] += new.amount
        moved.setdefault(credit.id, [0, 0])[1] += new.amount
        made[new.id] = new
        return result_of(new, exists=False)

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
                Posting(idempotency_key, funding, account_id, amount_minor, currency)
            )
            return self._create(c, new)

        return self._run(conn, work)
