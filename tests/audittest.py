"""Helpers for audit tests: tamper with the chain as someone with database access could."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy import Connection, text

from duly.engine.store.sql import SqlStore

_SQLITE_GUARDS = (
    "audit_events_guard_update",
    "audit_events_guard_delete",
    "audit_checkpoints_guard_update",
    "audit_checkpoints_guard_delete",
    "audit_head_guard_update",
    "audit_head_guard_delete",
)


@contextlib.contextmanager
def unguarded(store: SqlStore) -> Iterator[Connection]:
    """A transaction in which the audit tables' guard triggers do not fire (an attacker's)."""
    with store.engine.begin() as conn:
        if store.is_postgres:
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            yield conn
            return
        saved = conn.execute(
            text(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'audit_%'"
            )
        ).all()
        for name in _SQLITE_GUARDS:
            conn.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
        yield conn
        for _name, sql in saved:
            conn.execute(text(sql))
