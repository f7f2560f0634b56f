"""Retry policies: how many attempts, how long between them, which errors qualify. Pure."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

__all__ = ["NON_RETRYABLE_CODES", "RetryPolicy"]

#: Codes that are terminal whatever the policy says (finance-rules.md §4: only transient
#: failures are retried).
NON_RETRYABLE_CODES: frozenset[str] = frozenset(
    {"ACCOUNT_CLOSED", "VALIDATION_ERROR", "AUTHORIZATION_REVOKED", "CANCELLED", "UNKNOWN_JOB"}
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a failed attempt gets another try.

    Either a fixed list of ``delays`` (seconds; attempt ``n`` waits ``delays[n-1]``, the last
    repeats) or exponential: ``base * factor**(n-1)`` capped at ``cap``, with up to
    ``jitter`` (a fraction) added at random so many runs failing together do not retry in step.

    :param max_attempts: total tries including the first; 1 means never retry.
    :param retry_on: if given, only these codes are retried; otherwise every code except
        :data:`NON_RETRYABLE_CODES`.
    """

    max_attempts: int = 3
    delays: Sequence[float] | None = None
    base: float = 10.0
    factor: float = 2.0
    cap: float = 3600.0
    jitter: float = 0.1
    retry_on: frozenset[str] | None = None
    never_retry: frozenset[str] = field(default=NON_RETRYABLE_CODES)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be ≥ 1, got {self.max_attempts}")
        if self.delays is not None and any(d < 0 for d in self.delays):
            raise ValueError("retry delays must be ≥ 0")
        if self.base < 0 or self.factor < 1 or self.cap < 0 or not 0 <= self.jitter <= 1:
            raise ValueError(
                "exponential backoff needs base ≥ 0, factor ≥ 1, cap ≥ 0, 0 ≤ jitter ≤ 1"
            )

    @classmethod
    def fixed(cls, delays: Sequence[float], **kw: object) -> RetryPolicy:
        """A policy with ``len(delays) + 1`` attempts and these waits between them."""
        return cls(max_attempts=len(delays) + 1, delays=tuple(delays), jitter=0.0, **kw)  # type: ignore[arg-type]

    @classmethod
    def none(cls) -> RetryPolicy:
        """One attempt, no retry."""
        return cls(max_attempts=1)

    def is_retryable(self, code: str, forced: bool | None = None) -> bool:
        """Whether an error with ``code`` may be retried (``forced`` is the job's own say)."""
        if code in self.never_retry:
            return False
        if forced is not None:
            return forced
        return self.retry_on is None or code in self.retry_on

    def should_retry(self, attempt: int, code: str, forced: bool | None = None) -> bool:
        """Whether attempt number ``attempt`` (1-based) failing with ``code`` gets another."""
        return attempt < self.max_attempts and self.is_retryable(code, forced)

    def delay(self, attempt: int, rng: random.Random | None = None) -> timedelta:
        """The wait after attempt number ``attempt`` (1-based) failed."""
        if self.delays is not None:
            if not self.delays:
                return timedelta(0)
            return timedelta(seconds=self.delays[min(attempt, len(self.delays)) - 1])
        raw = min(self.cap, self.base * self.factor ** max(attempt - 1, 0))
        spread = (rng or random).uniform(0, self.jitter * raw) if self.jitter else 0.0
        return timedelta(seconds=raw + spread)
