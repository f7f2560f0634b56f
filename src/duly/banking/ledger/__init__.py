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

from duly.banking.ledger.core import LedgerCore, funding_account_id
from duly.banking.ledger.invariants import LedgerCheck, LedgerInvariants
from duly.banking.ledger.pending import LedgerPending
from duly.banking.ledger.postings import LedgerPostings
from duly.banking.ledger.reads import LedgerReads
from duly.banking.ledger.reversals import LedgerReversals

__all__ = ["LedgerBank", "LedgerCheck", "funding_account_id"]


class LedgerBank(
    LedgerReads, LedgerPostings, LedgerPending, LedgerReversals, LedgerInvariants, LedgerCore
):
    """The :class:`~duly.banking.port.BankingPort` on duly's own database.

    :param engine: the database (the store's ``engine``).
    :param clock: where transfer timestamps and pending expiry come from.
    """

    name = "ledger"
    shares_transaction = True
