"""The execution history as CSV: RFC 4180, UTF-8, a header row, produced row by row.

:func:`csv_chunks` turns any iterator of entries into text chunks without holding more than
a few rows, so an export of a million entries takes as little memory as one of ten.

A cell a spreadsheet would read as a formula — one starting with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return (OWASP "CSV injection") — is prefixed with ``'``, so a
memo such as ``=HYPERLINK(...)`` is shown as text and never run. duly's own values never
start so (amounts are positive, times start with the year), so only text the customer or
a channel wrote can be changed by the rule.
"""

from __future__ import annotations

import csv
import io
import operator
from collections.abc import Iterable, Iterator
from datetime import datetime
from decimal import Decimal

from duly.operations.history.models import HistoryEntry

__all__ = ["CSV_COLUMNS", "csv_chunks", "csv_row", "neutralise"]

CSV_COLUMNS = (
    "id", "kind", "operation_id", "payment_id", "occurrence", "status", "scheduled_at",
    "started_at", "finished_at", "amount", "currency", "from_account", "counterparty",
    "description", "reference", "attempts", "failure_code", "failure_reason",
    "suggested_action", "run_id",
)  # fmt: skip

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

#: Rows written per chunk: large enough that the per-chunk cost vanishes, small enough
#: that a chunk stays a few hundred kilobytes.
ROWS_PER_CHUNK = 200


def neutralise(cell: str) -> str:
    """``cell``, prefixed with ``'`` if a spreadsheet would take it for a formula."""
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return f"{value:f}"  # never exponent notation (1E+3)
    return str(value)


_CELLS = operator.attrgetter(*CSV_COLUMNS)


def csv_row(entry: HistoryEntry) -> list[str]:
    """One entry as the CSV's cells, in :data:`CSV_COLUMNS` order."""
    return [neutralise(_text(value)) for value in _CELLS(entry)]


def csv_chunks(entries: Iterable[HistoryEntry]) -> Iterator[str]:
    """The CSV text, header first, a few rows per chunk, lines ended ``CRLF`` (RFC 4180)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(CSV_COLUMNS)
    pending = 0
    for entry in entries:
        writer.writerow(csv_row(entry))
        pending += 1
        if pending >= ROWS_PER_CHUNK:
            yield _drain(buffer)
            pending = 0
    yield _drain(buffer)


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
