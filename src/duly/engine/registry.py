"""The job registry: Python callables registered by name with their run options."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from duly.engine.errors import UnknownJob
from duly.engine.retry import RetryPolicy

if TYPE_CHECKING:
    from duly.engine.context import JobContext

__all__ = ["BatchFunc", "JobDefinition", "JobFunc", "JobRegistry", "default_registry", "job"]

JobFunc = Callable[["JobContext"], Any] | Callable[["JobContext"], Awaitable[Any]]
#: A batch job: one call for several runs; one entry per context, a summary or an exception.
BatchFunc = Callable[[Sequence["JobContext"]], Sequence[Any]]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class JobDefinition:
    """A registered job and how its runs are executed.

    :param timeout: longest an attempt may take; it is then stopped and counted ``JOB_TIMEOUT``.
    :param max_concurrency: most runs of this job running at once across all nodes (None: no limit).
    :param window: a run still active this long after its ``scheduled_for`` raises an alert.
    :param batch: for a batch job (:meth:`JobRegistry.batch_job`), the function a worker
        calls once for up to ``batch_size`` runs it claimed together; ``func`` then runs
        it for one run.
    :param inline: a sync job that returns at once (no I/O, microseconds): the worker calls
        it on its event loop instead of handing it to a thread. Nothing can stop it (its
        timeout is not enforced) and it holds up the node while it runs.
    """

    name: str
    func: JobFunc
    timeout: timedelta = timedelta(hours=1)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_concurrency: int | None = None
    queue: str = "default"
    priority: int = 0
    window: timedelta | None = None
    description: str = ""
    batch: BatchFunc | None = None
    batch_size: int = 1
    inline: bool = False

    @property
    def is_async(self) -> bool:
        """Whether the job is a coroutine function (run on the event loop, not in a thread)."""
        return inspect.iscoroutinefunction(self.func)


class JobRegistry:
    """Jobs by name. A process may hold several; :data:`default_registry` is the usual one."""

    def __init__(self) -> None:
        self._jobs: dict[str, JobDefinition] = {}

    def register(self, definition: JobDefinition) -> JobDefinition:
        """Add ``definition``; a second job under the same name is an error."""
        if (
            definition.name in self._jobs
            and self._jobs[definition.name].func is not definition.func
        ):
            raise ValueError(f"a job named {definition.name!r} is already registered")
        if definition.max_concurrency is not None and definition.max_concurrency < 1:
            raise ValueError(f"job {definition.name!r}: max_concurrency must be ≥ 1")
        if definition.inline and (definition.is_async or definition.batch is not None):
            raise ValueError(f"job {definition.name!r}: only a sync single-run job can be inline")
        self._jobs[definition.name] = definition
        return definition

    def job(
        self,
        name: str | None = None,
        *,
        timeout: float | timedelta = 3600.0,
        retry: RetryPolicy | int | None = None,
        max_concurrency: int | None = None,
        queue: str = "default",
        priority: int = 0,
        window: float | timedelta | None = None,
        inline: bool = False,
    ) -> Callable[[F], F]:
        """Decorator registering a sync or async function ``f(ctx) -> summary`` as a job.

        ``retry`` may be a :class:`RetryPolicy` or a number of attempts. ``inline`` (sync
        jobs that return at once only) runs it on the worker's event loop, without a thread
        hand-off and without a timeout (see :class:`JobDefinition`).
        """

        def decorate(func: F) -> F:
            self.register(
                JobDefinition(
                    name=name or f"{func.__module__}.{func.__qualname__}",
                    func=func,
                    timeout=_seconds(timeout),
                    retry=_policy(retry),
                    max_concurrency=max_concurrency,
                    queue=queue,
                    priority=priority,
                    window=_seconds(window) if window is not None else None,
                    description=(inspect.getdoc(func) or "").split("\n", 1)[0],
                    inline=inline,
                )
            )
            return func

        return decorate

    def batch_job(
        self,
        name: str,
        *,
        size: int = 100,
        timeout: float | timedelta = 3600.0,
        retry: RetryPolicy | int | None = None,
        max_concurrency: int | None = None,
        queue: str = "default",
        priority: int = 0,
        window: float | timedelta | None = None,
    ) -> Callable[[BatchFunc], BatchFunc]:
        """Decorator registering ``f(contexts) -> outcomes`` as a job executed in batches.

        A worker that claims several runs of the job at once calls ``f`` once with up to
        ``size`` of them (one slot of the node's concurrency). ``f`` returns one entry per
        context, in order: the run's JSON summary, or an exception instance for a run that
        failed (retried like any failure). All contexts share one effects transaction
        (``ctx.transaction()``), committed with the completion of every run in the batch:
        ``f`` must write effects only for the runs it returns a summary for. If ``f``
        raises, every run of the batch fails with that error and no effect is kept.
        Set-based work (one statement for many rows) is what this is for.
        """
        if size < 1:
            raise ValueError(f"job {name!r}: batch size must be ≥ 1")

        def decorate(func: BatchFunc) -> BatchFunc:
            self.register(
                JobDefinition(
                    name=name,
                    func=_one_of(func),
                    timeout=_seconds(timeout),
                    retry=_policy(retry),
                    max_concurrency=max_concurrency,
                    queue=queue,
                    priority=priority,
                    window=_seconds(window) if window is not None else None,
                    description=(inspect.getdoc(func) or "").split("\n", 1)[0],
                    batch=func,
                    batch_size=size,
                )
            )
            return func

        return decorate

    def get(self, name: str) -> JobDefinition:
        """The job called ``name``.

        :raises UnknownJob: if there is none.
        """
        try:
            return self._jobs[name]
        except KeyError:
            known = ", ".join(sorted(self._jobs)) or "none"
            raise UnknownJob(f"no job named {name!r} (registered: {known})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._jobs

    def __iter__(self) -> Iterator[JobDefinition]:
        return iter(sorted(self._jobs.values(), key=lambda d: d.name))

    def __len__(self) -> int:
        return len(self._jobs)

    def merged(self, other: JobRegistry) -> JobRegistry:
        """A new registry with this one's jobs and ``other``'s."""
        out = JobRegistry()
        for definition in (*self, *other):
            out.register(definition)
        return out


def _one_of(batch: BatchFunc) -> Callable[[JobContext], Any]:
    """A batch function run for a single context: its one outcome, raised if an exception."""

    def run_one(ctx: JobContext) -> Any:
        (outcome,) = batch([ctx])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return run_one


def _policy(retry: RetryPolicy | int | None) -> RetryPolicy:
    """A :class:`RetryPolicy` as given, or one of ``retry`` attempts (3 by default)."""
    return retry if isinstance(retry, RetryPolicy) else RetryPolicy(max_attempts=retry or 3)


def _seconds(value: float | timedelta) -> timedelta:
    return value if isinstance(value, timedelta) else timedelta(seconds=value)


default_registry = JobRegistry()
job = default_registry.job
