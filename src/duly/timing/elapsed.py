"""The next fire of a schedule that follows elapsed time through DST changes.

Used by cron specs that fire more often than hourly (see :mod:`duly.timing.cron`):
they fire at every real instant whose local wall time matches, so both passes of a
repeated hour fire and nothing fires for wall times that a gap skips. Between two
offset changes wall time and instant move together, so the search walks from one
offset change to the next.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from duly.timing.cron import CronExpr
from duly.timing.dst import first_transition, wall_of

__all__ = ["next_elapsed_fire"]


def next_elapsed_fire(cron: CronExpr, after: datetime, zone: ZoneInfo) -> datetime | None:
    """The first instant strictly after the aware ``after`` whose local wall time matches."""
    point, inclusive = after, False
    while True:
        wall, offset = wall_of(point, zone)
        match = cron.next_wall(wall, inclusive=inclusive)
        if match is None:
            return None
        candidate = (match - offset).replace(tzinfo=UTC)
        change = first_transition(zone, point, candidate)
        if change is None:
            return candidate
        # The offset changes before the candidate: continue from the change, whose own
        # instant may match under the new offset.
        point, inclusive = change, True
