"""Nodes and leases: registration, heartbeats, lease extension."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update

from duly.engine.states import RunStatus
from duly.engine.store.base import LeaseRenewal, NodeRow
from duly.engine.store.plumbing import SqlBase
from duly.engine.store.rows import aware
from duly.engine.store.schema import nodes, runs

_LEASE_COLUMNS = (
    runs.c.id,
    runs.c.fencing_token,
    runs.c.lease_owner,
    runs.c.status,
    runs.c.cancel_requested,
)


def _holds(row: Any, node: str, leases: Mapping[int, int]) -> bool:
    return bool(
        row.lease_owner == node
        and row.fencing_token == leases.get(row.id)
        and row.status == RunStatus.RUNNING.value
    )


class NodeQueries(SqlBase):
    """Nodes and the leases they hold."""

    def lease_extend(
        self, node: str, leases: Mapping[int, int], expires_at: datetime, now: datetime
    ) -> LeaseRenewal:
        """Extend ``node``'s leases, each fenced by its token (``{run_id: fencing_token}``).

        A lease is extended only while the run is still running under that token and owner;
        every other run is reported ``lost``, so the node stops its job instead of running it
        beside the node that took it over. Rows are locked in id order and, on PostgreSQL,
        rows another transaction holds (a completion writing) are skipped, not waited for:
        the heartbeat never waits on a row lock, so it cannot deadlock with a completion
        locking the same runs in another order. A skipped run's lease is extended on the
        next beat; whether it is lost is read from its last committed state.
        """
        if not leases:
            return LeaseRenewal()
        ids = sorted(leases)
        with self._write() as conn:
            query = select(*_LEASE_COLUMNS).where(runs.c.id.in_(ids)).order_by(runs.c.id)
            if self.is_postgres:
                query = query.with_for_update(skip_locked=True)
            locked = conn.execute(query).all()
            held = [r.id for r in locked if _holds(r, node, leases)]
            if held:
                conn.execute(
                    update(runs).where(runs.c.id.in_(held)).values(lease_expires_at=expires_at)
                )
            seen = {r.id for r in locked}
            lost = {r.id for r in locked if r.id not in set(held)}
            unseen = [i for i in ids if i not in seen]
            if unseen and self.is_postgres:
                committed = conn.execute(select(*_LEASE_COLUMNS).where(runs.c.id.in_(unseen))).all()
                present = {r.id for r in committed}
                lost |= {r.id for r in committed if not _holds(r, node, leases)}
                lost |= set(unseen) - present
            else:
                lost |= set(unseen)
        cancel = {r.id for r in locked if r.id in set(held) and r.cancel_requested}
        return LeaseRenewal(cancel=frozenset(cancel), lost=frozenset(lost))

    def lease_held(self, node: str, run_id: int, fencing_token: int, now: datetime) -> bool:
        """Whether ``node`` still holds ``run_id``'s lease under ``fencing_token`` at ``now``."""
        with self._read() as conn:
            row = conn.execute(
                select(*_LEASE_COLUMNS, runs.c.lease_expires_at).where(runs.c.id == run_id)
            ).first()
        if row is None or not _holds(row, node, {run_id: fencing_token}):
            return False
        expires = aware(row.lease_expires_at)
        return expires is not None and expires > now

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
