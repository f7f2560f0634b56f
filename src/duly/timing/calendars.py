"""Business-day calendars: weekends plus the holidays of a rail, market or country.

A calendar code is one of:

- ``None`` or ``"WEEKENDS"``: Saturdays and Sundays only, no holidays;
- a financial calendar known to the ``holidays`` package, e.g. ``"XECB"`` (ECB/TARGET,
  also ``"ECB"``/``"TAR"``), ``"NYSE"``/``"XNYS"``, ``"XLON"``, ``"FED"``/``"XFED"``;
  :func:`financial_calendar_codes` lists them for the installed version;
- an ISO 3166 country code with an optional subdivision: ``"US"``, ``"DE"``,
  ``"GB-ENG"``, ``"DE-BY"``, ``"US-NY"``.

The calendar to use is the payment rail's (TARGET for SEPA, Bacs for UK Direct Debit,
the Fed for ACH), not the country's public holidays: see finance-rules.md §1.3.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date, timedelta
from functools import lru_cache

import holidays

from duly.timing.errors import SpecError

__all__ = [
    "WEEKENDS",
    "BusinessCalendar",
    "financial_calendar_codes",
    "load_calendar",
]

#: Code of the calendar with weekends only.
WEEKENDS = "WEEKENDS"

_ONE_DAY = timedelta(days=1)
#: How far :meth:`BusinessCalendar.next_business_day` looks before giving up.
_MAX_SCAN_DAYS = 400

HolidaySource = Callable[[int], Iterable[date]]


class BusinessCalendar:
    """Which dates are business days: not a weekend day and not a holiday.

    :param code: the calendar's code, for messages and equality.
    :param holidays_of_year: returns the holidays of one year (called once per year,
        then cached); ``None`` for no holidays.
    :param weekend: weekday numbers that are never business days (Monday is 0).
    :param extra_holidays: dates closed in addition to the source (manual overrides).
    :param extra_business_days: dates open although the source says holiday.
    """

    __slots__ = ("_by_year", "_extra_business", "_extra_holidays", "_source", "_weekend", "code")

    def __init__(
        self,
        code: str,
        holidays_of_year: HolidaySource | None = None,
        *,
        weekend: Iterable[int] = (5, 6),
        extra_holidays: Iterable[date] = (),
        extra_business_days: Iterable[date] = (),
    ) -> None:
        self.code = code
        self._source = holidays_of_year
        self._weekend = frozenset(weekend)
        self._extra_holidays = frozenset(extra_holidays)
        self._extra_business = frozenset(extra_business_days)
        self._by_year: dict[int, frozenset[date]] = {}

    def __repr__(self) -> str:
        return f"BusinessCalendar({self.code!r})"

    def holidays_in(self, year: int) -> frozenset[date]:
        """The holidays of ``year`` (weekends not included unless the source lists them)."""
        found = self._by_year.get(year)
        if found is None:
            source = frozenset(self._source(year)) if self._source is not None else frozenset()
            extra = {d for d in self._extra_holidays if d.year == year}
            found = (source | extra) - self._extra_business
            self._by_year[year] = found
        return found

    def is_holiday(self, day: date) -> bool:
        """Whether ``day`` is a holiday of this calendar (whatever its weekday)."""
        return day in self.holidays_in(day.year)

    def is_business_day(self, day: date) -> bool:
        """Whether ``day`` is a business day: not a weekend day and not a holiday."""
        if day in self._extra_business:
            return True
        return day.weekday() not in self._weekend and day not in self.holidays_in(day.year)

    def next_business_day(self, day: date) -> date:
        """The first business day strictly after ``day``."""
        return self._scan(day, _ONE_DAY)

    def previous_business_day(self, day: date) -> date:
        """The last business day strictly before ``day``."""
        return self._scan(day, -_ONE_DAY)

    def _scan(self, day: date, step: timedelta) -> date:
        candidate = day
        for _ in range(_MAX_SCAN_DAYS):
            candidate += step
            if self.is_business_day(candidate):
                return candidate
        raise ValueError(
            f"calendar {self.code} has no business day within {_MAX_SCAN_DAYS} days of {day}"
        )


@lru_cache(maxsize=1)
def financial_calendar_codes() -> frozenset[str]:
    """Codes of the financial (market/rail) calendars the installed ``holidays`` provides."""
    return frozenset(holidays.list_supported_financial())


@lru_cache(maxsize=1)
def _countries() -> dict[str, list[str]]:
    supported: dict[str, list[str]] = holidays.list_supported_countries()
    return supported


@lru_cache(maxsize=256)
def load_calendar(code: str | None) -> BusinessCalendar:
    """The business calendar for ``code`` (see the module docstring), cached per code.

    :raises SpecError: if the code is not a known financial calendar or country/subdivision.
    """
    if code is not None and not isinstance(code, str):
        raise SpecError(f"unknown calendar {code!r}: a calendar code is a string such as 'GB-ENG'")
    if code is None or code.strip().upper() in ("", WEEKENDS):
        return BusinessCalendar(WEEKENDS)
    text = code.strip()
    market = text.upper()
    if market in financial_calendar_codes():
        return BusinessCalendar(market, _financial_source(market))
    country, _, subdiv = text.partition("-")
    country = country.upper()
    subdivisions = _countries().get(country)
    if subdivisions is None:
        raise SpecError(
            f"unknown calendar {code!r}: use a country code with optional subdivision "
            "(e.g. 'US', 'DE', 'GB-ENG'), a financial calendar (e.g. 'XECB' for TARGET, "
            "'NYSE'), or 'WEEKENDS'"
        )
    if not subdiv:
        return BusinessCalendar(country, _country_source(country, None))
    chosen = subdiv if subdiv in subdivisions else subdiv.upper()
    if chosen not in subdivisions:
        allowed = ", ".join(subdivisions[:30]) + (", …" if len(subdivisions) > 30 else "")
        raise SpecError(f"unknown calendar {code!r}: subdivisions of {country} are {allowed}")
    return BusinessCalendar(f"{country}-{chosen}", _country_source(country, chosen))


def _financial_source(market: str) -> HolidaySource:
    def holidays_of_year(year: int) -> Iterable[date]:
        found: Iterable[date] = holidays.financial_holidays(market, years=year).keys()
        return found

    return holidays_of_year


def _country_source(country: str, subdiv: str | None) -> HolidaySource:
    def holidays_of_year(year: int) -> Iterable[date]:
        found: Iterable[date] = holidays.country_holidays(country, subdiv=subdiv, years=year).keys()
        return found

    return holidays_of_year
