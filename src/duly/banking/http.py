"""The ``http`` bank: a core-banking REST API (see :mod:`duly.banking.wire`) over httpx.

Every failure becomes a :class:`~duly.banking.errors.BankingError`:

==========================================  ====================  =========
what happened                               code                  transient
==========================================  ====================  =========
no answer within the timeout                ``TIMEOUT``           yes
connection refused/reset, DNS, protocol     ``NETWORK_ERROR``     yes
5xx or 429                                  ``API_ERROR``         yes
401/403, other unexpected 4xx               ``API_ERROR``         no
body not JSON, or a value of the wrong type ``INVALID_RESPONSE``  yes
404, or a required field absent             ``MISSING_DATA``      no
balance ``null``                            ``NULL_BALANCE``      no
balance below the overdraft limit           ``NEGATIVE_BALANCE``  no
409                                         ``IDEMPOTENCY_CONFLICT`` no
422 with a taxonomy code                    that code             its class
==========================================  ====================  =========

Each transfer carries the ``Idempotency-Key`` header; retrying a transfer whose answer was
lost (timeout, malformed body) with the same key returns the recorded transfer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

from duly.banking.errors import BankingError, ErrorCode
from duly.banking.money import MoneyError, check_currency, from_minor, mask_account, to_minor
from duly.banking.port import (
    Balance,
    BalanceReads,
    TransferRequest,
    TransferResult,
    balances_one_by_one,
)
from duly.banking.wire import (
    BALANCES_BATCH_PATH,
    IDEMPOTENCY_HEADER,
    MAX_BATCH_BALANCES,
    MAX_BATCH_TRANSFERS,
    TRANSFERS_BATCH_PATH,
    TRANSFERS_PATH,
    balance_path,
    transfer_path,
)

__all__ = ["HttpBank"]

DEFAULT_TIMEOUT = 30.0
_KNOWN = {c.value for c in ErrorCode}
#: Codes about the call itself: on a 4xx they mean the request is refused for good.
_TRANSPORT_CODES = {"TIMEOUT", "NETWORK_ERROR", "API_ERROR", "INVALID_RESPONSE"}
#: Answers of a bank without the batch endpoint.
_NO_BATCH = frozenset({404, 405, 501})


class HttpBank:
    """A :class:`~duly.banking.port.BankingPort` over a core-banking REST API.

    :param base_url: e.g. ``https://core.bank.internal``.
    :param token: sent as ``Authorization: Bearer <token>`` if given.
    :param timeout: seconds per call (connect, read, write and pool wait), default 30.
    :param max_connections: size of the connection pool (kept alive between calls).
    :param transport: an httpx transport (tests).
    """

    shares_transaction = False

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = 20,
        name: str = "http",
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.name = name
        headers = {"Accept": "application/json", "User-Agent": "duly"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(
            base_url=base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            transport=transport,
        )
        self._batch = True  # until the bank shows it has no batch endpoint
        self._batch_transfers = True  # likewise for transfers
        self._max_connections = max_connections
        self._one_by_one: ThreadPoolExecutor | None = None

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()
        if self._one_by_one is not None:
            self._one_by_one.shutdown(wait=False)

    def __enter__(self) -> HttpBank:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- the port -------------------------------------------------------------------

    def get_balance(self, account_id: str) -> Balance:
        """The account's balance.

        :raises BankingError: see the module's table.
        """
        return _balance(self._call("GET", balance_path(account_id)), account_id)

    def get_balances(self, account_ids: Iterable[str]) -> BalanceReads:
        """Many balances, one ``POST /v1/balances:batch`` per :data:`MAX_BATCH_BALANCES` ids.

        Each entry of the answer is mapped as :meth:`get_balance` maps a single answer; a
        failed request (timeout, 5xx, not JSON, …) maps every id of its chunk to that error;
        an id the answer leaves out is ``INVALID_RESPONSE``. A bank without the endpoint
        (404, 405 or 501) is read one request per account from then on.
        """
        ids = list(dict.fromkeys(account_ids))
        out: BalanceReads = {}
        for start in range(0, len(ids), MAX_BATCH_BALANCES):
            chunk = ids[start : start + MAX_BATCH_BALANCES]
            if not self._batch:
                out.update(balances_one_by_one(self, chunk))
                continue
            try:
                response = self._send(
                    "POST", BALANCES_BATCH_PATH, json={"account_ids": chunk}, allow=_NO_BATCH
                )
                if response.status_code in _NO_BATCH:
                    self._batch = False
                    out.update(balances_one_by_one(self, chunk))
                    continue
                entries = self._body(response).get("balances")
                if not isinstance(entries, list):
                    raise BankingError(
                        ErrorCode.INVALID_RESPONSE, "the batch answer has no 'balances' list"
                    )
            except BankingError as exc:
                out.update(dict.fromkeys(chunk, exc))
                continue
            wanted = set(chunk)
            for entry in entries:
                account_id = entry.get("account_id") if isinstance(entry, dict) else None
                if account_id not in wanted or account_id in out:
                    continue  # not asked for, or twice: the first answer counts
                try:
                    out[account_id] = _balance_entry(entry, account_id)
                except BankingError as exc:
                    out[account_id] = exc
            for account_id in chunk:
                if account_id not in out:
                    out[account_id] = BankingError(
                        ErrorCode.INVALID_RESPONSE,
                        f"the batch answer left out {mask_account(account_id)}",
                    )
        return {account_id: out[account_id] for account_id in ids}  # in the order asked

    def transfer(
        self,
        from_account: str,
        to_account: str,
        amount_minor: int,
        currency: str,
        idempotency_key: str,
        *,
        conn: Any = None,
    ) -> TransferResult:
        """Post a transfer with ``Idempotency-Key: idempotency_key`` (``conn`` is ignored)."""
        request = TransferRequest(from_account, to_account, amount_minor, currency, idempotency_key)
        payload = _transfer_payload(request)
        del payload["idempotency_key"]  # it goes in the header
        response = self._send(
            "POST", TRANSFERS_PATH, json=payload, headers={IDEMPOTENCY_HEADER: idempotency_key}
        )
        body = self._body(response)
        result = _transfer(body, exists=response.status_code == 200)
        if result.id != idempotency_key:
            raise BankingError(
                ErrorCode.INVALID_RESPONSE, "the bank answered with another transfer's id"
            )
        return result

    def transfer_many(
        self, requests: Sequence[TransferRequest], *, conn: Any = None
    ) -> list[TransferResult | BankingError]:
        """Post several transfers, one ``POST /v1/transfers:batch`` per
        :data:`MAX_BATCH_TRANSFERS` (``conn`` is ignored).

        One outcome per request, in order: the transfer as :meth:`transfer` returns it, or
        the :class:`BankingError` its single call would have raised. A failed request
        (timeout, 5xx, not JSON) gives every transfer of its chunk that error: each is
        then tried again with its own key, which applies it at most once. A bank without
        the endpoint (404, 405 or 501) gets one request per transfer from then on, as many
        at once as the connection pool holds.
        """
        out: list[TransferResult | BankingError] = []
        for start in range(0, len(requests), MAX_BATCH_TRANSFERS):
            chunk = requests[start : start + MAX_BATCH_TRANSFERS]
            got = self._transfer_chunk(chunk) if self._batch_transfers else None
            out.extend(got if got is not None else self._transfers_one_by_one(chunk))
        return out

    def _transfer_chunk(
        self, chunk: Sequence[TransferRequest]
    ) -> list[TransferResult | BankingError] | None:
        """One batch request's outcomes, or ``None`` if the bank has no batch endpoint.

        A transfer the bank could not be asked for (an unknown currency) gets its own
        ``VALIDATION_ERROR``; the others are posted.
        """
        refused: dict[str, BankingError] = {}
        bodies = []
        for request in chunk:
            try:
                bodies.append(_transfer_payload(request))
            except BankingError as exc:
                refused[request.idempotency_key] = exc
        if not bodies:
            return [refused[r.idempotency_key] for r in chunk]
        try:
            response = self._send(
                "POST", TRANSFERS_BATCH_PATH, json={"transfers": bodies}, allow=_NO_BATCH
            )
            if response.status_code in _NO_BATCH:
                self._batch_transfers = False
                return None
            entries = self._body(response).get("transfers")
            if not isinstance(entries, list):
                raise BankingError(
                    ErrorCode.INVALID_RESPONSE, "the batch answer has no 'transfers' list"
                )
        except BankingError as exc:
            return [refused.get(r.idempotency_key, exc) for r in chunk]
        by_key: dict[str, TransferResult | BankingError] = dict(refused)
        for entry in entries:
            key = _entry_key(entry)
            if key is not None and key not in by_key:  # twice: the first answer counts
                by_key[key] = _transfer_entry(entry)
        lost = BankingError(ErrorCode.INVALID_RESPONSE, "the batch answer left a transfer out")
        return [by_key.get(r.idempotency_key, lost) for r in chunk]

    def _transfers_one_by_one(
        self, chunk: Sequence[TransferRequest]
    ) -> list[TransferResult | BankingError]:
        if self._one_by_one is None:
            self._one_by_one = ThreadPoolExecutor(
                max_workers=self._max_connections, thread_name_prefix=f"duly-{self.name}"
            )
        return list(self._one_by_one.map(self._transfer_or_error, chunk))

    def _transfer_or_error(self, request: TransferRequest) -> TransferResult | BankingError:
        try:
            return self.transfer(
                request.from_account,
                request.to_account,
                request.amount_minor,
                request.currency,
                request.idempotency_key,
            )
        except BankingError as exc:
            return exc

    def get_transfer(self, idempotency_key: str) -> TransferResult | None:
        """The transfer recorded under ``idempotency_key``, or ``None`` (404)."""
        response = self._send("GET", transfer_path(idempotency_key), allow_404=True)
        if response.status_code == 404:
            return None
        return _transfer(self._body(response), exists=True)

    # -- plumbing -------------------------------------------------------------------

    def _call(self, method: str, path: str) -> dict[str, Any]:
        return self._body(self._send(method, path))

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        allow_404: bool = False,
        allow: frozenset[int] = frozenset(),
    ) -> httpx.Response:
        try:
            response = self._client.request(method, path, json=json, headers=headers)
        except httpx.TimeoutException:
            raise BankingError(
                ErrorCode.TIMEOUT, f"{method} {_what(path)}: no answer in time"
            ) from None
        except httpx.TransportError as exc:
            raise BankingError(
                ErrorCode.NETWORK_ERROR, f"{method} {_what(path)}: {type(exc).__name__}"
            ) from None
        if (
            response.is_success
            or (allow_404 and response.status_code == 404)
            or response.status_code in allow
        ):
            return response
        raise _status_error(method, path, response)

    def _body(self, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise BankingError(
                ErrorCode.INVALID_RESPONSE, "the bank's answer is not JSON"
            ) from None
        if not isinstance(body, dict):
            raise BankingError(ErrorCode.INVALID_RESPONSE, "the bank's answer is not a JSON object")
        return body


def _what(path: str) -> str:
    """The path without account or transfer ids (for messages)."""
    return "/".join(part if part in _PATH_WORDS else "…" for part in path.split("/"))


_PATH_WORDS = frozenset(
    {"", "v1", "accounts", "balance", "transfers", "balances:batch", "transfers:batch"}
)


def _transfer_payload(request: TransferRequest) -> dict[str, Any]:
    """A transfer's JSON body (with its key, as a batch entry carries it).

    :raises BankingError: ``VALIDATION_ERROR`` for an unknown currency.
    """
    try:
        code = check_currency(request.currency)
    except MoneyError as exc:
        raise BankingError(ErrorCode.VALIDATION_ERROR, str(exc)) from None
    return {
        "idempotency_key": request.idempotency_key,
        "from_account": request.from_account,
        "to_account": request.to_account,
        "amount": str(from_minor(request.amount_minor, code)),
        "currency": code,
    }


def _entry_key(entry: Any) -> str | None:
    """The key a batch entry answers for: its transfer's ``id``, or its ``idempotency_key``."""
    if not isinstance(entry, dict):
        return None
    key = entry.get("id") if entry.get("error") is None else entry.get("idempotency_key")
    return key if isinstance(key, str) else None


def _transfer_entry(entry: dict[str, Any]) -> TransferResult | BankingError:
    """One entry of a transfer batch answer: the transfer, or that transfer's own error."""
    err = entry.get("error")
    if err is None:
        try:
            return _transfer(entry, exists=entry.get("replayed") is True)
        except BankingError as exc:
            return exc
    if not isinstance(err, dict):
        return BankingError(ErrorCode.INVALID_RESPONSE, "a batch entry's 'error' is not an object")
    code = err.get("code") if err.get("code") in _KNOWN else ErrorCode.API_ERROR
    message = f"POST {TRANSFERS_BATCH_PATH} entry: {str(err.get('message', ''))[:200]}"
    return BankingError(str(code), message)


def _status_error(method: str, path: str, response: httpx.Response) -> BankingError:
    status = response.status_code
    code, message = None, f"{method} {_what(path)} answered {status}"
    try:
        body = response.json()
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            code = err.get("code") if err.get("code") in _KNOWN else None
            message = f"{message}: {str(err.get('message', ''))[:200]}"
    except ValueError:
        pass
    if status >= 500 or status == 429:
        return BankingError(ErrorCode.API_ERROR, message, transient=True)
    if status == 404:
        return BankingError(ErrorCode.MISSING_DATA, message)
    if status == 409:
        return BankingError(ErrorCode.IDEMPOTENCY_CONFLICT, message)
    if code is not None and code not in _TRANSPORT_CODES:
        return BankingError(code, message)
    return BankingError(ErrorCode.API_ERROR, message, transient=False)


def _balance(body: dict[str, Any], account_id: str) -> Balance:
    """A balance answer (a body, or an entry of a batch answer) as a :class:`Balance`."""
    currency = _currency(body)
    if "posted" not in body:
        raise BankingError(ErrorCode.MISSING_DATA, "the balance answer has no 'posted'")
    if body["posted"] is None:
        raise BankingError(
            ErrorCode.NULL_BALANCE,
            f"the bank reported no balance for {mask_account(account_id)}",
        )
    posted = _minor(body["posted"], currency, "posted")
    pending = _minor(body.get("pending_debits", "0"), currency, "pending_debits")
    raw_limit = body.get("overdraft_limit", "0")
    limit = None if raw_limit is None else _minor(raw_limit, currency, "overdraft_limit")
    if limit is not None and posted - pending < -limit:
        raise BankingError(
            ErrorCode.NEGATIVE_BALANCE,
            f"account {mask_account(account_id)} is below its overdraft limit",
        )
    return Balance(str(body.get("account_id", account_id)), currency, posted, pending, limit)


def _balance_entry(entry: dict[str, Any], account_id: str) -> Balance:
    """One entry of a batch answer: a balance, or that account's own error."""
    err = entry.get("error")
    if err is None:
        return _balance(entry, account_id)
    if not isinstance(err, dict):
        raise BankingError(ErrorCode.INVALID_RESPONSE, "a batch entry's 'error' is not an object")
    code = err.get("code") if err.get("code") in _KNOWN else ErrorCode.API_ERROR
    message = f"balance of {mask_account(account_id)}: {str(err.get('message', ''))[:200]}"
    raise BankingError(str(code), message)


def _currency(body: dict[str, Any]) -> str:
    if "currency" not in body:
        raise BankingError(ErrorCode.MISSING_DATA, "the answer has no 'currency'")
    try:
        return check_currency(str(body["currency"]))
    except MoneyError:
        raise BankingError(ErrorCode.INVALID_RESPONSE, "the answer's currency is unknown") from None


def _minor(value: Any, currency: str, name: str) -> int:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise BankingError(ErrorCode.INVALID_RESPONSE, f"'{name}' is not a decimal string")
    try:
        return to_minor(Decimal(str(value)), currency)
    except (InvalidOperation, MoneyError):
        raise BankingError(
            ErrorCode.INVALID_RESPONSE, f"'{name}' is not an amount in {currency}"
        ) from None


def _transfer(body: dict[str, Any], *, exists: bool) -> TransferResult:
    for key in ("id", "debit_account_id", "credit_account_id", "amount", "status"):
        if body.get(key) is None:
            raise BankingError(ErrorCode.MISSING_DATA, f"the transfer answer has no '{key}'")
    currency = _currency(body)
    created_at = None
    if body.get("created_at"):
        try:
            created_at = datetime.fromisoformat(str(body["created_at"]))
        except ValueError:
            raise BankingError(ErrorCode.INVALID_RESPONSE, "'created_at' is not ISO 8601") from None
    return TransferResult(
        id=str(body["id"]),
        debit_account_id=str(body["debit_account_id"]),
        credit_account_id=str(body["credit_account_id"]),
        amount_minor=_minor(body["amount"], currency, "amount"),
        currency=currency,
        status=str(body["status"]),
        created_at=created_at,
        exists=exists,
    )
