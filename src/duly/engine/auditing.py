"""The engine's audit port: what it tells the audit trail, inside its own transactions.

The engine records every run state change (fired, claimed, succeeded, failed, retrying,
cancelled, lease expired) and every schedule change as :class:`AuditEntry` values handed to
an :class:`AuditRecorder` on the same connection, before the transaction commits, so a
change and its record commit or roll back together. The engine knows nothing of how
entries are chained, signed or stored: :func:`duly.audit.record` implements the port and
the composition root plugs it into the store (``SqlStore.audit``); with none plugged in
(``audit.run_events: false``, or the engine used on its own), nothing is recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import Connection

__all__ = ["AuditEntry", "AuditRecorder", "StatementAuditRecorder"]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One thing that changed: ``action`` on the object ``object_type``/``object_id``.

    ``details`` holds what a reader needs to know about the change (the fields that
    changed, before and after); it is redacted when recorded, but callers should not put
    balances, full account numbers or secrets in it to begin with.
    """

    action: str
    object_type: str
    object_id: str | int | None
    details: Mapping[str, Any] = field(default_factory=dict)


class AuditRecorder(Protocol):
    """Writes entries on ``conn``, in the transaction of the change they describe."""

    def __call__(
        self, conn: Connection, entries: Sequence[AuditEntry], at: datetime
    ) -> None: ...


@runtime_checkable
class StatementAuditRecorder(AuditRecorder, Protocol):
    """A recorder that can also put an entry in the statement making the change (PostgreSQL).

    The hot path (a trigger) then writes a run and its event in one statement, one round
    trip, instead of a transaction of several.
    """

    def insert_for_each(
        self, source: str, entry: AuditEntry, at: datetime
    ) -> tuple[str, dict[str, Any]]:
        """``INSERT … SELECT … FROM source`` recording ``entry`` once per row of the ``WITH``
        query ``source`` (object id: the row's ``id``), and its parameters."""
        ...
