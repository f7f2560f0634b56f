"""``HttpBank.get_balances`` against a real ``bank-sim``: one request per chunk, each
account's fault mapped to its own code, a failed request failing its chunk only."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from duly.banking.errors import BankingError
from duly.banking.http import HttpBank
from duly.banking.port import Balance
from duly.banking.simulator import BankSimulator
from duly.banking.wire import BALANCES_BATCH_PATH

TIMEOUT = 0.3
IDS = [f"ACC-{i:04d}" for i in range(40)]


@pytest.fixture
def sim() -> Iterator[BankSimulator]:
    with BankSimulator(seed=3, hang_seconds=2 * TIMEOUT + 0.2) as running:
        for i, account_id in enumerate(IDS):
            running.add_account(account_id, "USD", 1_000 * i, overdraft_limit_minor=500)
        yield running


def codes(got: dict[str, Balance | BankingError]) -> dict[str, str]:
    return {k: v.code if isinstance(v, BankingError) else "OK" for k, v in got.items()}


def test_one_request_answers_every_account_like_single_reads(sim: BankSimulator) -> None:
    with HttpBank(sim.url, timeout=TIMEOUT) as bank:
        got = bank.get_balances([*IDS, "NOPE"])
        singles = {i: bank.get_balance(i) for i in IDS}
    assert sim.stats()["requests"] == 1 + 41 + 40  # the batch counts each account
    assert {k: v for k, v in got.items() if k != "NOPE"} == singles
    nope = got["NOPE"]
    assert isinstance(nope, BankingError) and (nope.code, nope.transient) == ("MISSING_DATA", False)


@pytest.mark.parametrize(
    ("fault", "code", "transient"),
    [
        ("missing", "MISSING_DATA", False),
        ("null", "NULL_BALANCE", False),
        ("negative", "NEGATIVE_BALANCE", False),
        ("malformed", "INVALID_RESPONSE", True),  # request-level fault, or per entry
        ("5xx", "API_ERROR", True),
        ("timeout", "TIMEOUT", True),
    ],
)
def test_each_fault_maps_to_its_code_per_account(
    sim: BankSimulator, fault: str, code: str, transient: bool
) -> None:
    sim.fault_rate, sim.faults = 1.0, (fault,)
    with HttpBank(sim.url, timeout=TIMEOUT) as bank:
        got = bank.get_balances(IDS)
    assert set(got) == set(IDS)
    errors = list(got.values())
    assert all(isinstance(e, BankingError) for e in errors)
    assert {(e.code, e.transient) for e in errors if isinstance(e, BankingError)} == {
        (code, transient)
    }
    assert all(i not in str(e) for i, e in zip(IDS, errors, strict=True))  # ids masked


def test_per_account_faults_leave_the_others_readable(sim: BankSimulator) -> None:
    sim.fault_rate, sim.faults = 0.3, ("missing", "null", "negative")
    with HttpBank(sim.url, timeout=TIMEOUT) as bank:
        got = bank.get_balances(IDS)
    found = codes(got)
    assert "OK" in found.values() and set(found.values()) - {"OK"}
    assert set(found.values()) <= {"OK", "MISSING_DATA", "NULL_BALANCE", "NEGATIVE_BALANCE"}


def test_a_bank_without_the_batch_endpoint_is_read_one_by_one() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.url.path == BALANCES_BATCH_PATH:
            return httpx.Response(404, json={"error": {"code": "MISSING_DATA", "message": "no"}})
        return httpx.Response(
            200, json={"account_id": "A", "currency": "EUR", "posted": "1.50",
                       "pending_debits": "0.50", "overdraft_limit": "0"}
        )  # fmt: skip

    with HttpBank("http://bank.test", transport=httpx.MockTransport(handler)) as bank:
        first = bank.get_balances(["A", "B"])
        second = bank.get_balances(["C"])
    assert seen == [f"POST {BALANCES_BATCH_PATH}", "GET /v1/accounts/A/balance",
                    "GET /v1/accounts/B/balance", "GET /v1/accounts/C/balance"]  # fmt: skip
    assert all(isinstance(b, Balance) and b.available_minor == 100 for b in first.values())
    assert list(second) == ["C"]


def test_an_answer_leaving_an_account_out_is_invalid_for_that_account() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"balances": [
            {"account_id": "A", "currency": "EUR", "posted": "2.00"},
            {"account_id": "B", "error": {"code": "NOT_A_CODE", "message": "odd"}},
            "junk",
        ]})  # fmt: skip

    with HttpBank("http://bank.test", transport=httpx.MockTransport(handler)) as bank:
        got = bank.get_balances(["A", "B", "C"])
    assert codes(got) == {"A": "OK", "B": "API_ERROR", "C": "INVALID_RESPONSE"}
