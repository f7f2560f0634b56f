"""``duly bank-sim``: a core-banking HTTP server for tests, demos and benchmarks.

It speaks :mod:`duly.banking.wire` (what :class:`~duly.banking.http.HttpBank` expects),
keeps an in-memory ledger with idempotency keys, and misbehaves on purpose:

* ``--latency-ms``: every answer waits this long;
* ``--fault-rate`` with ``--faults``: that share of API requests gets one of the faults,
  drawn from a generator seeded with ``--seed`` (deterministic for one client):

  ============  ==============================================================
  ``timeout``   no answer until ``hang_seconds`` (a transfer is applied first:
                the answer is lost, not the transfer)
  ``5xx``       ``503``, nothing applied
  ``malformed`` a body that is not JSON (a transfer is applied first)
  ``missing``   ``404``, nothing applied
  ``null``      balance ``null`` (balance reads only)
  ``negative``  a balance below the overdraft limit (balance reads only)
  ============  ==============================================================

``POST /v1/balances:batch`` (see :mod:`duly.banking.wire`) draws a fault for the request
(``timeout``, ``5xx`` or ``malformed``: the whole answer is lost) and then one for each
account in it, at the same rate, answered in that account's entry alone: ``timeout`` and
``5xx`` as a ``TIMEOUT`` / ``API_ERROR`` error entry, ``malformed`` as an amount that is
not a decimal string, ``missing``, ``null`` and ``negative`` as for a single read.
``POST /v1/transfers:batch`` likewise draws a fault for the request and then one for each
transfer, answered in its entry: ``5xx`` and ``missing`` as an ``API_ERROR`` /
``MISSING_DATA`` entry with nothing applied, ``timeout`` as a ``TIMEOUT`` entry *after*
the transfer was applied (the answer is lost, not the transfer), ``malformed`` as an
applied transfer whose amount is not a decimal string.

Set-up endpoints (never faulty): ``POST /sim/accounts`` ``{id, currency, balance,
overdraft_limit, status}``, ``GET /sim/stats`` (transfers recorded, and how many times
any key was applied more than once: always 0 unless something is broken) and
``GET /sim/applied`` (``{"applied": {key: times applied}}``, for crash tests).
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from duly.banking.errors import ErrorCode
from duly.banking.money import MoneyError, check_currency, from_minor, to_minor
from duly.banking.wire import (
    IDEMPOTENCY_HEADER,
    MAX_BATCH_BALANCES,
    MAX_BATCH_TRANSFERS,
    error_body,
)
from duly.clock import Clock, SystemClock

__all__ = ["FAULTS", "BankSimulator", "SimAccount"]

FAULTS = ("timeout", "5xx", "malformed", "missing", "null", "negative")
_BALANCE_ONLY = {"null", "negative"}
#: Faults a whole batch request can get (the others are per entry, inside the answer).
_BATCH_REQUEST = {"timeout", "5xx", "malformed"}


@dataclass
class SimAccount:
    """An account of the simulated bank (amounts in minor units)."""

    id: str
    currency: str
    balance: int = 0
    overdraft_limit: int | None = 0
    status: str = "open"


@dataclass
class _State:
    accounts: dict[str, SimAccount] = field(default_factory=dict)
    transfers: dict[str, dict[str, Any]] = field(default_factory=dict)
    applied: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    requests: int = 0


class BankSimulator:
    """The simulated bank; :meth:`start` serves it on a background thread.

    :param port: 0 picks a free port (see :attr:`url` after :meth:`start`).
    :param latency_ms: delay before every answer.
    :param fault_rate: share (0–1) of API requests that get a fault.
    :param faults: which faults may be drawn (default: all of :data:`FAULTS`).
    :param seed: seeds the fault generator.
    :param hang_seconds: how long a ``timeout`` fault keeps the request waiting.
    :param token: if set, API requests need ``Authorization: Bearer <token>``.
    :param clock: stamps ``created_at`` (default: the system clock).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency_ms: float = 0.0,
        fault_rate: float = 0.0,
        faults: tuple[str, ...] | list[str] = FAULTS,
        seed: int | None = None,
        hang_seconds: float = 60.0,
        token: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(
                f"unknown fault(s) {', '.join(sorted(unknown))}: use {', '.join(FAULTS)}"
            )
        if not 0 <= fault_rate <= 1:
            raise ValueError("fault_rate must be between 0 and 1")
        self.latency = max(latency_ms, 0.0) / 1000
        self.fault_rate = fault_rate
        self.faults = tuple(faults)
        self.hang_seconds = hang_seconds
        self.token = token
        self.clock = clock or SystemClock()
        self.state = _State()
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:54321``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> BankSimulator:
        """Serve on a daemon thread; returns ``self``."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="duly-bank-sim", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve on this thread until :meth:`stop` (the CLI)."""
        self._server.serve_forever()

    def stop(self) -> None:
        """Stop serving and release hanging requests."""
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> BankSimulator:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- the bank -------------------------------------------------------------------

    def add_account(
        self,
        account_id: str,
        currency: str,
        balance_minor: int = 0,
        *,
        overdraft_limit_minor: int | None = 0,
        status: str = "open",
    ) -> None:
        """Create or replace an account."""
        with self._lock:
            self.state.accounts[account_id] = SimAccount(
                account_id, check_currency(currency), balance_minor, overdraft_limit_minor, status
            )

    def balance_of(self, account_id: str) -> int:
        """An account's balance in minor units."""
        with self._lock:
            return self.state.accounts[account_id].balance

    def stats(self) -> dict[str, Any]:
        """Transfers recorded, keys applied more than once (must be 0), requests (each account
        of a batch read counts as one), faults by kind."""
        with self._lock:
            return {
                "transfers": len(self.state.transfers),
                "duplicate_applications": sum(n - 1 for n in self.state.applied.values() if n > 1),
                "requests": self.state.requests,
                "faults": dict(self.state.faults),
            }

    def applied(self) -> dict[str, int]:
        """How many times each idempotency key was applied (every count must be 1)."""
        with self._lock:
            return dict(self.state.applied)

    def draw_fault(self, kind: str) -> str | None:
        """The fault for the next API request of ``kind`` (``balance``, ``transfer``, ``get``,
        ``batch``), if any; each account of a batch read draws as a ``balance`` read of its
        own (and counts as one in :meth:`stats`' ``requests``)."""
        if kind == "batch":
            allowed = [f for f in self.faults if f in _BATCH_REQUEST]
        else:
            allowed = [f for f in self.faults if kind == "balance" or f not in _BALANCE_ONLY]
        with self._lock:
            self.state.requests += 1
            if not allowed or self._rng.random() >= self.fault_rate:
                return None
            fault = self._rng.choice(allowed)
            self.state.faults[fault] += 1
            return fault

    def balance(self, account_id: str) -> tuple[int, dict[str, Any]]:
        """(status, body) of a balance read."""
        with self._lock:
            acct = self.state.accounts.get(account_id)
            if acct is None:
                return 404, error_body(ErrorCode.MISSING_DATA, "no such account")
            return 200, _balance_body(acct)

    def balances(self, body: Any) -> tuple[int, dict[str, Any]]:
        """(status, body) of a batch balance read, with per-account faults drawn."""
        ids = body.get("account_ids") if isinstance(body, dict) else None
        if (
            not isinstance(ids, list)
            or not 1 <= len(ids) <= MAX_BATCH_BALANCES
            or not all(isinstance(i, str) for i in ids)
        ):
            return 400, error_body(
                ErrorCode.VALIDATION_ERROR,
                f"account_ids must be a list of 1 to {MAX_BATCH_BALANCES} account ids",
            )
        entries: list[dict[str, Any]] = []
        for account_id in ids:
            fault = self.draw_fault("balance")
            if fault == "missing":
                status, entry = 404, error_body(ErrorCode.MISSING_DATA, "simulated fault")
            elif fault in ("timeout", "5xx"):
                code = ErrorCode.TIMEOUT if fault == "timeout" else ErrorCode.API_ERROR
                status, entry = 503, error_body(code, "simulated fault")
            else:
                status, entry = self.balance(account_id)
            if status != 200:
                entries.append({"account_id": account_id, **entry})
            elif fault == "malformed":
                entries.append({**entry, "posted": 12.5})  # a JSON number: not an amount
            else:
                entries.append(_faulty_balance(entry, fault))
        return 200, {"balances": entries}

    def transfer(self, key: str | None, body: Any) -> tuple[int, dict[str, Any]]:
        """(status, body) of a transfer request, applied at most once per key."""
        if not key:
            return 400, error_body(
                ErrorCode.VALIDATION_ERROR, f"the {IDEMPOTENCY_HEADER} header is required"
            )
        try:
            src, dst = str(body["from_account"]), str(body["to_account"])
            currency = check_currency(str(body["currency"]))
            if not isinstance(body["amount"], str):
                raise TypeError("amount must be a decimal string")
            amount = to_minor(Decimal(body["amount"]), currency)
        except (KeyError, TypeError, InvalidOperation, MoneyError) as exc:
            return 400, error_body(ErrorCode.VALIDATION_ERROR, f"bad transfer body: {exc}")
        with self._lock:
            st = self.state
            existing = st.transfers.get(key)
            if existing is not None:
                same = (
                    existing["debit_account_id"] == src
                    and existing["credit_account_id"] == dst
                    and existing["_amount"] == amount
                    and existing["currency"] == currency
                )
                if not same:
                    return 409, error_body(
                        ErrorCode.IDEMPOTENCY_CONFLICT, "key used with other fields"
                    )
                return 200, _public(existing)
            refused = self._refusal(src, dst, amount, currency)
            if refused is not None:
                return refused
            st.accounts[src].balance -= amount
            st.accounts[dst].balance += amount
            record = {
                "id": key,
                "debit_account_id": src,
                "credit_account_id": dst,
                "amount": str(from_minor(amount, currency)),
                "currency": currency,
                "status": "posted",
                "created_at": self.clock.now().isoformat(),
                "_amount": amount,
            }
            st.transfers[key] = record
            st.applied[key] += 1
            return 201, _public(record)

    def transfers(self, body: Any) -> tuple[int, dict[str, Any]]:
        """(status, body) of a batch of transfers, with per-transfer faults drawn."""
        items = body.get("transfers") if isinstance(body, dict) else None
        keys = (
            [item.get("idempotency_key") if isinstance(item, dict) else None for item in items]
            if isinstance(items, list)
            else []
        )
        if (
            not isinstance(items, list)
            or not 1 <= len(items) <= MAX_BATCH_TRANSFERS
            or not all(isinstance(k, str) and k for k in keys)
            or len(set(keys)) != len(keys)
        ):
            return 400, error_body(
                ErrorCode.VALIDATION_ERROR,
                f"transfers must be a list of 1 to {MAX_BATCH_TRANSFERS} transfers,"
                " each with its own idempotency_key",
            )
        return 200, {"transfers": [self._batch_entry(i["idempotency_key"], i) for i in items]}

    def _batch_entry(self, key: str, item: dict[str, Any]) -> dict[str, Any]:
        """One transfer of a batch, as its entry in the answer."""
        fault = self.draw_fault("transfer")
        if fault in ("5xx", "missing"):
            code = ErrorCode.API_ERROR if fault == "5xx" else ErrorCode.MISSING_DATA
            return {"idempotency_key": key, **error_body(code, "simulated fault")}
        status, payload = self.transfer(key, item)
        if status >= 300:
            return {"idempotency_key": key, **payload}
        if fault == "timeout":
            return {"idempotency_key": key,
                    **error_body(ErrorCode.TIMEOUT, "simulated fault: the answer was lost")}  # fmt: skip
        entry = {**payload, "replayed": status == 200}
        if fault == "malformed":
            entry["amount"] = 12.5  # a JSON number: not an amount
        return entry

    def _refusal(
        self, src: str, dst: str, amount: int, currency: str
    ) -> tuple[int, dict[str, Any]] | None:
        accts = self.state.accounts
        if amount <= 0 or src == dst:
            return 400, error_body(
                ErrorCode.VALIDATION_ERROR, "amount must be positive, accounts distinct"
            )
        for account_id in (src, dst):
            acct = accts.get(account_id)
            if acct is None:
                return 404, error_body(ErrorCode.MISSING_DATA, "no such account")
            if acct.status != "open":
                return 422, error_body(ErrorCode.ACCOUNT_CLOSED, "account closed")
            if acct.currency != currency:
                return 422, error_body(
                    ErrorCode.VALIDATION_ERROR, "currency differs from the account's"
                )
        debit = accts[src]
        if debit.overdraft_limit is not None and debit.balance - amount < -debit.overdraft_limit:
            return 422, error_body(ErrorCode.INSUFFICIENT_FUNDS, "insufficient funds")
        return None

    def get_transfer(self, key: str) -> tuple[int, dict[str, Any]]:
        """(status, body) of a transfer lookup."""
        with self._lock:
            record = self.state.transfers.get(key)
        if record is None:
            return 404, error_body(ErrorCode.MISSING_DATA, "no such transfer")
        return 200, _public(record)

    def wait_hang(self) -> None:
        """Hold a request for ``hang_seconds`` (or until the simulator stops)."""
        self._stopping.wait(self.hang_seconds)

    def wait_latency(self) -> None:
        """Hold a request for the configured latency."""
        if self.latency:
            self._stopping.wait(self.latency)


def _balance_body(acct: SimAccount) -> dict[str, Any]:
    return {
        "account_id": acct.id,
        "currency": acct.currency,
        "posted": str(from_minor(acct.balance, acct.currency)),
        "pending_debits": str(from_minor(0, acct.currency)),
        "overdraft_limit": None
        if acct.overdraft_limit is None
        else str(from_minor(acct.overdraft_limit, acct.currency)),
    }


def _faulty_balance(payload: dict[str, Any], fault: str | None) -> dict[str, Any]:
    """A balance body as the ``null`` or ``negative`` fault shows it (else unchanged)."""
    if fault == "null":
        return {**payload, "posted": None}
    if fault == "negative":
        limit = payload.get("overdraft_limit")
        low = -(Decimal(limit) if limit is not None else Decimal(0)) - Decimal(100)
        return {**payload, "posted": str(low), "overdraft_limit": limit or "0"}
    return payload


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def _handler_for(sim: BankSimulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out at once, no 40 ms stalls
        server_version = "duly-bank-sim"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def _dispatch(self, method: str) -> None:
            path = urlsplit(self.path).path
            body = self._read_body()
            parts = [unquote(p) for p in path.strip("/").split("/")]
            if parts[:1] == ["sim"]:
                self._admin(method, parts[1:], body)
                return
            if sim.token and self.headers.get("Authorization") != f"Bearer {sim.token}":
                self._send(401, error_body("API_ERROR", "unauthorised"))
                return
            if (
                method == "GET"
                and len(parts) == 4
                and parts[:2] == ["v1", "accounts"]
                and parts[3] == "balance"
            ):
                self._api("balance", lambda: sim.balance(parts[2]))
            elif method == "POST" and parts == ["v1", "balances:batch"]:
                self._api("batch", lambda: sim.balances(body))
            elif method == "POST" and parts == ["v1", "transfers:batch"]:
                self._api("batch", lambda: sim.transfers(body))
            elif method == "POST" and parts == ["v1", "transfers"]:
                key = self.headers.get(IDEMPOTENCY_HEADER)
                self._api("transfer", lambda: sim.transfer(key, body))
            elif method == "GET" and len(parts) == 3 and parts[:2] == ["v1", "transfers"]:
                self._api("get", lambda: sim.get_transfer(parts[2]))
            else:
                self._send(404, error_body("MISSING_DATA", f"no route {method} {path}"))

        def _api(self, kind: str, work: Any) -> None:
            sim.wait_latency()
            fault = sim.draw_fault(kind)
            if fault in ("5xx", "missing"):
                status = 503 if fault == "5xx" else 404
                self._send(
                    status,
                    error_body(
                        "API_ERROR" if fault == "5xx" else "MISSING_DATA", "simulated fault"
                    ),
                )
                return
            status, payload = work()
            if fault == "timeout":
                sim.wait_hang()
                self._send(504, error_body("API_ERROR", "simulated hang"), close=True)
            elif fault == "malformed":
                self._send_raw(200, b'{"id": "unterminated', close=False)
            elif fault in ("null", "negative") and status == 200:
                self._send(200, _faulty_balance(payload, fault))
            else:
                self._send(status, payload)

        def _admin(self, method: str, parts: list[str], body: Any) -> None:
            if method == "GET" and parts == ["stats"]:
                self._send(200, sim.stats())
            elif method == "GET" and parts == ["applied"]:
                self._send(200, {"applied": sim.applied()})
            elif method == "POST" and parts == ["accounts"] and isinstance(body, dict):
                try:
                    currency = check_currency(str(body["currency"]))
                    limit = body.get("overdraft_limit", "0")
                    sim.add_account(
                        str(body["id"]),
                        currency,
                        to_minor(str(body.get("balance", "0")), currency),
                        overdraft_limit_minor=None
                        if limit is None
                        else to_minor(str(limit), currency),
                        status=str(body.get("status", "open")),
                    )
                except (KeyError, MoneyError) as exc:
                    self._send(400, error_body("VALIDATION_ERROR", str(exc)))
                    return
                self._send(201, {"id": body["id"]})
            else:
                self._send(404, error_body("MISSING_DATA", "no such set-up route"))

        def _read_body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            if not length:
                return None
            raw = self.rfile.read(length)
            try:
                return json.loads(raw)
            except ValueError:
                return None

        def _send(self, status: int, payload: dict[str, Any], *, close: bool = False) -> None:
            self._send_raw(status, json.dumps(payload).encode(), close=close)

        def _send_raw(self, status: int, data: bytes, *, close: bool) -> None:
            try:
                self.send_response(status, HTTPStatus(status).phrase)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if close:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                self.close_connection = True

    return Handler
