"""duly's audit trail: every change recorded in its own transaction, chained, signed, verifiable.

* :func:`record` writes events on the connection of the change (the engine's audit port);
* :mod:`~duly.audit.actors` says who acts (set once by each entry point);
* :class:`AuditLog` reads, verifies, exports, seals, checkpoints and prunes;
* :mod:`~duly.audit.verify` and :mod:`~duly.audit.export` verify without a database.

``docs/audit.md`` explains the chain, the sealing on PostgreSQL and how to verify an export.
"""

from __future__ import annotations

from duly.audit.actors import Actor, acting_as, cli_actor, current_actor, in_request, system_actor
from duly.audit.recorder import AuditEntry, record
from duly.audit.redaction import changes, redact
from duly.audit.service import AuditEvent, AuditFilter, AuditKeyError, AuditLog, AuditStatus
from duly.audit.verify import Problem, VerifyReport

__all__ = [
    "Actor",
    "AuditEntry",
    "AuditEvent",
    "AuditFilter",
    "AuditKeyError",
    "AuditLog",
    "AuditStatus",
    "Problem",
    "VerifyReport",
    "acting_as",
    "changes",
    "cli_actor",
    "current_actor",
    "in_request",
    "record",
    "redact",
    "system_actor",
]
