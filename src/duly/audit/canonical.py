"""The chain's arithmetic: the canonical encoding of an event and its SHA-256 hash. Pure.

An event's hash is ``SHA-256`` (hex) of the UTF-8 bytes of this JSON array, written with no
spaces (``separators=(",", ":")``), non-ASCII characters as themselves::

    ["duly-audit-v1", seq, at, actor, actor_name, actor_role, action,
     object_type, object_id, request_id, prev_hash, details]

``at`` is the instant in UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``; ``object_id`` is a string
or ``null``; ``prev_hash`` is the previous event's hash (:data:`GENESIS` before the first);
``details`` is the event's details exactly as stored: JSON with sorted keys and the same
separators (:func:`canonical_json`). Anyone can recompute it from an export with a few lines
in any language; ``docs/audit.md`` shows how.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from hashlib import sha256
from json.encoder import encode_basestring as _quote  # what json.dumps(ensure_ascii=False) uses
from typing import Any

__all__ = [
    "GENESIS",
    "VERSION",
    "ChainHead",
    "Checkpoint",
    "EventRecord",
    "canonical_json",
    "event_hash",
    "format_instant",
    "link",
    "parse_instant",
]

VERSION = "duly-audit-v1"
GENESIS = "0" * 64
"""The ``prev_hash`` of the first event of a chain."""


@dataclass(slots=True)
class EventRecord:
    """An audit event as the chain sees it (``seq`` and the hashes ``None`` until sealed).

    Treat it as immutable (:func:`dataclasses.replace` makes a changed copy). It is not
    ``frozen`` because a frozen dataclass is built ten times slower, and verification
    builds one per event read.
    """

    seq: int | None
    at: str
    actor: str
    actor_name: str | None
    actor_role: str | None
    action: str
    object_type: str
    object_id: str | None
    request_id: str | None
    details: str
    prev_hash: str | None = None
    hash: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The event as plain JSON (the export's ``event`` line), details parsed."""
        return {
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "actor_name": self.actor_name,
            "actor_role": self.actor_role,
            "action": self.action,
            "object_type": self.object_type,
            "object_id": self.object_id,
            "request_id": self.request_id,
            "details": json.loads(self.details),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EventRecord:
        """The inverse of :meth:`as_json` (details re-encoded canonically)."""
        return cls(
            seq=data["seq"],
            at=data["at"],
            actor=data["actor"],
            actor_name=data.get("actor_name"),
            actor_role=data.get("actor_role"),
            action=data["action"],
            object_type=data["object_type"],
            object_id=data.get("object_id"),
            request_id=data.get("request_id"),
            details=canonical_json(data.get("details", {})),
            prev_hash=data.get("prev_hash"),
            hash=data.get("hash"),
        )


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement: the chain up to ``seq`` hashes to ``hash``, as of ``at``."""

    seq: int
    hash: str
    at: str
    key_id: str
    signature: str

    def as_json(self) -> dict[str, Any]:
        """The checkpoint as plain JSON (the export's ``checkpoint`` line)."""
        return {
            "seq": self.seq,
            "hash": self.hash,
            "at": self.at,
            "key_id": self.key_id,
            "signature": self.signature,
        }


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last sealed event: its sequence number and hash (``0`` and :data:`GENESIS` at first)."""

    seq: int = 0
    hash: str = GENESIS


def canonical_json(value: Any) -> str:
    """``value`` as JSON with sorted keys and no spaces: one text for one value."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def format_instant(at: datetime) -> str:
    """``at`` in UTC, always with microseconds: ``2026-12-07T11:44:50.000000Z``."""
    if at.tzinfo is None:
        raise ValueError("an aware datetime is required")
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_instant(text: str) -> datetime:
    """The inverse of :func:`format_instant`."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def event_hash(event: EventRecord, seq: int, prev_hash: str) -> str:
    """The hash of ``event`` at position ``seq`` after an event hashed ``prev_hash``."""
    # The documented JSON array written field by field: json.dumps of the list gives the
    # same text (the tests check it) at a third of the speed, and verification is this loop.
    q = _quote
    name, role, oid, rid = event.actor_name, event.actor_role, event.object_id, event.request_id
    payload = (
        f'["{VERSION}",{int(seq)},{q(event.at)},{q(event.actor)},'
        f"{'null' if name is None else q(name)},{'null' if role is None else q(role)},"
        f"{q(event.action)},{q(event.object_type)},{'null' if oid is None else q(oid)},"
        f"{'null' if rid is None else q(rid)},{q(prev_hash)},{event.details}]"
    )
    return sha256(payload.encode()).hexdigest()


def link(events: Iterable[EventRecord], head: ChainHead) -> Iterator[EventRecord]:
    """``events`` sealed after ``head`` in the order given: numbered, each hashed over the one before."""
    seq, prev = head.seq, head.hash
    for event in events:
        seq += 1
        digest = event_hash(event, seq, prev)
        yield replace(event, seq=seq, prev_hash=prev, hash=digest)
        prev = digest
