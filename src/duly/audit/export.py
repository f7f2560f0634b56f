"""Export files: the chain as JSON lines, verifiable on a machine without the database.

The first line is a header (``{"type": "header", "version": …, "from": …, "to": …,
"anchor": {"seq", "hash"} | null, "exported_at": …}``), then one ``{"type": "event", …}``
line per event in sequence order and one ``{"type": "checkpoint", …}`` line per checkpoint
from the one just before ``from`` (the anchor, when there is one) to the last one at or
before ``to``. :func:`verify_file` checks such a file with a public key alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from duly.audit.canonical import VERSION, ChainHead, Checkpoint, EventRecord
from duly.audit.signing import VerifyKey
from duly.audit.verify import Problem, VerifyReport, verify_chain

__all__ = ["PROGRESS_EVERY", "ExportFormatError", "read_export", "verify_file", "write_export"]

PROGRESS_EVERY = 50_000
"""How many events an export writes between two progress calls."""


class ExportFormatError(ValueError):
    """A file that is not a duly audit export."""


def write_export(
    out: IO[str],
    events: Iterable[EventRecord],
    checkpoints: Iterable[Checkpoint],
    *,
    header: dict[str, Any],
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the header, ``events`` and ``checkpoints`` as JSON lines; how many events.

    ``progress(n)`` is called after every :data:`PROGRESS_EVERY` events.
    """
    out.write(json.dumps({"type": "header", "version": VERSION, **header}) + "\n")
    count = 0
    for event in events:
        out.write(json.dumps({"type": "event", **event.as_json()}, ensure_ascii=False) + "\n")
        count += 1
        if progress is not None and count % PROGRESS_EVERY == 0:
            progress(count)
    for cp in checkpoints:
        out.write(json.dumps({"type": "checkpoint", **cp.as_json()}) + "\n")
    return count


def _lines(source: IO[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(source, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ExportFormatError(f"line {number} is not JSON: {exc.msg}") from exc
        if not isinstance(data, dict) or "type" not in data:
            raise ExportFormatError(f"line {number} is not an export record")
        yield number, data


def read_export(
    source: IO[str],
) -> tuple[dict[str, Any], list[EventRecord], list[Checkpoint]]:
    """The header, events and checkpoints of an export file."""
    header: dict[str, Any] | None = None
    events: list[EventRecord] = []
    checkpoints: list[Checkpoint] = []
    for number, data in _lines(source):
        kind = data.pop("type")
        try:
            if kind == "header":
                if data.get("version") != VERSION:
                    raise ExportFormatError(
                        f"line {number}: version {data.get('version')!r}, expected {VERSION}"
                    )
                header = data
            elif kind == "event":
                events.append(EventRecord.from_json(data))
            elif kind == "checkpoint":
                checkpoints.append(
                    Checkpoint(
                        int(data["seq"]),
                        str(data["hash"]),
                        str(data["at"]),
                        str(data["key_id"]),
                        str(data["signature"]),
                    )
                )
            else:
                raise ExportFormatError(f"line {number}: unknown record type {kind!r}")
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ExportFormatError):
                raise
            raise ExportFormatError(f"line {number}: malformed {kind} record ({exc})") from exc
    if header is None:
        raise ExportFormatError("no header line: not a duly audit export")
    return header, events, checkpoints


def verify_file(source: IO[str], key: VerifyKey) -> VerifyReport:
    """Verify an export with ``key`` alone."""
    try:
        header, events, checkpoints = read_export(source)
    except ExportFormatError as exc:
        report = VerifyReport()
        report.problem = Problem(0, str(exc))
        return report
    anchor = header.get("anchor")
    trusted = None if not anchor else ChainHead(int(anchor["seq"]), str(anchor["hash"]))
    events.sort(key=lambda e: e.seq or 0)
    return verify_chain(events, checkpoints, key, anchor=trusted, start=header.get("from"))
