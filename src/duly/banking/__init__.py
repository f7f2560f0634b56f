"""The core-banking port and its implementations: the built-in ledger, HTTP, the simulator.

::

    from duly.banking import BankingError, LedgerBank, HttpBank
"""

from __future__ import annotations

from duly.banking.errors import BankingError, ErrorCode, is_transient, to_job_error
from duly.banking.http import HttpBank
from duly.banking.ledger import LedgerBank, LedgerCheck
from duly.banking.money import format_money, from_minor, mask_account, to_minor
from duly.banking.port import Balance, BankingPort, TransferResult

__all__ = [
    "Balance",
    "BankingError",
    "BankingPort",
    "ErrorCode",
    "HttpBank",
    "LedgerBank",
    "LedgerCheck",
    "TransferResult",
    "format_money",
    "from_minor",
    "is_transient",
    "mask_account",
    "to_job_error",
    "to_minor",
]
