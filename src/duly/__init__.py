"""duly: a durable scheduler for a bank's scheduled financial operations.

The public API for job authors::

    import duly

    @duly.job("reports.nightly", timeout=600, retry=3)
    def nightly(ctx: duly.JobContext) -> dict[str, int]:
        ...

Run the module's jobs with ``duly worker --import mypackage.jobs``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from duly.version import __version__

__all__ = ["JobContext", "JobError", "__version__", "job"]

if TYPE_CHECKING:
    from duly.engine.context import JobContext
    from duly.engine.errors import JobError
    from duly.engine.registry import job


def __getattr__(name: str) -> Any:
    # Lazy, so ``import duly`` (e.g. for ``__version__``) stays light.
    if name == "job":
        from duly.engine.registry import job

        return job
    if name == "JobContext":
        from duly.engine.context import JobContext

        return JobContext
    if name == "JobError":
        from duly.engine.errors import JobError

        return JobError
    raise AttributeError(f"module 'duly' has no attribute {name!r}")
