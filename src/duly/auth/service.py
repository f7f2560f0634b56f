"""API tokens in the store: create, list, revoke, and authenticate a presented token.

The token text exists only in the value :meth:`TokenService.create` returns; the store keeps
its SHA-256 (see :mod:`duly.auth.tokens`), and no log line carries either.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import Connection, Engine, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from duly.auth.roles import Role
from duly.auth.schema import tokens
from duly.auth.tokens import check_name, new_token, parse_token, token_matches
from duly.clock import Clock

if TYPE_CHECKING:
    from duly.auth.cache import TokenCache

__all__ = [
    "LAST_USED_RESOLUTION",
    "CreatedToken",
    "DuplicateTokenName",
    "Principal",
    "TokenError",
    "TokenRow",
    "TokenService",
    "UnknownToken",
]

log = structlog.get_logger("duly.auth")

#: ``last_used_at`` is written at most this often per token, so a busy client does not turn
#: every authenticated request into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)

_ID_ATTEMPTS = 3  # a 40-bit id collides rarely; a fresh id settles it


class TokenError(ValueError):
    """A token request that cannot be done; nothing was changed."""


class UnknownToken(TokenError):
    """No token (or no token not yet revoked) has that id or name."""


class DuplicateTokenName(TokenError):
    """A token not revoked already has that name."""


@dataclass(frozen=True, slots=True)
class TokenRow:
    """A stored token, without its secret or hash."""

    id: str
    name: str
    role: Role
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None
    last_used_at: datetime | None

    def active(self, now: datetime) -> bool:
        """Neither revoked nor expired at ``now``."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True, slots=True)
class CreatedToken:
    """A token just created: ``text`` is the credential, shown once and never stored."""

    row: TokenRow
    text: str

    def __repr__(self) -> str:  # keep the credential out of tracebacks and debug output
        return f"CreatedToken(row={self.row!r})"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a valid token speaks for."""

    token_id: str
    name: str
    role: Role


_COLUMNS = [c for c in tokens.c if c.name != "secret_hash"]


def _row(r: Any) -> TokenRow:
    return TokenRow(
        id=r.id,
        name=r.name,
        role=Role(r.role),
        created_at=r.created_at,
        created_by=r.created_by,
        expires_at=r.expires_at,
        revoked_at=r.revoked_at,
        revoked_by=r.revoked_by,
        last_used_at=r.last_used_at,
    )


class TokenService:
    """API tokens on one database; time comes from ``clock``.

    With a ``cache`` (:class:`~duly.auth.cache.TokenCache`, the API's), a token verified in
    the last few seconds is authenticated from memory, and :meth:`revoke` forgets it at once.
    """

    def __init__(self, engine: Engine, clock: Clock, cache: TokenCache | None = None) -> None:
        self.engine = engine
        self.clock = clock
        self.cache = cache

    def create(
        self, name: str, role: Role, *, created_by: str, expires_in: timedelta | None = None
    ) -> CreatedToken:
        """Issue a token named ``name`` with ``role``, valid for ``expires_in`` (or forever).

        :raises DuplicateTokenName: if a token not revoked has that name.
        :raises ValueError: for a bad name.
        """
        check_name(name)
        now = self.clock.now()
        expires_at = now + expires_in if expires_in is not None else None
        for _ in range(_ID_ATTEMPTS):
            issued = new_token()
            try:
                with self.engine.begin() as conn:
                    self._check_name_free(conn, name)
                    conn.execute(
                        insert(tokens).values(
                            id=issued.token_id,
                            name=name,
                            role=role.value,
                            secret_hash=issued.secret_hash,
                            created_at=now,
                            created_by=created_by,
                            expires_at=expires_at,
                        )
                    )
                    row = self._get(conn, issued.token_id)
            except IntegrityError:
                # a name taken by a concurrent create, or (rarely) an id already in use
                with self.engine.connect() as conn:
                    self._check_name_free(conn, name)
                continue
            assert row is not None
            log.info("token created", token_id=row.id, name=name, role=role.value)
            return CreatedToken(row=row, text=issued.text)
        raise RuntimeError("could not find a free token id")

    def list(self) -> list[TokenRow]:
        """Every token, revoked ones included, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(*_COLUMNS).order_by(tokens.c.created_at, tokens.c.id)).all()
        return [_row(r) for r in rows]

    def get(self, token_id: str) -> TokenRow | None:
        """The token with public id ``token_id``, if any."""
        with self.engine.connect() as conn:
            return self._get(conn, token_id)

    def revoke(self, id_or_name: str, *, revoked_by: str) -> TokenRow:
        """Revoke the token with this public id or, failing that, the one not revoked with this name.

        :raises UnknownToken: if there is no such token, or it is already revoked.
        """
        now = self.clock.now()
        with self.engine.begin() as conn:
            row = self._find(conn, id_or_name)
            if row is None:
                raise UnknownToken(f"no token {id_or_name!r} to revoke")
            if row.revoked_at is not None:
                raise UnknownToken(f"token {row.id} ({row.name}) is already revoked")
            conn.execute(
                update(tokens)
                .where(tokens.c.id == row.id, tokens.c.revoked_at.is_(None))
                .values(revoked_at=now, revoked_by=revoked_by)
            )
            revoked = self._get(conn, row.id)
        assert revoked is not None
        if self.cache is not None:
            self.cache.forget(revoked.id)
        log.info("token revoked", token_id=revoked.id, name=revoked.name)
        return revoked

    def authenticate(self, token_text: str, now: datetime) -> Principal | None:
        """The principal of ``token_text`` if it is a known token, not revoked, not expired at ``now``.

        Anything else (malformed, unknown id, wrong secret, revoked, expired) is ``None``: a
        caller gets no hint which. Records ``last_used_at`` at most once a minute. With a
        cache, a token verified less than its ``ttl`` ago is answered from memory.
        """
        if self.cache is not None:
            cached = self.cache.get(token_text, now)
            if cached is not None:
                return cached
        parsed = parse_token(token_text)
        if parsed is None:
            return None
        with self.engine.connect() as conn:
            found = conn.execute(select(tokens).where(tokens.c.id == parsed.token_id)).first()
        if found is None or not token_matches(parsed, found.secret_hash):
            return None
        row = _row(found)
        if not row.active(now):
            return None
        self._touch(row, now)
        principal = Principal(token_id=row.id, name=row.name, role=row.role)
        if self.cache is not None:
            self.cache.put(token_text, principal, now, row.expires_at)
        return principal

    def cached(self, token_text: str, now: datetime) -> Principal | None:
        """The principal of ``token_text`` from the cache alone (no database), if it is there."""
        return self.cache.get(token_text, now) if self.cache is not None else None

    # -- helpers ------------------------------------------------------------------

    def _touch(self, row: TokenRow, now: datetime) -> None:
        if row.last_used_at is not None and now - row.last_used_at < LAST_USED_RESOLUTION:
            return
        stale = now - LAST_USED_RESOLUTION
        with self.engine.begin() as conn:
            # conditional, so concurrent requests on several nodes write it once
            conn.execute(
                update(tokens)
                .where(
                    tokens.c.id == row.id,
                    or_(tokens.c.last_used_at.is_(None), tokens.c.last_used_at <= stale),
                )
                .values(last_used_at=now)
            )

    @staticmethod
    def _get(conn: Connection, token_id: str) -> TokenRow | None:
        r = conn.execute(select(*_COLUMNS).where(tokens.c.id == token_id)).first()
        return _row(r) if r is not None else None

    def _find(self, conn: Connection, id_or_name: str) -> TokenRow | None:
        by_id = self._get(conn, id_or_name)
        if by_id is not None:
            return by_id
        r = conn.execute(
            select(*_COLUMNS).where(tokens.c.name == id_or_name, tokens.c.revoked_at.is_(None))
        ).first()
        return _row(r) if r is not None else None

    @staticmethod
    def _check_name_free(conn: Connection, name: str) -> None:
        taken = conn.execute(
            select(tokens.c.id).where(tokens.c.name == name, tokens.c.revoked_at.is_(None))
        ).scalar()
        if taken is not None:
            raise DuplicateTokenName(f"a token named {name!r} exists (id {taken})")
