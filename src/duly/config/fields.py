"""Value types shared by the settings models: time zones, HH:MM times, schedule names, reminder offsets."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError

_HHMM = re.compile(r"(?:[01][0-9]|2[0-3]):[0-5][0-9]")


_SCHEDULE_NAME = re.compile(r"[A-Za-z0-9_.:-]+")


def check_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise PydanticCustomError(
            "iana_timezone", "unknown timezone: expected an IANA name such as UTC or Europe/London"
        ) from None
    return value


def check_hhmm(value: Any) -> Any:
    if not isinstance(value, str) or not _HHMM.fullmatch(value):
        raise PydanticCustomError("hh_mm", "expected HH:MM, 00:00–23:59")
    return value


def check_schedule_name(value: str) -> str:
    if not _SCHEDULE_NAME.fullmatch(value):
        raise PydanticCustomError(
            "schedule_name", "must be non-empty and use only letters, digits and _ . : -"
        )
    return value


def none_is_empty(value: Any) -> Any:
    """An empty YAML section (``engine:`` with every child commented out) reads as ``{}``."""
    return {} if value is None else value


IanaZone = Annotated[str, AfterValidator(check_zone)]

"""A timezone name ``zoneinfo`` knows (``UTC``, ``Europe/London``)."""


NonEmptyStr = Annotated[str, Field(min_length=1)]


_OFFSET = re.compile(r"^([1-9][0-9]{0,3})([mhdw])$")


def check_offset(value: Any) -> Any:
    if not isinstance(value, str) or not _OFFSET.fullmatch(value):
        raise PydanticCustomError(
            "reminder_offset", "expected a count and a unit: 30m, 1h, 1d or 2w"
        )
    return value


ReminderOffset = Annotated[str, BeforeValidator(check_offset)]


NotifyChannel = Literal["email", "webhook", "sms", "push", "log"]


HhMm = Annotated[str, BeforeValidator(check_hhmm)]
