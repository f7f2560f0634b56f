"""What an audit event may say: secrets and balances out, account numbers masked, changes."""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime
from decimal import Decimal

from duly.audit.redaction import REDACTED, changes, mask_account, redact


class Colour(enum.Enum):
    RED = "red"


def test_secrets_and_balances_are_redacted_at_any_depth() -> None:
    details = {
        "password": "hunter2",
        "token": "duly_abc",
        "secret_hash": "9f…",
        "api_key": "k",
        "balance": "10.00 EUR",
        "available_balance": "5.00 EUR",
        "nested": {"balances": ["1", "2"], "authorization": "Bearer x", "kept": "yes"},
        "token_id": "7f3k2m9q",
    }
    assert redact(details) == {
        "password": REDACTED,
        "token": REDACTED,
        "secret_hash": REDACTED,
        "api_key": REDACTED,
        "balance": REDACTED,
        "available_balance": REDACTED,
        "nested": {"balances": REDACTED, "authorization": REDACTED, "kept": "yes"},
        "token_id": "7f3k2m9q",
    }


def test_account_numbers_keep_their_last_four_characters() -> None:
    details = {
        "account": "DE89370400440532013000",
        "from_account": "12345678",
        "to_account_id": "87654321",
        "debtor_iban": "GB29NWBK60161331926819",
        "counterparty": "99990000",
        "accounts": ["11112222", "33334444"],
        "account_number": 55556666,
        "short_account": "12",
        "amount": "125.50 EUR",
    }
    assert redact(details) == {
        "account": "****3000",
        "from_account": "****5678",
        "to_account_id": "****4321",
        "debtor_iban": "****6819",
        "counterparty": "****0000",
        "accounts": ["****2222", "****4444"],
        "account_number": "****6666",
        "short_account": "****",
        "amount": "125.50 EUR",
    }
    assert mask_account("1234") == "****"


def test_card_numbers_in_free_text_are_masked() -> None:
    assert redact({"memo": "paid with 4111 1111 1111 1111 today"}) == {
        "memo": "paid with ****1111 today"
    }
    assert redact({"memo": "invoice 1234567890123"}) == {"memo": "invoice 1234567890123"}


def test_values_become_plain_json() -> None:
    at = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    assert redact({
        "amount": Decimal("125.50"), "at": at, "on": date(2026, 3, 2), "colour": Colour.RED,
        "float": 0.1, "flag": True, "n": 3, "none": None, "tuple": (1, 2),
    }) == {
        "amount": "125.50", "at": "2026-03-02T09:30:00+00:00", "on": "2026-03-02",
        "colour": "red", "float": "0.1", "flag": True, "n": 3, "none": None, "tuple": [1, 2],
    }  # fmt: skip


def test_changes_lists_the_changed_added_and_removed_keys_only() -> None:
    before = {"spec": "daily:22:00", "paused": False, "zone": "UTC", "gone": 1}
    after = {"spec": "daily:23:00", "paused": False, "zone": "UTC", "new": 2}
    assert changes(before, after) == {
        "before": {"spec": "daily:22:00", "new": None, "gone": 1},
        "after": {"spec": "daily:23:00", "new": 2, "gone": None},
    }
    assert changes(before, before) == {"before": {}, "after": {}}
