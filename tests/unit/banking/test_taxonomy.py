"""The error taxonomy: every code classified, the catalogue complete, jobs get JobErrors."""

from __future__ import annotations

from duly.banking.catalog import CATALOG, describe
from duly.banking.errors import TRANSIENT_CODES, BankingError, ErrorCode, is_transient, to_job_error
from duly.engine.retry import NON_RETRYABLE_CODES

REQUIRED = {
    "TIMEOUT", "NETWORK_ERROR", "API_ERROR", "INVALID_RESPONSE", "MISSING_DATA", "NULL_BALANCE",
    "NEGATIVE_BALANCE", "INSUFFICIENT_FUNDS", "ACCOUNT_CLOSED", "LEASE_EXPIRED", "JOB_TIMEOUT",
    "INTERNAL", "IDEMPOTENCY_CONFLICT",
}  # fmt: skip


def test_the_catalogue_has_every_required_code_with_an_action() -> None:
    codes = {c.code for c in CATALOG}
    assert codes >= REQUIRED
    assert {c.value for c in ErrorCode} <= codes
    assert codes >= NON_RETRYABLE_CODES
    assert len(codes) == len(CATALOG)
    for info in CATALOG:
        assert info.severity in {"critical", "high", "medium", "low"}
        assert info.description and info.suggested_action


def test_catalogue_and_classification_agree() -> None:
    for info in CATALOG:
        assert info.transient == is_transient(info.code), info.code
    assert set(TRANSIENT_CODES) <= {c.code for c in CATALOG}


def test_transient_and_terminal_codes() -> None:
    transient = {"TIMEOUT", "NETWORK_ERROR", "API_ERROR", "INVALID_RESPONSE", "INSUFFICIENT_FUNDS"}
    terminal = {"ACCOUNT_CLOSED", "IDEMPOTENCY_CONFLICT", "MISSING_DATA", "NULL_BALANCE",
                "NEGATIVE_BALANCE", "VALIDATION_ERROR"}  # fmt: skip
    assert all(BankingError(c).transient for c in transient)
    assert not any(BankingError(c).transient for c in terminal)
    assert not NON_RETRYABLE_CODES & TRANSIENT_CODES


def test_a_banking_error_becomes_a_job_error_with_its_code_and_class() -> None:
    job = to_job_error(BankingError(ErrorCode.TIMEOUT, "no answer"))
    assert (job.code, job.retryable, job.message) == ("TIMEOUT", True, "no answer")
    assert to_job_error(BankingError("ACCOUNT_CLOSED")).retryable is False
    forced = BankingError("API_ERROR", "401", transient=False)
    assert to_job_error(forced).retryable is False


def test_describe() -> None:
    info = describe("INSUFFICIENT_FUNDS")
    assert info is not None and info.transient and "funds" in info.suggested_action
    assert describe("NOPE") is None
