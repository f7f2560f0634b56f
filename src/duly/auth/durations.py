"""Lifetimes written the short way: ``90d``, ``12h``, ``30m``."""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["MAX_LIFETIME", "parse_duration"]

#: A bound well inside ``datetime``'s range, so ``now + lifetime`` can never overflow.
MAX_LIFETIME = timedelta(days=3650)

_PATTERN = re.compile(r"(\d{1,7})([dhm])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def parse_duration(text: str) -> timedelta:
    """``<n>d``, ``<n>h`` or ``<n>m`` as a positive :class:`timedelta` of at most ten years.

    :raises ValueError: for any other text, zero, or more than :data:`MAX_LIFETIME`.
    """
    match = _PATTERN.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"bad duration {text!r}: expected a number and d, h or m, e.g. 90d")
    amount, unit = int(match.group(1)), match.group(2)
    value = timedelta(**{_UNITS[unit]: amount})
    if value <= timedelta(0):
        raise ValueError(f"bad duration {text!r}: it must be longer than zero")
    if value > MAX_LIFETIME:
        raise ValueError(f"bad duration {text!r}: at most {MAX_LIFETIME.days}d")
    return value
