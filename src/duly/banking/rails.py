"""Payment rails and their business-day calendars (finance-rules.md §1.2–1.3).

A payment's execution date is adjusted against its *rail's* calendar, not the country's
public holidays: the Fed for US ACH, Bacs (England & Wales bank holidays) for UK standing
orders and Direct Debit, TARGET for SEPA.
"""

from __future__ import annotations

from duly.timing.calendars import BusinessCalendar, load_calendar

__all__ = ["RAILS", "calendar_code", "rail_calendar"]

#: Rail name → calendar code understood by :func:`duly.timing.calendars.load_calendar`.
RAILS: dict[str, str] = {
    "US-FED": "FED",  # Federal Reserve (ACH, Fedwire) holidays
    "GB-BACS": "GB-ENG",  # Bacs non-processing days: England & Wales bank holidays
    "TARGET": "XECB",  # TARGET2 closing days (SEPA)
}


def calendar_code(rail_or_calendar: str | None) -> str | None:
    """The calendar code of a rail name (``US-FED``, ``GB-BACS``, ``TARGET``, case-insensitive).

    Anything else is taken as a calendar code already (``XECB``, ``GB-ENG``, ``WEEKENDS``) or
    ``None`` for weekends only.
    """
    if rail_or_calendar is None:
        return None
    return RAILS.get(rail_or_calendar.strip().upper(), rail_or_calendar)


def rail_calendar(rail_or_calendar: str | None) -> BusinessCalendar:
    """The business calendar of a rail or calendar code.

    :raises duly.timing.errors.SpecError: for a code no calendar has.
    """
    return load_calendar(calendar_code(rail_or_calendar))
