"""Money: Decimal at the edges, integer minor units inside, never a float."""

from __future__ import annotations

from decimal import Decimal

import pytest

from duly.banking.money import (
    MoneyError,
    check_currency,
    format_money,
    from_minor,
    mask_account,
    to_minor,
)


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("12.34", "USD", 1234),
        ("12.3", "eur", 1230),
        ("0.01", "GBP", 1),
        (Decimal("1000"), "JPY", 1000),
        ("1.234", "KWD", 1234),
        (7, "USD", 700),
        ("-5.00", "USD", -500),
    ],
)
def test_amounts_become_exact_minor_units(amount: object, currency: str, minor: int) -> None:
    assert to_minor(amount, currency) == minor  # type: ignore[arg-type]


@pytest.mark.parametrize("amount", ["10.001", "abc", "NaN", "Infinity", 1.5, True, "1e30", ""])
def test_bad_amounts_are_refused_not_rounded(amount: object) -> None:
    with pytest.raises(MoneyError):
        to_minor(amount, "USD")  # type: ignore[arg-type]


def test_unknown_currency_is_refused() -> None:
    with pytest.raises(MoneyError, match="unknown currency"):
        check_currency("XXX")


def test_minor_units_back_to_decimal_and_display() -> None:
    assert from_minor(1234, "USD") == Decimal("12.34")
    assert str(from_minor(5, "USD")) == "0.05"
    assert str(from_minor(1000, "JPY")) == "1000"
    assert format_money(123456, "usd") == "USD 1,234.56"


def test_account_numbers_are_masked_to_the_last_four() -> None:
    assert mask_account("GB29NWBK60161331926819") == "****6819"
    assert mask_account("123") == "****"
