"""Reminder times (pure): offsets, calendar days across DST, quiet hours, skips."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from duly.operations.reminders.planning import offset_instant, parse_offset, plan_times, quiet_move

NY = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def by(planned: list, channel: str) -> dict[str, datetime | None]:
    return {p.offset: p.send_at for p in planned if p.channel == channel}


def test_offsets_parse() -> None:
    assert parse_offset("3d") == (3, "d") and parse_offset("90m") == (90, "m")
    for bad in ("0d", "3", "d", "1y", "-1h"):
        with pytest.raises(ValueError):
            parse_offset(bad)


def test_days_are_calendar_days_and_hours_elapsed_time_across_dst() -> None:
    # Tue 2026-03-10 10:00 in New York (EDT, after the 8 March spring-forward).
    execute_at = datetime(2026, 3, 10, 10, 0, tzinfo=NY).astimezone(UTC)
    three_days = offset_instant(execute_at, "3d", NY)
    assert three_days.astimezone(NY).replace(tzinfo=None) == datetime(2026, 3, 7, 10, 0)
    assert execute_at - three_days == timedelta(days=2, hours=23)  # an hour was skipped
    assert execute_at - offset_instant(execute_at, "1h", NY) == timedelta(hours=1)


def test_a_wall_time_missing_on_the_reminder_day_is_shifted_by_the_gap() -> None:
    # 02:30 on 9 March exists; 1 day before is 8 March 02:30, inside the 02:00→03:00 gap.
    execute_at = datetime(2026, 3, 9, 2, 30, tzinfo=NY).astimezone(UTC)
    moved = offset_instant(execute_at, "1d", NY).astimezone(NY)
    assert (moved.hour, moved.minute) == (3, 30) and moved.day == 8


def test_quiet_hours_move_earlier_never_later() -> None:
    evening = datetime(2026, 6, 1, 22, 15, tzinfo=LONDON)
    assert quiet_move(evening, LONDON, "21:00", "08:00") == datetime(
        2026, 6, 1, 20, 59, tzinfo=LONDON
    )
    early = datetime(2026, 6, 2, 7, 0, tzinfo=LONDON)
    assert quiet_move(early, LONDON, "21:00", "08:00") == datetime(
        2026, 6, 1, 20, 59, tzinfo=LONDON
    )
    noon = datetime(2026, 6, 2, 12, 0, tzinfo=LONDON)
    assert quiet_move(noon, LONDON, "21:00", "08:00") == noon
    assert quiet_move(datetime(2026, 6, 2, 8, 0, tzinfo=LONDON), LONDON, "21:00", "08:00").hour == 8


def test_plan_for_a_morning_payment() -> None:
    # Executes Thu 2026-06-04 08:30 London; created long before.
    execute_at = datetime(2026, 6, 4, 8, 30, tzinfo=LONDON).astimezone(UTC)
    planned = plan_times(execute_at, "Europe/London", ["3d", "1d", "1h"], ["email", "sms"],
                         not_before=utc(2026, 5, 1))  # fmt: skip
    email, sms = by(planned, "email"), by(planned, "sms")
    local = {k: v.astimezone(LONDON).strftime("%a %H:%M") for k, v in email.items() if v}
    assert local == {"3d": "Mon 08:30", "1d": "Wed 08:30", "1h": "Thu 07:30"}
    # 07:30 is quiet for SMS: moved to 20:59 the evening before, still after the 1d one.
    assert sms["1h"] is not None
    assert sms["1h"].astimezone(LONDON).strftime("%a %H:%M") == "Wed 20:59"
    assert all(t is None or t < execute_at for t in [*email.values(), *sms.values()])


def test_quiet_move_clashing_with_an_earlier_reminder_is_dropped() -> None:
    # Executes 06:00: 1d → 06:00 the day before → moved to 20:59 two days before;
    # 1h → 05:00 → moved to 20:59 the day before; 2h → 04:00 → also 20:59: a clash.
    execute_at = datetime(2026, 6, 4, 6, 0, tzinfo=LONDON).astimezone(UTC)
    planned = plan_times(execute_at, "Europe/London", ["1h", "2h"], ["sms"],
                         not_before=utc(2026, 5, 1))  # fmt: skip
    reasons = {p.offset: p.reason for p in planned}
    assert (
        reasons["2h"] is None and reasons["1h"] == "quiet hours: clashes with an earlier reminder"
    )


def test_offsets_already_past_at_creation_are_skipped() -> None:
    execute_at = utc(2026, 6, 4, 12)
    planned = plan_times(execute_at, "UTC", ["3d", "1d", "1h"], ["email"],
                         not_before=utc(2026, 6, 2, 12, 30))  # fmt: skip
    assert by(planned, "email") == {
        "3d": None,
        "1d": utc(2026, 6, 3, 12),
        "1h": utc(2026, 6, 4, 11),
    }
    assert {p.offset: p.reason for p in planned}["3d"] == "already past"


def test_quiet_move_before_the_plan_is_dropped_not_sent_late() -> None:
    # Created at 22:00 for a payment at 09:00 next day: the SMS 1h reminder (08:00) is fine,
    # a 10h one (23:00) would move to 20:59 — before the creation: dropped.
    execute_at = utc(2026, 6, 4, 9)
    planned = plan_times(execute_at, "UTC", ["10h", "1h"], ["sms", "email"],
                         not_before=utc(2026, 6, 3, 22))  # fmt: skip
    assert by(planned, "sms") == {"10h": None, "1h": utc(2026, 6, 4, 8)}
    assert by(planned, "email") == {"10h": utc(2026, 6, 3, 23), "1h": utc(2026, 6, 4, 8)}
