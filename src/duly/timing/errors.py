"""The one error type of :mod:`duly.timing`."""

from __future__ import annotations

__all__ = ["SpecError"]


class SpecError(ValueError):
    """A schedule spec, timezone, calendar, convention or option that cannot be used.

    The message is one line that names the bad part and says what is allowed, e.g.
    ``invalid spec 'daily:25:00': hour must be 00–23`` or ``unknown timezone 'Mars/Base'``.
    """
