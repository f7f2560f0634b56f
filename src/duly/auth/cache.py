"""Verified tokens remembered for a few seconds, so a busy client costs no lookup per request.

The gate authenticates every ``/api/v1`` request. Without a cache each one is a database
round trip (and a thread hop to make it); with :class:`TokenCache` a token verified in the
last ``ttl`` is taken from memory. What this trades, and its bound:

* **Revocation** takes effect at once through the :class:`~duly.auth.service.TokenService`
  of this process (``POST /api/v1/tokens/{id}/revoke`` forgets the token's entries), and
  within ``ttl`` when done elsewhere (``duly token revoke``, another node): an entry older
  than ``ttl`` is never used, the next request reads the store again.
* **Expiry** is checked on every hit against the token's own ``expires_at``, so an expired
  token is refused at the instant it expires, cached or not.
* Only tokens that were valid are kept, by the SHA-256 of their text (what the store keeps
  too, never the text), at most ``max_entries`` of them; a failed check is never cached, so
  a wrong token always costs a lookup and gains nothing.

Time comes from the caller (the gate's clock), so tests drive it with the manual clock.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from duly.auth.service import Principal

__all__ = ["DEFAULT_TTL", "TokenCache"]

#: How long a verified token is trusted from memory by default.
DEFAULT_TTL = timedelta(seconds=5)


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal
    verified_at: datetime
    expires_at: datetime | None


class TokenCache:
    """Principals of tokens verified within the last ``ttl``; thread-safe."""

    def __init__(self, ttl: timedelta = DEFAULT_TTL, max_entries: int = 10_000) -> None:
        if ttl < timedelta(0) or max_entries < 1:
            raise ValueError("ttl must be >= 0 and max_entries >= 1")
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[bytes, _Entry] = {}
        self._lock = threading.Lock()

    def get(self, token_text: str, now: datetime) -> Principal | None:
        """The principal of ``token_text`` if it was verified less than ``ttl`` before ``now``
        and has not expired; ``None`` means "ask the store", not "refused"."""
        if not self.ttl:
            return None
        key = _key(token_text)
        entry = self._entries.get(key)
        if entry is None:
            return None
        fresh = entry.verified_at <= now < entry.verified_at + self.ttl
        if not fresh or (entry.expires_at is not None and now >= entry.expires_at):
            with self._lock:
                if self._entries.get(key) is entry:
                    del self._entries[key]
            return None
        return entry.principal

    def put(self, token_text: str, principal: Principal, now: datetime,
            expires_at: datetime | None) -> None:  # fmt: skip
        """Remember that ``token_text`` was verified at ``now`` as ``principal``."""
        if not self.ttl:
            return
        key = _key(token_text)
        with self._lock:
            if len(self._entries) >= self.max_entries and key not in self._entries:
                self._forget_stale(now)
            self._entries[key] = _Entry(principal, now, expires_at)

    def forget(self, token_id: str) -> None:
        """Drop every entry of the token ``token_id`` (it was just revoked)."""
        with self._lock:
            for key in [k for k, e in self._entries.items() if e.principal.token_id == token_id]:
                del self._entries[key]

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _forget_stale(self, now: datetime) -> None:
        stale = [k for k, e in self._entries.items() if not e.verified_at + self.ttl > now]
        for k in stale:
            del self._entries[k]
        if len(self._entries) >= self.max_entries:
            self._entries.clear()


def _key(token_text: str) -> bytes:
    # Any text at all (a header may carry anything): UTF-8 with surrogates passed through
    # encodes every str, and differently for different ones.
    return hashlib.sha256(token_text.strip().encode("utf-8", "surrogatepass")).digest()
