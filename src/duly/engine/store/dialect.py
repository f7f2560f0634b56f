"""Statements that differ by dialect: set membership, bulk inserts, raw PostgreSQL calls, advisory lock ids."""

from __future__ import annotations

import functools
import json
import re
import zlib
from collections.abc import Collection, Sequence
from typing import Any

import psycopg
from sqlalchemy import JSON, ColumnElement, Connection, Table, any_, bindparam, func, insert
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError


def any_of(column: Any, values: Collection[Any], *, postgres: bool) -> ColumnElement[bool]:
    """``column IN (values)``; on PostgreSQL ``column = ANY(:array)``.

    One array parameter keeps the statement's text the same for any number of values, so
    the driver parses it once and the server reuses its plan: an expanded ``IN`` of a few
    hundred ids costs more to build and parse than to run.
    """
    result: ColumnElement[bool] = (
        column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
        if postgres
        else column.in_(list(values))
    )
    return result


def pg_execute(conn: Connection, sql: str, params: dict[str, Any]) -> Any:
    """Run a PostgreSQL-only statement, its ``:name`` parameters sent in binary.

    For statements over arrays (``unnest``, ``= ANY``): psycopg's text format quotes and
    escapes every element of an array with a regular expression, which cost more than the
    statement; the binary format does not.
    """
    return conn.exec_driver_sql(_binary_placeholders(sql), params)


def pg_fetch_one(conn: Connection, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
    """:func:`pg_execute` on the driver's own cursor: the first row as psycopg gives it.

    For the hot path: SQLAlchemy's result set-up (column metadata for every call) cost
    more than the statement's round trip.
    """
    raw: Any = conn.connection.dbapi_connection
    try:
        with raw.cursor() as cur:
            cur.execute(_binary_placeholders(sql), params)
            row: tuple[Any, ...] | None = cur.fetchone()
    except psycopg.Error as exc:
        # As SQLAlchemy would: a broken connection leaves the pool, the error is its own.
        lost = bool(raw.closed) or isinstance(exc, psycopg.OperationalError)
        if lost:
            conn.invalidate(exc)
        raise DBAPIError.instance(sql, params, exc, psycopg.Error,
                                  connection_invalidated=lost) from exc  # fmt: skip
    return row


@functools.lru_cache(maxsize=128)
def _binary_placeholders(sql: str) -> str:
    return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)b", sql)


def insert_rows(
    conn: Connection, table: Table, rows: Sequence[dict[str, Any]], *, skip_conflicts: bool = False
) -> None:
    """Insert ``rows`` (dicts with the same keys) into ``table`` with one statement.

    On PostgreSQL: ``INSERT … SELECT … FROM unnest(arrays)`` — one statement whose text does
    not depend on the number of rows, instead of one statement per row (``executemany``),
    whose per-row cost dominated set-based jobs. On SQLite: ``executemany``.
    ``skip_conflicts`` adds ``ON CONFLICT DO NOTHING``.
    """
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        stmt = sqlite_insert(table).on_conflict_do_nothing() if skip_conflicts else insert(table)
        conn.execute(stmt, list(rows))
        return
    names = list(rows[0])
    json_cols = {n for n in names if isinstance(table.c[n].type, JSON)}
    params = {
        f"a{i}": [json.dumps(r[n]) for r in rows] if n in json_cols else [r[n] for r in rows]
        for i, n in enumerate(names)
    }
    pg_execute(conn, _unnest_insert(conn.dialect, table, tuple(names), skip_conflicts), params)


@functools.lru_cache(maxsize=64)
def _unnest_insert(dialect: Any, table: Table, names: tuple[str, ...], skip: bool) -> str:
    arrays, picks = [], []
    for i, name in enumerate(names):
        col_type = table.c[name].type
        if isinstance(col_type, JSON):
            arrays.append(f"CAST(:a{i} AS text[])")
            picks.append(f"CAST(v.c{i} AS json)")
        else:
            arrays.append(f"CAST(:a{i} AS {col_type.compile(dialect=dialect)}[])")
            picks.append(f"v.c{i}")
    aliases = ", ".join(f"c{i}" for i in range(len(names)))
    return (
        f"INSERT INTO {table.name} ({', '.join(names)}) SELECT {', '.join(picks)}"
        f" FROM unnest({', '.join(arrays)}) AS v({aliases})"
        + (" ON CONFLICT DO NOTHING" if skip else "")
    )


def utc_hour(column: Any, *, postgres: bool) -> ColumnElement[str]:
    """``column``'s UTC hour as text ``YYYY-MM-DD HH``, to group instants by hour in SQL.

    SQLite stores instants as fixed-width UTC text (see ``UTCDateTime``), so its first 13
    characters are the hour; PostgreSQL formats the ``timestamptz`` in UTC.
    """
    if postgres:
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD HH24")
    return func.substr(column, 1, 13)


def lock_id(key: str) -> int:
    """A stable signed 64-bit id for a PostgreSQL advisory lock."""
    return zlib.crc32(f"duly:{key}".encode()) - (1 << 31)
