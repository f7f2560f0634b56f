"""Helpers for audit tests: tamper with the chain as someone with database access could."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta

from sqlalchemy import Connection, text

from duly.audit import AuditLog
from duly.clock import SystemClock
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


def settle(audit: AuditLog, seconds: float = 30.0) -> int:
    """Seal until nothing is left unsealed; how many were sealed.

    On PostgreSQL the sealer waits for every transaction older than an event to end, in
    any database of the cluster; another test run or a benchmark beside this one can hold
    that back for a moment, so tests wait for the chain instead of sealing once.
    """
    clock = SystemClock()
    deadline = clock.now() + timedelta(seconds=seconds)
    sealed = audit.seal()
    while audit.status().unsealed:
        if clock.now() > deadline:
            raise AssertionError(f"events still unsealed after {seconds} s")
        clock.sleep_blocking(0.05)
        sealed += audit.seal()
    return sealed
