"""Pure time logic for duly: triggers, RRULE, DST policy, business-day calendars. No I/O.

Nothing here reads the clock: every question takes the instant it is about. This
package imports nothing else of duly. The rules are in ``docs/time-semantics.md``.

>>> from datetime import datetime, UTC
>>> trigger = parse_trigger("daily:02:30", "America/New_York")
>>> trigger.next_fire(datetime(2026, 3, 8, 5, 0, tzinfo=UTC)).isoformat()   # the gap day
'2026-03-08T07:30:00+00:00'
"""

from __future__ import annotations

from duly.timing.business_days import Convention as Convention
from duly.timing.business_days import adjust as adjust
from duly.timing.business_days import parse_convention as parse_convention
from duly.timing.calendars import BusinessCalendar as BusinessCalendar
from duly.timing.calendars import financial_calendar_codes as financial_calendar_codes
from duly.timing.calendars import load_calendar as load_calendar
from duly.timing.dates import LAST_DAY as LAST_DAY
from duly.timing.dates import clamp_date as clamp_date
from duly.timing.dates import days_in_month as days_in_month
from duly.timing.dates import nth_occurrence_date as nth_occurrence_date
from duly.timing.dst import GapPolicy as GapPolicy
from duly.timing.dst import RepeatPolicy as RepeatPolicy
from duly.timing.errors import SpecError as SpecError
from duly.timing.options import TriggerOptions as TriggerOptions
from duly.timing.spec import parse_trigger as parse_trigger
from duly.timing.spec import trigger_from_json as trigger_from_json
from duly.timing.triggers import JSON_VERSION as JSON_VERSION
from duly.timing.triggers import AtTrigger as AtTrigger
from duly.timing.triggers import BaseTrigger as BaseTrigger
from duly.timing.triggers import CalendarTrigger as CalendarTrigger
from duly.timing.triggers import CronTrigger as CronTrigger
from duly.timing.triggers import EveryTrigger as EveryTrigger
from duly.timing.triggers import Trigger as Trigger

__all__ = [
    "JSON_VERSION",
    "LAST_DAY",
    "AtTrigger",
    "BaseTrigger",
    "BusinessCalendar",
    "CalendarTrigger",
    "Convention",
    "CronTrigger",
    "EveryTrigger",
    "GapPolicy",
    "RepeatPolicy",
    "SpecError",
    "Trigger",
    "TriggerOptions",
    "adjust",
    "clamp_date",
    "days_in_month",
    "financial_calendar_codes",
    "load_calendar",
    "nth_occurrence_date",
    "parse_convention",
    "parse_trigger",
    "trigger_from_json",
]
