"""Templates: locale-formatted money and dates, masked accounts, escaped HTML."""

from __future__ import annotations

import pytest

from duly.notify.templates import TemplateError, Templates

CONTEXT = {
    "kind": "transfer",
    "amount_minor": 123456,
    "currency": "EUR",
    "from_account": "DE89370400440532013000",
    "to_account": "GB29NWBK60161331926819",
    "memo": "<b>rent</b>",
    "execute_at": "2026-03-09T14:00:00+00:00",
    "offset": "1d",
}


def test_english_reminder() -> None:
    r = Templates().render("payment_reminder", CONTEXT, locale="en", timezone="America/New_York")
    assert r.subject == "Reminder: €1,234.56 payment on Mar 9, 2026, 10:00:00 AM EDT"
    assert "****6819" in r.text and "****3000" in r.text
    assert "GB29NWBK60161331926819" not in r.text + (r.html or "") + r.short
    assert r.html is not None and "&lt;b&gt;rent&lt;/b&gt;" in r.html
    assert "<b>rent</b>" in r.text  # plain text is not escaped


def test_german_reminder_and_fallback_to_language_and_default() -> None:
    r = Templates().render("payment_reminder", CONTEXT, locale="de", timezone="Europe/Berlin")
    assert r.subject == "Erinnerung: Zahlung über 1.234,56 € am 09.03.2026, 15:00:00 CET"
    assert r.html is None  # no German HTML: plain text only, never English HTML
    austrian = Templates().render("payment_reminder", CONTEXT, locale="de-AT", timezone="UTC")
    assert "€ 1.234,56" in austrian.subject and austrian.subject.startswith("Erinnerung")
    # No German payment_failed: English, with German number formatting.
    failed = Templates().render(
        "payment_failed",
        {"amount": "10.00", "currency": "USD", "scheduled_for": "2026-03-09T14:00:00+00:00",
         "attempts": 3, "reason_code": "INSUFFICIENT_FUNDS", "reason_class": "transient",
         "suggested_action": "Top up the account."},
        locale="de", timezone="UTC",
    )  # fmt: skip
    assert failed.subject == "Your 10,00 $ payment could not be made"
    assert "We will not try this payment again." in failed.text


def test_zero_decimal_currency_and_missing_fields() -> None:
    ctx = {**CONTEXT, "currency": "JPY", "amount_minor": 5000}
    assert "¥5,000" in Templates().render("payment_reminder", ctx, locale="en").subject
    with pytest.raises(TemplateError):
        Templates().render("payment_reminder", {"currency": "EUR"}, locale="en")
    with pytest.raises(TemplateError):
        Templates().render("no_such_template", {}, locale="en")


LOCALES = ["en", "en_US", "en_IN", "de", "de_AT", "de_CH", "fr", "fr_CH", "es", "pl", "it", "nl",
           "sv", "ja", "ar", "hi", "pt_BR", "ru"]  # fmt: skip
CURRENCIES = ["EUR", "USD", "GBP", "JPY", "CHF", "INR", "BHD", "SEK", "PLN"]
AMOUNTS = ["0", "0.01", "0.99", "5", "10.5", "999.999", "1000", "1001.01", "99999.99",
           "1234567.891", "10000000", "98765432109.87"]  # fmt: skip


def test_compiled_money_formats_match_babel() -> None:
    """The compiled money format is used only where it matches Babel exactly."""
    from decimal import Decimal

    from babel.numbers import format_currency

    from duly.notify.templates import _money, _money_formatter

    compiled = 0
    for locale in LOCALES:
        for currency in CURRENCIES:
            compiled += _money_formatter(currency, locale) is not None
            for text in AMOUNTS:
                expected = format_currency(Decimal(text), currency, locale=locale)
                assert _money(text, currency, locale) == expected, (locale, currency, text)
                assert _money("-" + text, currency, locale) == format_currency(
                    Decimal("-" + text), currency, locale=locale
                )
    assert compiled > len(LOCALES) * len(CURRENCIES) // 2  # most pairs take the fast path


def test_render_only_the_channels_parts_and_cache() -> None:
    from duly.notify.templates import CHANNEL_PARTS

    t = Templates()
    full = t.render("payment_reminder", CONTEXT, locale="en", timezone="UTC")
    sms = t.render("payment_reminder", CONTEXT, locale="en", timezone="UTC",
                   parts=CHANNEL_PARTS["sms"])  # fmt: skip
    assert (sms.subject, sms.short) == (full.subject, full.short)
    assert sms.text == "" and sms.html is None
    again = t.render("payment_reminder", dict(CONTEXT), locale="en", timezone="UTC",
                     parts=CHANNEL_PARTS["sms"])  # fmt: skip
    assert again is sms  # the same context renders once
    other = t.render("payment_reminder", {**CONTEXT, "amount_minor": 1}, locale="en",
                     timezone="UTC", parts=CHANNEL_PARTS["sms"])  # fmt: skip
    assert "€0.01" in other.subject
