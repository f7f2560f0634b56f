"""Errors a job or the engine raises, with taxonomy codes."""

from __future__ import annotations

from typing import Any

__all__ = [
    "EngineError",
    "JobError",
    "LeaseLost",
    "NotFound",
    "RunConflict",
    "ScheduleBroken",
    "ScheduleExists",
    "UnknownJob",
]


class EngineError(Exception):
    """Base of the engine's own errors."""


class JobError(Exception):
    """A job's failure with a taxonomy code.

    :param code: an error code (e.g. ``TIMEOUT``, ``API_ERROR``); stored on the attempt and run.
    :param message: a human line; it must not contain balances, account numbers or secrets.
    :param retryable: ``None`` lets the job's retry policy decide by code; ``True``/``False`` force it.
    """

    def __init__(
        self,
        code: str,
        message: str = "",
        *,
        retryable: bool | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message or code)
        self.code = code
        self.message = message or code
        self.retryable = retryable
        self.details = details or {}


class LeaseLost(EngineError):
    """The run's lease was taken over (fencing token moved on); the outcome was not written."""


class UnknownJob(EngineError):
    """No job is registered under that name."""


class NotFound(EngineError):
    """The run or schedule does not exist."""


class RunConflict(EngineError):
    """The run is not in a state that allows the operation."""


class ScheduleExists(EngineError):
    """A schedule of that name exists with another definition (creating never overwrites)."""


class ScheduleBroken(EngineError):
    """A schedule's definition cannot be evaluated (bad spec, unknown time zone or calendar).

    A fire planner raises it for that one schedule; the store then marks the schedule broken
    and goes on with the others.
    """
