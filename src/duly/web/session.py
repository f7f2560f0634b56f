"""Who is looking at the dashboard: the session cookie, sign-in and sign-out, CSRF, roles.

* Sign-in takes an API token (``duly token create``) once, checks it with
  :meth:`~duly.auth.service.TokenService.authenticate`, and answers a session cookie
  (:mod:`duly.auth.sessions`): signed, ``HttpOnly``, ``SameSite=Strict``, ``Secure`` when
  the dashboard is served over HTTPS, expiring after the session lifetime. The cookie holds
  the token's id, never its secret.
* Every request checks the cookie's signature and expiry against the injected clock and that
  the token is still active; a bad cookie is dropped and the browser sent to sign in.
* Every ``POST`` needs the session's CSRF token in the form (field ``csrf``); the sign-in
  form, before any session, uses a signed nonce cookie for the same purpose.
* Reading is for ``admin``, ``operator`` and ``auditor``; changing for ``admin`` and
  ``operator``. The ``channel`` role (the online-banking backend) has no dashboard.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from duly.auth.roles import Role
from duly.auth.service import Principal, TokenService
from duly.auth.sessions import Session, SessionSigner

__all__ = [
    "CHANGERS",
    "COOKIE",
    "PRESESSION_COOKIE",
    "READERS",
    "Signed",
    "WebSessions",
]

COOKIE = "duly_session"
PRESESSION_COOKIE = "duly_signin"
READERS = frozenset({Role.ADMIN, Role.OPERATOR, Role.AUDITOR})
CHANGERS = frozenset({Role.ADMIN, Role.OPERATOR})


@dataclass(frozen=True, slots=True)
class Signed:
    """A request's signed-in viewer: the token's principal and the session."""

    principal: Principal
    session: Session

    @property
    def can_change(self) -> bool:
        """Whether this viewer may act (pause, trigger, resolve, cancel …)."""
        return self.principal.role in CHANGERS


class WebSessions:
    """Sessions over the token service, signed by ``signer``, lasting ``lifetime``."""

    def __init__(self, tokens: TokenService, signer: SessionSigner, lifetime: timedelta) -> None:
        self.tokens = tokens
        self.signer = signer
        self.lifetime = lifetime

    def sign_in(self, token_text: str, now: datetime) -> tuple[Signed | None, str]:
        """The session for an API token, or ``None`` and why not (shown to the person)."""
        principal = self.tokens.authenticate(token_text.strip(), now)
        if principal is None:
            return None, "That token is not valid (unknown, revoked or expired)."
        if principal.role not in READERS:
            return None, f"The {principal.role.value} role has no access to the dashboard."
        session = self.signer.new_session(principal.token_id, now, self.lifetime)
        return Signed(principal, session), ""

    def cookie_value(self, signed: Signed) -> str:
        """The value of the session cookie."""
        return self.signer.dumps(signed.session)

    def resolve(self, cookie: str | None, now: datetime) -> Signed | None:
        """The viewer of a session cookie still valid at ``now`` (token active too), else ``None``."""
        if not cookie:
            return None
        session = self.signer.loads(cookie, now)
        if session is None:
            return None
        row = self.tokens.get(session.token_id)
        if row is None or not row.active(now) or row.role not in READERS:
            return None
        return Signed(Principal(row.id, row.name, row.role), session)

    def csrf_token(self, signed: Signed) -> str:
        """The token every form of this session carries."""
        return self.signer.csrf_token(signed.session.nonce)

    def csrf_ok(self, signed: Signed, presented: str | None) -> bool:
        """Whether a form's ``csrf`` field belongs to this session."""
        return self.signer.csrf_ok(signed.session.nonce, presented)

    def new_presession(self) -> tuple[str, str]:
        """A sign-in form's (cookie value, csrf field) pair."""
        nonce = secrets.token_urlsafe(16)
        return self.signer.dumps_nonce(nonce), self.signer.csrf_token(nonce)

    def presession_ok(self, cookie: str | None, presented: str | None) -> bool:
        """Whether the sign-in form's ``csrf`` field matches its nonce cookie."""
        nonce = self.signer.loads_nonce(cookie)
        return nonce is not None and self.signer.csrf_ok(nonce, presented)
