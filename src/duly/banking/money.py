"""Money: ``Decimal`` at the edges, integer minor units inside, ISO 4217 currency codes.

Nothing here accepts or returns a ``float``. An amount with more decimals than its
currency has (``"10.001"`` USD) is refused rather than rounded.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

__all__ = [
    "MINOR_UNITS",
    "MoneyError",
    "check_currency",
    "format_money",
    "from_minor",
    "mask_account",
    "mask_accounts_in",
    "to_minor",
]

#: ISO 4217 minor-unit exponents of the currencies duly accepts.
MINOR_UNITS: dict[str, int] = {
    "AUD": 2, "BHD": 3, "BRL": 2, "CAD": 2, "CHF": 2, "CLP": 0, "CNY": 2, "CZK": 2,
    "DKK": 2, "EUR": 2, "GBP": 2, "HKD": 2, "HUF": 2, "ILS": 2, "INR": 2, "ISK": 0,
    "JOD": 3, "JPY": 0, "KRW": 0, "KWD": 3, "MXN": 2, "NOK": 2, "NZD": 2, "OMR": 3,
    "PLN": 2, "RON": 2, "SEK": 2, "SGD": 2, "TND": 3, "TRY": 2, "USD": 2, "ZAR": 2,
}  # fmt: skip

#: Largest amount in minor units the ledger stores (fits a signed 64-bit column with room to add).
MAX_MINOR = 10**15


class MoneyError(ValueError):
    """An amount or currency that cannot be used; the message names the bad part."""


def check_currency(currency: str) -> str:
    """The ISO 4217 code ``currency`` (upper case).

    :raises MoneyError: if duly does not know it.
    """
    code = currency.strip().upper()
    if code not in MINOR_UNITS:
        raise MoneyError(
            f"unknown currency {currency!r}: use an ISO 4217 code such as USD, EUR, GBP"
        )
    return code


def to_minor(amount: Decimal | str | int, currency: str) -> int:
    """``amount`` in ``currency`` as an integer number of minor units (``"12.34"`` USD → 1234).

    :raises MoneyError: not a finite number, more decimals than the currency has, or too large.
    """
    exponent = MINOR_UNITS[check_currency(currency)]
    value = _decimal(amount)
    if not value.is_finite():
        raise MoneyError(f"amount {amount!r} is not a finite number")
    scaled = value.scaleb(exponent)
    if scaled != scaled.to_integral_value():
        raise MoneyError(
            f"amount {amount!r} has more than {exponent} decimals for {currency.upper()}"
        )
    minor = int(scaled)
    if abs(minor) > MAX_MINOR:
        raise MoneyError(f"amount {amount!r} is too large")
    return minor


def _decimal(amount: object) -> Decimal:
    if isinstance(amount, Decimal):
        return amount
    if isinstance(amount, bool) or not isinstance(amount, str | int):
        raise MoneyError(f"amount {amount!r}: pass a decimal string, int or Decimal, never a float")
    try:
        return Decimal(str(amount).strip())
    except InvalidOperation:
        raise MoneyError(f"amount {amount!r} is not a decimal number") from None


def from_minor(minor: int, currency: str) -> Decimal:
    """``minor`` units of ``currency`` as a ``Decimal`` with the currency's decimals (1234 USD → 12.34)."""
    exponent = MINOR_UNITS[check_currency(currency)]
    return Decimal(minor).scaleb(-exponent).quantize(Decimal(1).scaleb(-exponent))


def format_money(minor: int, currency: str) -> str:
    """A display string with the currency: ``"USD 1,234.56"``."""
    code = check_currency(currency)
    return f"{code} {from_minor(minor, code):,}"


def mask_account(account_id: str) -> str:
    """An account id for display and logs: at most its last four characters (``****1234``)."""
    tail = account_id[-4:] if len(account_id) > 4 else ""
    return f"****{tail}"


def mask_accounts_in(text: str, *account_ids: str) -> str:
    """``text`` with every occurrence of each of ``account_ids`` masked.

    Idempotency keys and references are chosen by callers, who may build them from an
    account number (``fund-ACC-0001``); what is recorded or shown of them must not carry it.
    """
    for account_id in sorted({a for a in account_ids if a}, key=len, reverse=True):
        if account_id in text:
            text = text.replace(account_id, mask_account(account_id))
    return text
