"""Browser sessions: a signed, expiring cookie value standing for an API token, and CSRF tokens.

The dashboard exchanges an API token for a session (see :mod:`duly.web.session`). The
cookie carries the token's *id* (never its secret), an expiry and a random nonce, signed
with HMAC-SHA256 under a per-installation secret; every request then checks the signature,
the expiry against the injected clock, and that the token is still active, so revoking the
token ends its sessions too. A CSRF token is the HMAC of the session's nonce under the same
secret, so it cannot be computed without the secret and changes with each sign-in.

The secret is generated on first use into the table ``auth_session_keys`` (migration 0014),
so every node on one database signs and checks alike and it survives restarts; deleting the
row (and restarting) signs everyone out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Column, Engine, Integer, String, Table, insert, select
from sqlalchemy.exc import IntegrityError

from duly.clock import Clock
from duly.engine.store.schema import metadata
from duly.engine.store.types import UTCDateTime

__all__ = ["Session", "SessionSigner", "load_session_secret", "session_keys"]

session_keys = Table(
    "auth_session_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("secret", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

_KEY_ID = 1


def load_session_secret(engine: Engine, clock: Clock) -> bytes:
    """The installation's signing secret, created (once, whichever node is first) if missing."""
    with engine.connect() as conn:
        found = conn.execute(
            select(session_keys.c.secret).where(session_keys.c.id == _KEY_ID)
        ).scalar()
    if found is None:
        try:
            with engine.begin() as conn:
                conn.execute(insert(session_keys).values(id=_KEY_ID, secret=secrets.token_hex(32),
                                                         created_at=clock.now()))  # fmt: skip
        except IntegrityError:  # another node created it meanwhile: use theirs
            pass
        with engine.connect() as conn:
            found = conn.execute(
                select(session_keys.c.secret).where(session_keys.c.id == _KEY_ID)
            ).scalar_one()
    return bytes.fromhex(str(found))


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in browser: the API token it stands for, until when, and its CSRF nonce."""

    token_id: str
    expires_at: datetime
    nonce: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Signs and checks session values and CSRF tokens with one secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the session secret must be at least 16 bytes")
        self._secret = secret

    def _mac(self, purpose: str, data: bytes) -> bytes:
        return hmac.new(self._secret, purpose.encode() + b"\x00" + data, hashlib.sha256).digest()

    def new_session(self, token_id: str, now: datetime, lifetime: timedelta) -> Session:
        """A fresh session for ``token_id`` expiring ``lifetime`` after ``now``."""
        return Session(token_id, now + lifetime, secrets.token_urlsafe(16))

    def dumps(self, session: Session) -> str:
        """The cookie value of ``session``: ``payload.signature``, both base64url."""
        body: dict[str, Any] = {"t": session.token_id, "e": int(session.expires_at.timestamp()),
                                "n": session.nonce}  # fmt: skip
        payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        return f"{_b64(payload)}.{_b64(self._mac('session', payload))}"

    def loads(self, value: str, now: datetime) -> Session | None:
        """The session in ``value`` if its signature holds and it has not expired at ``now``.

        Anything else (tampered, truncated, expired, of another shape) is ``None``.
        """
        head, dot, tail = value.partition(".")
        if not dot or len(value) > 1024:
            return None
        try:
            payload, signature = _unb64(head), _unb64(tail)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(signature, self._mac("session", payload)):
            return None
        try:
            body = json.loads(payload)
            token_id, expires, nonce = str(body["t"]), int(body["e"]), str(body["n"])
        except (ValueError, KeyError, TypeError):
            return None
        expires_at = datetime.fromtimestamp(expires, UTC)
        if now >= expires_at:
            return None
        return Session(token_id, expires_at, nonce)

    def csrf_token(self, nonce: str) -> str:
        """The CSRF token of the session (or pre-sign-in cookie) with ``nonce``."""
        return _b64(self._mac("csrf", nonce.encode()))

    def csrf_ok(self, nonce: str, presented: str | None) -> bool:
        """Whether ``presented`` is the CSRF token of ``nonce`` (constant-time)."""
        return presented is not None and hmac.compare_digest(presented, self.csrf_token(nonce))

    def dumps_nonce(self, nonce: str) -> str:
        """A signed nonce, for the sign-in form's CSRF cookie (before any session exists)."""
        return f"{nonce}.{_b64(self._mac('presession', nonce.encode()))}"

    def loads_nonce(self, value: str | None) -> str | None:
        """The nonce of a :meth:`dumps_nonce` value whose signature holds, else ``None``."""
        if not value or len(value) > 256:
            return None
        nonce, _, tail = value.rpartition(".")
        try:
            signature = _unb64(tail)
        except (binascii.Error, ValueError):
            return None
        ok = nonce and hmac.compare_digest(signature, self._mac("presession", nonce.encode()))
        return nonce if ok else None
