"""The core-banking HTTP protocol spoken by :class:`~duly.banking.http.HttpBank` and ``duly bank-sim``.

All bodies are JSON; amounts are decimal *strings* in the currency's major unit
(``"12.34"``), never JSON numbers, so no float ever carries money.

=========================================  ==================================================
``GET /v1/accounts/{id}/balance``          200 ``{account_id, currency, posted, pending_debits,
                                           overdraft_limit}`` (``overdraft_limit`` null: none
                                           applies); 404 unknown account
``POST /v1/transfers``                     header ``Idempotency-Key`` (required); body
                                           ``{from_account, to_account, amount, currency}``;
                                           201 created, 200 replay of the same key and fields,
                                           409 same key with other fields, 422 refused
                                           (``INSUFFICIENT_FUNDS``, ``ACCOUNT_CLOSED``, …)
``GET /v1/transfers/{id}``                 200 the transfer, 404 none
``POST /v1/balances:batch``                body ``{account_ids: [...]}`` (1 to
                                           :data:`MAX_BATCH_BALANCES` ids); 200
                                           ``{balances: [...]}``, one entry per id: a balance
                                           body as above, or ``{account_id, error: {code,
                                           message}}`` for that account alone (``MISSING_DATA``
                                           unknown account, ``TIMEOUT``/``API_ERROR`` its read
                                           failed inside the bank); 400 bad body
``POST /v1/transfers:batch``               body ``{transfers: [{idempotency_key,
                                           from_account, to_account, amount, currency},
                                           ...]}`` (1 to :data:`MAX_BATCH_TRANSFERS`, keys
                                           distinct); 200 ``{transfers: [...]}``, one entry
                                           per request in order: a transfer body with
                                           ``replayed`` (true: the key was already applied
                                           with the same fields), or ``{idempotency_key,
                                           error: {code, message}}`` for that transfer alone
                                           (what its single ``POST`` would have refused, or
                                           ``TIMEOUT``/``API_ERROR``: its processing failed
                                           inside the bank; try it again with its key);
                                           400 bad body. Each transfer is applied at most
                                           once per key, exactly as by ``POST /v1/transfers``
=========================================  ==================================================

A transfer body is ``{id, debit_account_id, credit_account_id, amount, currency, status,
created_at}``. An error body is ``{"error": {"code": ..., "message": ...}}`` with a code
of :class:`~duly.banking.errors.ErrorCode`. Requests carry ``Authorization: Bearer <token>``
when the bank needs one. A refused transfer is not recorded under its key: the same key
may be tried again once the cause is fixed (as TigerBeetle does, unlike Stripe).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

__all__ = [
    "BALANCES_BATCH_PATH",
    "IDEMPOTENCY_HEADER",
    "MAX_BATCH_BALANCES",
    "MAX_BATCH_TRANSFERS",
    "TRANSFERS_BATCH_PATH",
    "TRANSFERS_PATH",
    "balance_path",
    "error_body",
    "transfer_path",
]

IDEMPOTENCY_HEADER = "Idempotency-Key"
TRANSFERS_PATH = "/v1/transfers"
#: Many balances in one request (a bank without it answers 404/405/501: read one by one).
BALANCES_BATCH_PATH = "/v1/balances:batch"
#: The most account ids one batch request may carry.
MAX_BATCH_BALANCES = 1000
#: Many transfers in one request, each with its own idempotency key (a bulk payment file);
#: a bank without it answers 404/405/501: post them one by one.
TRANSFERS_BATCH_PATH = "/v1/transfers:batch"
#: The most transfers one batch request may carry.
MAX_BATCH_TRANSFERS = 500


def balance_path(account_id: str) -> str:
    """The balance URL path of ``account_id``."""
    return f"/v1/accounts/{quote(account_id, safe='')}/balance"


def transfer_path(transfer_id: str) -> str:
    """The URL path of the transfer ``transfer_id``."""
    return f"{TRANSFERS_PATH}/{quote(transfer_id, safe='')}"


def error_body(code: str, message: str) -> dict[str, Any]:
    """An error response body."""
    return {"error": {"code": code, "message": message}}
