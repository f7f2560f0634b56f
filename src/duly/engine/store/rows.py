"""Database rows to the store's value types, the column lists they are read with, and the status sets queries filter on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import literal_column

from duly.engine.states import ACTIVE, CLAIMABLE, RunStatus
from duly.engine.store.base import AlertRow, RunRow, ScheduleRow
from duly.engine.store.schema import runs
from duly.engine.store.types import UTCDateTime

CLAIMABLE_VALUES = [s.value for s in CLAIMABLE]


#: The claim index's predicate, word for word: SQLite uses a partial index only for a query
#: whose WHERE contains its predicate with the same literals (bound parameters do not
#: count), and a PostgreSQL generic plan likewise. Without it, SQLite sorted every
#: claimable run on each claim.
IS_CLAIMABLE = runs.c.status.in_([literal_column("'queued'"), literal_column("'retrying'")])

if set(CLAIMABLE_VALUES) != {
    "queued",
    "retrying",
}:  # pragma: no cover - states and index moved apart
    raise RuntimeError("the claim filter must match ix_runs_claim's predicate")


ACTIVE_VALUES = [s.value for s in ACTIVE]


RUN_FIELDS = [f.name for f in fields(RunRow)]


SCHEDULE_FIELDS = [f.name for f in fields(ScheduleRow)]


RUN_TIMES = tuple(
    i for i, name in enumerate(RUN_FIELDS) if isinstance(runs.c[name].type, UTCDateTime)
)


RUN_STATUS = RUN_FIELDS.index("status")


def pg_run_row(row: Sequence[Any]) -> RunRow:
    """A :class:`RunRow` from a row of :data:`_PG_TAKE_LEASES` (psycopg loads json itself)."""
    values = list(row)
    for i in RUN_TIMES:
        if values[i] is not None:
            values[i] = values[i].astimezone(UTC)
    values[RUN_STATUS] = RunStatus(values[RUN_STATUS])
    return RunRow(*values)


def aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite aggregates lose the column type
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def run_row(row: Any) -> RunRow:
    m = row._mapping
    data = {name: m[name] for name in RUN_FIELDS}
    data["status"] = RunStatus(data["status"])
    return RunRow(**data)


def schedule_row(row: Any) -> ScheduleRow:
    m = row._mapping
    return ScheduleRow(**{name: m[name] for name in SCHEDULE_FIELDS})


def alert_row(row: Any) -> AlertRow:
    m = row._mapping
    return AlertRow(**{f.name: m[f.name] for f in fields(AlertRow)})


def schedule_definition(row: ScheduleRow) -> tuple[Any, ...]:
    return (
        row.job_name,
        row.spec,
        row.timezone,
        row.calendar,
        row.adjust,
        row.dst_gap,
        row.dst_repeat,
        row.start_at,
        row.end_at,
    )
