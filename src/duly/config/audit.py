"""Settings of the audit trail."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class AuditSettings(BaseModel):
    """Where checkpoints are signed, how often, and how long events are kept."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    signing_key_file: Path = Path("duly-audit-key.pem")
    """The Ed25519 private key (PEM) checkpoints are signed with; its public half is beside it
    as ``.pub``. Every node that may seal needs the same key."""
    create_key: bool = True
    """Create the key pair on first start if the file is missing (embedded use). Set it to
    ``false`` in production, so a node without the bank's key refuses to start."""
    checkpoint_every_events: Annotated[int, Field(ge=1)] = 10_000
    """Sign a checkpoint once this many events were sealed since the last one…"""
    checkpoint_every_seconds: Annotated[float, Field(gt=0)] = 60.0
    """…or once this long passed, whichever comes first (only if events were sealed)."""
    seal_interval_seconds: Annotated[float, Field(gt=0, le=60)] = 0.2
    """How often a node seals recorded events into the chain (PostgreSQL)."""
    retention_days: Annotated[int, Field(ge=1)] = 2557
    """Events older than this (7 years by default) are pruned, whole checkpointed ranges only."""
    run_events: bool = True
    """Record every run state change. Turn off only to measure what recording costs."""
