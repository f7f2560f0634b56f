"""What an audit event may say: no balance, no full account number, no secret. Pure.

Amounts of operations stay (an auditor must see what a transfer moved); balances do not.
Values under secret or balance keys become ``"[redacted]"``; values under account keys
keep their last four characters (``****1234``); card numbers inside any text are masked
(:func:`duly.logs.mask_pans`). :func:`changes` gives the before/after of the fields that
changed, the usual shape of an update's details.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from duly.logs import mask_pans

__all__ = ["REDACTED", "changes", "mask_account", "redact"]

REDACTED = "[redacted]"

_SECRET_WORDS = frozenset(
    {
        "balance",
        "balances",
        "available",
        "password",
        "secret",
        "token",
        "authorization",
        "api_key",
        "pan",
        "cvv",
        "card_number",
        "database_url",
        "hash",
    }
)
_ACCOUNT_WORDS = frozenset(
    {"account", "accounts", "account_id", "account_ids", "account_number", "iban", "ibans",
     "counterparty"}
)  # fmt: skip
_ACCOUNT_ENDINGS = ("_account_id", "_account_ids", "_account_number", "_iban", "_ibans")


def mask_account(value: str) -> str:
    """An account number reduced to its last four characters (``****1234``)."""
    tail = value[-4:] if len(value) > 4 else ""
    return f"****{tail}"


def _words(key: str) -> tuple[str, str]:
    k = key.lower()
    last = k.rsplit("_", 1)[-1]
    return k, last


def _is_secret(key: str) -> bool:
    k, last = _words(key)
    return k in _SECRET_WORDS or last in _SECRET_WORDS or k.endswith("_balance")


def _is_account(key: str) -> bool:
    k, last = _words(key)
    return k in _ACCOUNT_WORDS or last in ("account", "accounts") or k.endswith(_ACCOUNT_ENDINGS)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return _plain(value.value)
    return value


def _clean(key: str | None, value: Any) -> Any:
    value = _plain(value)
    if key is not None and _is_secret(key):
        return REDACTED
    if isinstance(value, Mapping):
        return {str(k): _clean(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(key, v) for v in value]
    if isinstance(value, str):
        if key is not None and _is_account(key):
            return mask_account(value)
        return mask_pans(value)
    if isinstance(value, int) and not isinstance(value, bool) and key is not None:
        # An account number given as a number is still an account number.
        return mask_account(str(value)) if _is_account(key) else value
    if isinstance(value, float):
        # Money is never a float; a float in details is a bug upstream, kept as text.
        return repr(value)
    return value


def redact(details: Mapping[str, Any]) -> dict[str, Any]:
    """``details`` made fit for the audit trail (JSON-able, secrets and balances removed)."""
    cleaned = _clean(None, details)
    assert isinstance(cleaned, dict)
    return cleaned


def changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """``{"before": {...}, "after": {...}}`` of the keys whose value differs."""
    keys = [k for k in after if before.get(k) != after.get(k)]
    keys += [k for k in before if k not in after]
    return {
        "before": {k: before.get(k) for k in keys},
        "after": {k: after.get(k) for k in keys},
    }
