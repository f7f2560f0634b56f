"""A job for the cross-process benchmarks: its first line notes when it started.

``duly worker --import stampjobs`` (with this folder on ``PYTHONPATH``) runs it. It is an
ordinary job, executed in the worker's thread pool as a user's own job would be.
"""

from __future__ import annotations

from typing import Any

import duly


@duly.job("bench.stamp", timeout=60, retry=1)
def stamp(ctx: duly.JobContext) -> dict[str, Any]:
    """Return the instant this attempt's code began."""
    return {"started": ctx.clock.now().isoformat()}
