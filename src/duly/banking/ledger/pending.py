"""Two-phase transfers: reserve, then post (full or partial), void or expire exactly once."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Connection, select

from duly.banking.errors import BankingError
from duly.banking.ledger.core import (
    EXPIRE_PENDING,
    PENDING,
    POST_PENDING,
    VOID_PENDING,
    LedgerCore,
    Posting,
)
from duly.banking.port import TransferResult
from duly.banking.schema import ledger_transfers


class LedgerPending(LedgerCore):
    """Pending transfers and how each ends."""

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
            Posting(idempotency_key, from_account, to_account, amount_minor, currency, PENDING,
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
