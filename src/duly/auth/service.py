"""API tokens in the store: create, list, revoke, and authenticate a presented token.

The token text exists only in the value :meth:`TokenService.create` returns; the store keeps
its SHA-256 (see :mod:`duly.auth.tokens`), and no log line carries either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import Connection, Engine, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from duly.audit import AuditEntry, record
from duly.auth.roles import Role
from duly.auth.schema import token_customers, tokens
from duly.auth.tokens import check_name, new_token, parse_token, token_matches
from duly.banking.schema import customers as customers_table
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
    #: The customers a ``channel`` token acts for (empty: none, or another role).
    customers: tuple[int, ...] = ()

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
    #: The customers a ``channel`` token acts for; an unbound channel token acts for none.
    customers: frozenset[int] = frozenset()

    def acts_for(self, customer_id: int) -> bool:
        """Whether this caller may see ``customer_id``'s data: staff roles any, a channel its own."""
        return self.role is not Role.CHANNEL or customer_id in self.customers

    @property
    def recorded_as(self) -> str:
        """How a change this principal makes is attributed (``token:<id>:<name>``)."""
        return f"token:{self.token_id}:{self.name}"


_COLUMNS = [c for c in tokens.c if c.name != "secret_hash"]


def _row(r: Any, bound: Sequence[int] = ()) -> TokenRow:
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
        customers=tuple(sorted(bound)),
    )


def _bound(conn: Connection, token_ids: Sequence[str]) -> dict[str, list[int]]:
    """The customers each of ``token_ids`` is bound to."""
    out: dict[str, list[int]] = {}
    if not token_ids:
        return out
    query = select(token_customers).where(token_customers.c.token_id.in_(list(token_ids)))
    for r in conn.execute(query):
        out.setdefault(r.token_id, []).append(int(r.customer_id))
    return out


def _token_entry(action: str, row: TokenRow) -> AuditEntry:
    """The audit event of a token change: who holds it and what it may do, never its secret.

    The row read back holds no hash (``_COLUMNS`` leaves it out), so none can slip in here.
    """
    details: dict[str, Any] = {
        "name": row.name,
        "role": row.role.value,
        "expires_at": row.expires_at,
        "created_by": row.created_by,
    }
    if row.customers:
        details["customers"] = list(row.customers)
    if row.revoked_at is not None:
        details["revoked_by"] = row.revoked_by
    return AuditEntry(action, "token", row.id, details)


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
        self,
        name: str,
        role: Role,
        *,
        created_by: str,
        expires_in: timedelta | None = None,
        customers: Sequence[int] = (),
    ) -> CreatedToken:
        """Issue a token named ``name`` with ``role``, valid for ``expires_in`` (or forever).

        A ``channel`` token acts for ``customers`` only (on the routes that check).

        :raises DuplicateTokenName: if a token not revoked has that name.
        :raises TokenError: customers for a role other than channel, or an unknown customer.
        :raises ValueError: for a bad name.
        """
        check_name(name)
        bound = sorted(set(customers))
        if bound and role is not Role.CHANNEL:
            raise TokenError("only a channel token is bound to customers")
        now = self.clock.now()
        expires_at = now + expires_in if expires_in is not None else None
        for _ in range(_ID_ATTEMPTS):
            issued = new_token()
            try:
                with self.engine.begin() as conn:
                    self._check_name_free(conn, name)
                    self._check_customers(conn, bound)
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
                    if bound:
                        conn.execute(
                            insert(token_customers),
                            [{"token_id": issued.token_id, "customer_id": c} for c in bound],
                        )
                    row = self._get(conn, issued.token_id)
                    assert row is not None
                    record(conn, [_token_entry("token.create", row)], now)
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
            bound = _bound(conn, [r.id for r in rows if r.role == Role.CHANNEL.value])
        return [_row(r, bound.get(r.id, ())) for r in rows]

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
            record(conn, [_token_entry("token.revoke", revoked)], now)
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
        acts_for: frozenset[int] = frozenset()
        if row.role is Role.CHANNEL:
            with self.engine.connect() as conn:
                acts_for = frozenset(_bound(conn, [row.id]).get(row.id, ()))
        principal = Principal(token_id=row.id, name=row.name, role=row.role, customers=acts_for)
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
        if r is None:
            return None
        return _row(r, _bound(conn, [r.id]).get(r.id, ()))

    def _find(self, conn: Connection, id_or_name: str) -> TokenRow | None:
        by_id = self._get(conn, id_or_name)
        if by_id is not None:
            return by_id
        r = conn.execute(
            select(*_COLUMNS).where(tokens.c.name == id_or_name, tokens.c.revoked_at.is_(None))
        ).first()
        return self._get(conn, r.id) if r is not None else None

    @staticmethod
    def _check_customers(conn: Connection, bound: Sequence[int]) -> None:
        if not bound:
            return
        known = conn.execute(
            select(customers_table.c.id).where(customers_table.c.id.in_(list(bound)))
        ).scalars()
        missing = sorted(set(bound) - {int(c) for c in known})
        if missing:
            raise TokenError(f"no customer {', '.join(map(str, missing))} to bind the token to")

    @staticmethod
    def _check_name_free(conn: Connection, name: str) -> None:
        taken = conn.execute(
            select(tokens.c.id).where(tokens.c.name == name, tokens.c.revoked_at.is_(None))
        ).scalar()
        if taken is not None:
            raise DuplicateTokenName(f"a token named {name!r} exists (id {taken})")
