"""The node's audit loop: seal recorded events into the chain and sign checkpoints."""

from __future__ import annotations

from datetime import timedelta

from duly.audit.service import AuditLog
from duly.engine.services.base import Env, Service

__all__ = ["AuditSealer"]


class AuditSealer(Service):
    """Every ``audit.seal_interval_seconds``: seal (PostgreSQL), then checkpoint when due.

    Every node runs one; on PostgreSQL an advisory lock lets one seal at a time, and the
    others' passes return at once. Stopping makes a last pass with a checkpoint, so a node
    shut down cleanly leaves no unsigned tail behind.
    """

    name = "audit"

    def __init__(self, env: Env, audit: AuditLog) -> None:
        super().__init__(env)
        self.audit = audit

    async def run(self) -> None:
        interval = timedelta(seconds=self.audit.settings.seal_interval_seconds)
        clock = self.env.clock
        while not self.stopping.is_set():
            self._begin_pass()
            await self.env.db(self.pass_once)
            self._mark_pass()
            await clock.sleep_until(clock.now() + interval, self.wakeup)
        await self.env.db(self.pass_once, True)

    def pass_once(self, final: bool = False) -> int:
        """Seal what can be sealed and sign a checkpoint if one is due; events sealed."""
        sealed = self.audit.seal()
        checkpoint = self.audit.checkpoint(force=final)
        if checkpoint is not None:
            self.log.info("audit.checkpoint", seq=checkpoint.seq, key_id=checkpoint.key_id)
        return sealed
