"""Nodes and leases: registration, heartbeats, lease extension."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime

from sqlalchemy import delete, insert, select, update

from duly.engine.states import RunStatus
from duly.engine.store.base import NodeRow
from duly.engine.store.plumbing import SqlBase
from duly.engine.store.schema import nodes, runs


class NodeQueries(SqlBase):
    """Nodes and the leases they hold."""

    def lease_extend(
        self, node: str, run_ids: Sequence[int], expires_at: datetime, now: datetime
    ) -> set[int]:
        """Extend ``node``'s leases on ``run_ids``; return those an operator asked to cancel.

        Runs whose lease is no longer ``node``'s are left alone (their outcome will not be written).
        """
        if not run_ids:
            return set()
        with self._write() as conn:
            rows = conn.execute(
                update(runs)
                .where(
                    runs.c.id.in_(list(run_ids)),
                    runs.c.lease_owner == node,
                    runs.c.status == RunStatus.RUNNING.value,
                )
                .values(lease_expires_at=expires_at)
                .returning(runs.c.id, runs.c.cancel_requested)
            ).all()
        return {r.id for r in rows if r.cancel_requested}

    def node_register(self, row: NodeRow) -> None:
        """Record a node as started (replacing an old row of the same name)."""
        values = {f.name: getattr(row, f.name) for f in fields(NodeRow)}
        with self._write() as conn:
            conn.execute(delete(nodes).where(nodes.c.name == row.name))
            conn.execute(insert(nodes).values(**values))

    def node_heartbeat(self, name: str, now: datetime) -> None:
        """Record that ``name`` is alive."""
        with self._write() as conn:
            conn.execute(update(nodes).where(nodes.c.name == name).values(heartbeat_at=now))

    def node_stop(self, name: str, now: datetime) -> None:
        """Record a clean stop."""
        with self._write() as conn:
            conn.execute(
                update(nodes)
                .where(nodes.c.name == name)
                .values(state="stopped", stopped_at=now, heartbeat_at=now)
            )

    def node_list(self) -> list[NodeRow]:
        """Every known node, most recent heartbeat first."""
        with self._read() as conn:
            rows = conn.execute(select(nodes).order_by(nodes.c.heartbeat_at.desc())).all()
        return [NodeRow(**{f.name: getattr(r, f.name) for f in fields(NodeRow)}) for r in rows]
