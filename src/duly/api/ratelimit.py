"""A token bucket per API token: ``rate`` requests a second on average, ``burst`` at once.

Pure: the caller passes the time, so tests drive it with the manual clock. Buckets live in
the process: with several ``duly serve`` nodes behind a balancer, each node allows the rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["RateLimiter"]

_MAX_BUCKETS = 100_000  # a bound on memory; full buckets carry no state worth keeping


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """How long each caller must wait before its next request is allowed."""

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def take(self, caller: str, now: float) -> float:
        """Spend one request of ``caller`` at ``now`` (seconds); 0 if allowed, else seconds to wait."""
        bucket = self._buckets.get(caller)
        if bucket is None:
            if len(self._buckets) >= _MAX_BUCKETS:
                self._forget_full(now)
            bucket = self._buckets[caller] = _Bucket(float(self.burst), now)
        elapsed = max(now - bucket.at, 0.0)
        bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    @staticmethod
    def retry_after(wait: float) -> int:
        """The ``Retry-After`` header's whole seconds for a wait of ``wait`` seconds."""
        return max(1, math.ceil(wait))

    def _forget_full(self, now: float) -> None:
        full = [k for k, b in self._buckets.items()
                if b.tokens + (now - b.at) * self.rate >= self.burst]  # fmt: skip
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= _MAX_BUCKETS:
            self._buckets.clear()
