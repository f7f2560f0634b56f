"""Reading the ledger: balances (one or many accounts) and transfers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from sqlalchemy import Connection, Text, any_, bindparam, select
from sqlalchemy.dialects.postgresql import ARRAY

from duly.banking.errors import BankingError, ErrorCode
from duly.banking.ledger.core import LedgerCore, result_from_row
from duly.banking.money import mask_account
from duly.banking.port import Balance, BalanceReads, TransferResult
from duly.banking.schema import accounts

#: Account ids per query of :meth:`LedgerBank.get_balances`.
BALANCE_CHUNK = 1000


class LedgerReads(LedgerCore):
    """Balances and transfers as stored."""

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
        return result_from_row(row, exists=True) if row is not None else None
