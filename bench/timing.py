"""How many fire times per second duly.timing computes. Printed, not asserted.

Two figures per spec, each the median of 5 repeats (the first repeat also warms the
per-zone transition cache, as a running scheduler would):

- ``next_fire/s``: ``next_fire`` from 10,000 fixed pseudo-random instants in 2026–2035,
  the scheduler's hot path (the next fire after "now");
- ``fires()/s``: successive fires from 2026-01-01, up to 20,000 or until 2036.

Run: ``.venv/bin/python bench/timing.py``
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial

from duly.timing import Trigger, parse_trigger

ZONE = "Europe/London"
SPECS = [
    "cron:*/5 * * * *",
    "cron:0 22 * * 1-5",
    "rrule:FREQ=MONTHLY;BYMONTHDAY=-1@09:00",
    "daily:22:00",
]
REPEATS = 5
QUERIES = 10_000
SERIES = 20_000
START = datetime(2026, 1, 1, tzinfo=UTC)
STOP = datetime(2036, 1, 1, tzinfo=UTC)


def query_points() -> list[datetime]:
    rng = random.Random(20260101)
    span = int((STOP - START).total_seconds())
    return [START + timedelta(seconds=rng.randrange(span)) for _ in range(QUERIES)]


def rate_next_fire(trigger: Trigger, points: list[datetime]) -> float:
    began = time.perf_counter()
    for point in points:
        trigger.next_fire(point)
    return len(points) / (time.perf_counter() - began)


def rate_fires(trigger: Trigger) -> float:
    count = 0
    began = time.perf_counter()
    for fire in trigger.fires(START):
        count += 1
        if count >= SERIES or fire >= STOP:
            break
    return count / (time.perf_counter() - began)


def median_rate(measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(REPEATS))


def main() -> None:
    print(f"machine: {platform.platform()} · {platform.machine()} · {os.cpu_count()} CPUs")
    print(f"python:  {sys.version.split()[0]} ({platform.python_implementation()})")
    print(f"zone:    {ZONE} · median of {REPEATS} repeats\n")
    points = query_points()
    header = f"{'spec':42} {'next_fire/s':>12} {'fires()/s':>12}"
    print(header)
    print("-" * len(header))
    for spec in SPECS:
        trigger = parse_trigger(spec, ZONE)
        single = median_rate(partial(rate_next_fire, trigger, points))
        series = median_rate(partial(rate_fires, trigger))
        print(f"{spec:42} {single:12,.0f} {series:12,.0f}")


if __name__ == "__main__":
    main()
