"""No balance, card number or secret reaches a log line."""

from __future__ import annotations

import json

import structlog
from hypothesis import given
from hypothesis import strategies as st

from duly.logs import configure_logging, mask_pans, redact


def luhn_complete(prefix: str) -> str:
    """``prefix`` plus the check digit that makes it Luhn-valid."""
    for d in "0123456789":
        digits = prefix + d
        total = 0
        for i, ch in enumerate(reversed(digits)):
            n = int(ch)
            if i % 2 == 1:
                n = n * 2 - 9 if n > 4 else n * 2
            total += n
        if total % 10 == 0:
            return digits
    raise AssertionError


@given(st.text(alphabet="0123456789", min_size=12, max_size=18))
def test_luhn_valid_card_numbers_are_masked_to_last_four(prefix: str) -> None:
    pan = luhn_complete(prefix)
    masked = mask_pans(f"card {pan} declined")
    assert pan not in masked and f"****{pan[-4:]}" in masked


def test_other_numbers_stay() -> None:
    assert mask_pans("run 12345 at 2026-03-02") == "run 12345 at 2026-03-02"
    assert mask_pans("4111111111111112") == "4111111111111112"  # fails Luhn


def test_sensitive_keys_are_redacted_at_any_depth() -> None:
    event = redact(None, "info", {"event": "x", "balance": "100.00", "api_token": "s3cr3t",
                                  "details": {"amount": 5, "ok": 1}, "card": "4111 1111 1111 1111"})
    assert event["balance"] == "[redacted]" and event["api_token"] == "[redacted]"
    assert event["details"] == {"amount": "[redacted]", "ok": 1}
    assert event["card"] == "****1111"


def test_json_log_lines_carry_no_secret(capsys) -> None:
    configure_logging("info", "json")
    try:
        structlog.get_logger("t").info("balance.read", customer="C1", balance=1234.5,
                                       password="hunter2")
        line = capsys.readouterr().err.strip().splitlines()[-1]
    finally:
        structlog.reset_defaults()
    data = json.loads(line)
    assert data["customer"] == "C1" and "1234" not in line and "hunter2" not in line
