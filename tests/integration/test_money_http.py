"""The http bank against a real ``bank-sim`` on 127.0.0.1: every fault maps to its code."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import httpx
import pytest

from duly.banking.errors import BankingError
from duly.banking.http import HttpBank
from duly.banking.simulator import BankSimulator

CLIENT_TIMEOUT = 0.3


@pytest.fixture
def sim() -> Iterator[BankSimulator]:
    with BankSimulator(seed=7, hang_seconds=2 * CLIENT_TIMEOUT + 0.2) as running:
        running.add_account("ACC-A-0001", "USD", 10_000)
        running.add_account("ACC-B-0002", "USD", 0)
        running.add_account("ACC-C-0003", "USD", 0, status="closed")
        running.add_account("ACC-O-0004", "USD", 0, overdraft_limit_minor=1_000)
        yield running


@pytest.fixture
def bank(sim: BankSimulator) -> Iterator[HttpBank]:
    with HttpBank(sim.url, timeout=CLIENT_TIMEOUT) as client:
        yield client


def fault(sim: BankSimulator, kind: str) -> None:
    sim.fault_rate, sim.faults = 1.0, (kind,)


def code_of(call: object) -> BankingError:
    assert callable(call)
    with pytest.raises(BankingError) as info:
        call()
    return info.value


def test_balance_and_transfer_round_trip(bank: HttpBank, sim: BankSimulator) -> None:
    bal = bank.get_balance("ACC-A-0001")
    assert (bal.posted_minor, bal.pending_debits_minor, str(bal.available)) == (10_000, 0, "100.00")
    first = bank.transfer("ACC-A-0001", "ACC-B-0002", 2_550, "USD", "key-1")
    again = bank.transfer("ACC-A-0001", "ACC-B-0002", 2_550, "USD", "key-1")
    assert (first.exists, again.exists, first.amount_minor, first.id) == (
        False,
        True,
        2_550,
        "key-1",
    )
    assert sim.balance_of("ACC-B-0002") == 2_550
    found = bank.get_transfer("key-1")
    assert found is not None and found.amount_minor == 2_550
    assert bank.get_transfer("never") is None
    assert sim.stats()["duplicate_applications"] == 0


@pytest.mark.parametrize(
    ("kind", "code", "transient"),
    [
        ("timeout", "TIMEOUT", True),
        ("5xx", "API_ERROR", True),
        ("malformed", "INVALID_RESPONSE", True),
        ("missing", "MISSING_DATA", False),
        ("null", "NULL_BALANCE", False),
        ("negative", "NEGATIVE_BALANCE", False),
    ],
)
def test_each_balance_fault_maps_to_its_code(
    bank: HttpBank, sim: BankSimulator, kind: str, code: str, transient: bool
) -> None:
    fault(sim, kind)
    err = code_of(lambda: bank.get_balance("ACC-O-0004"))
    assert (err.code, err.transient) == (code, transient)
    sim.fault_rate = 0
    assert bank.get_balance("ACC-O-0004").posted_minor == 0  # and it recovers


@pytest.mark.parametrize(
    ("kind", "code", "applied"),
    [("timeout", "TIMEOUT", True), ("5xx", "API_ERROR", False),
     ("malformed", "INVALID_RESPONSE", True), ("missing", "MISSING_DATA", False)],
)  # fmt: skip
def test_a_transfer_whose_answer_is_lost_is_applied_once_on_retry(
    bank: HttpBank, sim: BankSimulator, kind: str, code: str, applied: bool
) -> None:
    fault(sim, kind)
    assert (
        code_of(lambda: bank.transfer("ACC-A-0001", "ACC-B-0002", 1_000, "USD", "k")).code == code
    )
    sim.fault_rate = 0
    retried = bank.transfer("ACC-A-0001", "ACC-B-0002", 1_000, "USD", "k")
    assert retried.exists is applied  # the first try went through iff the fault came after it
    assert sim.balance_of("ACC-B-0002") == 1_000
    assert sim.stats()["duplicate_applications"] == 0


def test_refusals_map_to_taxonomy_codes(bank: HttpBank, sim: BankSimulator) -> None:
    funds = code_of(lambda: bank.transfer("ACC-A-0001", "ACC-B-0002", 10_001, "USD", "big"))
    assert (funds.code, funds.transient) == ("INSUFFICIENT_FUNDS", True)
    closed = code_of(lambda: bank.transfer("ACC-A-0001", "ACC-C-0003", 1, "USD", "c"))
    assert (closed.code, closed.transient) == ("ACCOUNT_CLOSED", False)
    assert (
        code_of(lambda: bank.transfer("ACC-A-0001", "NOPE", 1, "USD", "n")).code == "MISSING_DATA"
    )
    assert code_of(lambda: bank.get_balance("NOPE")).code == "MISSING_DATA"
    bank.transfer("ACC-A-0001", "ACC-B-0002", 1, "USD", "once")
    conflict = code_of(lambda: bank.transfer("ACC-A-0001", "ACC-B-0002", 2, "USD", "once"))
    assert (conflict.code, conflict.transient) == ("IDEMPOTENCY_CONFLICT", False)
    # The overdraft is the bank's: 10.00 below zero is allowed, one cent more is not.
    bank.transfer("ACC-O-0004", "ACC-B-0002", 1_000, "USD", "od")
    assert bank.get_balance("ACC-O-0004").posted_minor == -1_000
    assert code_of(lambda: bank.transfer("ACC-O-0004", "ACC-B-0002", 1, "USD", "od2")).code == (
        "INSUFFICIENT_FUNDS"
    )
    # A refused transfer is not recorded under its key: it may be tried again.
    sim.add_account("ACC-A-0001", "USD", 100_000)
    assert not bank.transfer("ACC-A-0001", "ACC-B-0002", 10_001, "USD", "big").exists


def test_the_idempotency_header_is_required_and_honoured(sim: BankSimulator) -> None:
    body = {
        "from_account": "ACC-A-0001",
        "to_account": "ACC-B-0002",
        "amount": "1.00",
        "currency": "USD",
    }
    with httpx.Client(base_url=sim.url) as raw:
        missing = raw.post("/v1/transfers", json=body)
        assert missing.status_code == 400 and missing.json()["error"]["code"] == "VALIDATION_ERROR"
        statuses = [
            raw.post("/v1/transfers", json=body, headers={"Idempotency-Key": "h"}).status_code
            for _ in range(3)
        ]
        money = raw.post(
            "/v1/transfers", json={**body, "amount": 1.0}, headers={"Idempotency-Key": "f"}
        )
    assert statuses == [201, 200, 200]
    assert money.status_code == 400  # amounts are decimal strings, never JSON numbers
    assert sim.balance_of("ACC-B-0002") == 100 and sim.stats()["transfers"] == 1


def test_the_adapter_sends_its_key_and_token() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={
            "id": request.headers["Idempotency-Key"], "debit_account_id": "A", "credit_account_id": "B",
            "amount": "1.00", "currency": "USD", "status": "posted", "created_at": None,
        })  # fmt: skip

    with HttpBank(
        "http://bank.test", token="s3cret", transport=httpx.MockTransport(handler)
    ) as bank:
        bank.transfer("A", "B", 100, "USD", "key-42")
    (req,) = seen
    assert req.headers["Idempotency-Key"] == "key-42"
    assert req.headers["Authorization"] == "Bearer s3cret"
    assert req.url.path == "/v1/transfers"


@pytest.mark.parametrize(
    ("status", "body", "code", "transient"),
    [
        (500, {"error": {"code": "X", "message": "boom"}}, "API_ERROR", True),
        (429, {}, "API_ERROR", True),
        (401, {"error": {"code": "API_ERROR"}}, "API_ERROR", False),
        (418, "teapot", "API_ERROR", False),
        (200, [1, 2], "INVALID_RESPONSE", True),
        (200, {"currency": "USD"}, "MISSING_DATA", False),
        (200, {"currency": "USD", "posted": 12.5}, "INVALID_RESPONSE", True),
        (200, {"currency": "USD", "posted": "12.345"}, "INVALID_RESPONSE", True),
        (200, {"currency": "ZZZ", "posted": "1"}, "INVALID_RESPONSE", True),
        (200, {"posted": "1"}, "MISSING_DATA", False),
    ],
)
def test_every_odd_answer_is_classified(
    status: int, body: object, code: str, transient: bool
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body)

    with HttpBank("http://bank.test", transport=httpx.MockTransport(handler)) as bank:
        err = code_of(lambda: bank.get_balance("ACC"))
    assert (err.code, err.transient) == (code, transient)


def test_an_unreachable_bank_is_a_network_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with HttpBank(f"http://127.0.0.1:{port}", timeout=1) as bank:
        err = code_of(lambda: bank.get_balance("ACC"))
    assert (err.code, err.transient) == ("NETWORK_ERROR", True)


def test_the_simulator_needs_its_token_when_it_has_one() -> None:
    with BankSimulator(token="t0k") as sim:
        sim.add_account("A", "USD", 100)
        with HttpBank(sim.url, token="wrong") as bad:
            err = code_of(lambda: bad.get_balance("A"))
        with HttpBank(sim.url, token="t0k") as good:
            assert good.get_balance("A").posted_minor == 100
    assert (err.code, err.transient) == ("API_ERROR", False)


def test_faults_are_drawn_at_the_configured_rate_deterministically() -> None:
    def run() -> dict[str, int]:
        with BankSimulator(seed=42, fault_rate=0.3, faults=("5xx", "null"), hang_seconds=0) as sim:
            sim.add_account("A", "USD", 100)
            with HttpBank(sim.url) as bank:
                for _ in range(200):
                    with contextlib.suppress(BankingError):
                        bank.get_balance("A")
            stats: dict[str, int] = sim.stats()["faults"]
            return stats

    first, second = run(), run()
    assert first == second and 40 <= sum(first.values()) <= 80 and set(first) == {"5xx", "null"}
    with pytest.raises(ValueError):
        BankSimulator(faults=("gremlins",))


def test_the_bank_sim_command_serves_on_a_free_port() -> None:
    import re
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", "from duly.cli import main; main()", "bank-sim", "--port", "0",
         "--account", "ACC-X-0001:EUR:12.50", "--fault-rate", "0", "--seed", "1"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        with HttpBank(match.group(1), timeout=5) as bank:
            bal = bank.get_balance("ACC-X-0001")
        assert (bal.posted_minor, bal.currency) == (1250, "EUR")
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # also closes the stderr pipe
