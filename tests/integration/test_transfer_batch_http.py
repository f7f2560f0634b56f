"""``HttpBank.transfer_many`` against a real ``bank-sim``: one request per chunk, each
transfer's outcome exactly what its single ``POST`` would give, every key applied once."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from duly.banking.errors import BankingError
from duly.banking.http import HttpBank
from duly.banking.port import TransferRequest, TransferResult
from duly.banking.simulator import BankSimulator
from duly.banking.wire import MAX_BATCH_TRANSFERS, TRANSFERS_BATCH_PATH

TIMEOUT = 0.3
PAYERS = [f"ACC-P-{i:04d}" for i in range(30)]


@pytest.fixture
def sim() -> Iterator[BankSimulator]:
    with BankSimulator(seed=5, hang_seconds=2 * TIMEOUT + 0.2) as running:
        for account_id in PAYERS:
            running.add_account(account_id, "USD", 10_000)
        running.add_account("ACC-PAYEE", "USD", 0)
        running.add_account("ACC-SHUT", "USD", 0, status="closed")
        yield running


@pytest.fixture
def bank(sim: BankSimulator) -> Iterator[HttpBank]:
    with HttpBank(sim.url, timeout=TIMEOUT) as client:
        yield client


def pay(payer: str, amount: int, key: str, payee: str = "ACC-PAYEE") -> TransferRequest:
    return TransferRequest(payer, payee, amount, "USD", key)


def codes(outcomes: list[TransferResult | BankingError]) -> list[str]:
    return [o.code if isinstance(o, BankingError) else "OK" for o in outcomes]


def test_one_request_gives_each_transfer_its_single_outcome(
    bank: HttpBank, sim: BankSimulator
) -> None:
    bank.transfer(PAYERS[0], "ACC-PAYEE", 100, "USD", "used-before")
    requests = [
        pay(PAYERS[1], 2_500, "ok-1"),
        pay(PAYERS[2], 10_001, "too-much"),
        pay(PAYERS[3], 100, "closed", payee="ACC-SHUT"),
        pay(PAYERS[4], 100, "nobody", payee="NOPE"),
        pay(PAYERS[0], 999, "used-before"),  # same key, other amount
        pay(PAYERS[0], 100, "used-before-2"),
    ]
    before = sim.stats()["requests"]
    outcomes = bank.transfer_many(requests)
    assert sim.stats()["requests"] - before == 1 + len(requests)  # the batch counts each one
    assert codes(outcomes) == [
        "OK", "INSUFFICIENT_FUNDS", "ACCOUNT_CLOSED", "MISSING_DATA", "IDEMPOTENCY_CONFLICT", "OK",
    ]  # fmt: skip
    funds = outcomes[1]
    assert isinstance(funds, BankingError) and funds.transient
    made = outcomes[0]
    assert isinstance(made, TransferResult)
    assert (made.id, made.amount_minor, made.exists) == ("ok-1", 2_500, False)
    assert sim.balance_of("ACC-PAYEE") == 100 + 2_500 + 100

    again = bank.transfer_many(requests)  # replayed: nothing moves twice
    assert codes(again) == codes(outcomes)
    replay = again[0]
    assert isinstance(replay, TransferResult) and replay.exists
    assert sim.balance_of("ACC-PAYEE") == 100 + 2_500 + 100
    assert sim.stats()["duplicate_applications"] == 0


def test_a_transfer_in_an_unknown_currency_is_refused_alone(
    bank: HttpBank, sim: BankSimulator
) -> None:
    bad = TransferRequest(PAYERS[5], "ACC-PAYEE", 100, "ZZZ", "bad-currency")
    outcomes = bank.transfer_many([pay(PAYERS[6], 100, "good-1"), bad, pay(PAYERS[7], 100, "good-2")])
    assert codes(outcomes) == ["OK", "VALIDATION_ERROR", "OK"]
    assert codes(bank.transfer_many([bad])) == ["VALIDATION_ERROR"]  # nothing to post
    assert sim.applied() == {"good-1": 1, "good-2": 1}


@pytest.mark.parametrize("fault", ["timeout", "5xx", "malformed", "missing"])
def test_a_faulty_batch_retried_by_key_applies_each_transfer_once(
    bank: HttpBank, sim: BankSimulator, fault: str
) -> None:
    requests = [pay(payer, 1_000, f"k-{payer}") for payer in PAYERS]
    sim.fault_rate, sim.faults = 0.3, (fault,)
    first = bank.transfer_many(requests)
    expected = {
        "timeout": "TIMEOUT", "5xx": "API_ERROR", "malformed": "INVALID_RESPONSE",
        "missing": "MISSING_DATA",
    }[fault]  # fmt: skip
    assert set(codes(first)) <= {"OK", expected} and expected in codes(first)
    for outcome in first:
        if isinstance(outcome, BankingError):
            assert outcome.transient is (fault != "missing")

    sim.fault_rate = 0
    second = bank.transfer_many(requests)
    assert codes(second) == ["OK"] * len(requests)
    # A fault before the transfer (5xx, missing) applied nothing; one after it (timeout,
    # malformed) lost the answer only: the retry finds it recorded under its key.
    for was, now in zip(first, second, strict=True):
        assert isinstance(now, TransferResult)
        applied_first = not isinstance(was, BankingError) or fault in ("timeout", "malformed")
        assert now.exists is applied_first
    assert sim.balance_of("ACC-PAYEE") == 1_000 * len(PAYERS)
    assert all(sim.balance_of(payer) == 9_000 for payer in PAYERS)
    assert sim.stats()["duplicate_applications"] == 0


def test_a_lost_batch_answer_fails_its_chunk_and_the_retry_applies_once(
    bank: HttpBank, sim: BankSimulator
) -> None:
    requests = [pay(payer, 500, f"lost-{payer}") for payer in PAYERS[:5]]
    sim.fault_rate, sim.faults = 1.0, ("timeout",)  # the whole request hangs (applied first)
    assert codes(bank.transfer_many(requests)) == ["TIMEOUT"] * 5
    sim.fault_rate = 0
    again = bank.transfer_many(requests)
    assert all(isinstance(o, TransferResult) and o.exists for o in again)
    assert sim.balance_of("ACC-PAYEE") == 2_500
    assert sim.stats()["duplicate_applications"] == 0


def test_the_simulator_refuses_a_bad_batch_and_applies_nothing(sim: BankSimulator) -> None:
    item = {"from_account": PAYERS[0], "to_account": "ACC-PAYEE", "amount": "1.00",
            "currency": "USD"}  # fmt: skip
    bad_bodies = [
        {"transfers": []},
        {"transfers": [item]},  # no key
        {"transfers": [{**item, "idempotency_key": "x"}, {**item, "idempotency_key": "x"}]},
        {"transfers": [{**item, "idempotency_key": f"k{i}"} for i in range(MAX_BATCH_TRANSFERS + 1)]},
    ]  # fmt: skip
    with httpx.Client(base_url=sim.url) as raw:
        statuses = [raw.post(TRANSFERS_BATCH_PATH, json=body).status_code for body in bad_bodies]
    assert statuses == [400] * len(bad_bodies)
    assert sim.stats()["transfers"] == 0


def test_a_bank_without_the_batch_endpoint_gets_single_requests() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path == TRANSFERS_BATCH_PATH:
            return httpx.Response(404, json={"error": {"code": "MISSING_DATA"}})
        body = json.loads(request.content)
        if body["amount"] == "9.99":
            return httpx.Response(422, json={"error": {"code": "ACCOUNT_CLOSED"}})
        return httpx.Response(201, json={
            "id": request.headers["Idempotency-Key"], "debit_account_id": body["from_account"],
            "credit_account_id": body["to_account"], "amount": body["amount"],
            "currency": body["currency"], "status": "posted",
        })  # fmt: skip

    with HttpBank("http://bank.test", transport=httpx.MockTransport(handler)) as bank:
        first = bank.transfer_many([pay("A", 100, "a1"), pay("B", 999, "b1")])
        second = bank.transfer_many([pay("C", 100, "c1")])
    assert codes(first) == ["OK", "ACCOUNT_CLOSED"] and codes(second) == ["OK"]
    assert paths.count(TRANSFERS_BATCH_PATH) == 1  # asked once, then one by one
    assert sorted(paths[1:]) == ["/v1/transfers"] * 3
