"""Corrections: a transfer is never changed; a reversal moves the money back and names it."""

from __future__ import annotations

from sqlalchemy import Connection, func, select

from duly.banking.errors import BankingError, ErrorCode
from duly.banking.ledger.core import POST_PENDING, POSTED, LedgerCore, Posting
from duly.banking.port import TransferResult
from duly.banking.schema import ledger_transfers


class LedgerReversals(LedgerCore):
    """Reversals."""

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
            new = Posting(
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
