"""``Idempotency-Key`` on creating POSTs: the same key and body answer the first response again.

A key is scoped to the calling token. The first request with a key claims it (a row in
``api_idempotency``, state ``pending``); a second one while the first is in flight gets 409;
when the first finishes, its status and body are stored and every later request with the
same key and the same body gets them back with ``Idempotent-Replayed: true``. The same key
with a different body is 422. A request that fails (any 4xx) releases its key, since it
changed nothing.

Exactly-once does not rest on this table alone: each created object carries the key in its
own unique column (a transfer's ``request_key``, a run's ``idempotency_key``, a payment's
request key, a schedule's name), written in the object's own transaction. If a node dies
between creating the object and storing the response, the key stays ``pending`` until it
is stale (``wait`` cap + a minute); the next request with the key then runs the create
again, which finds the object already there and answers with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import anyio
import anyio.to_thread
from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from duly.api.errors import ApiError
from duly.api.security import principal_of
from duly.clock import Clock
from duly.engine.store.schema import metadata
from duly.engine.store.types import UTCDateTime

__all__ = [
    "REPLAY_HEADER",
    "Created",
    "IdempotencyKeys",
    "api_idempotency",
    "respond_once",
]

REPLAY_HEADER = "Idempotent-Replayed"
_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII, no spaces

api_idempotency = Table(
    "api_idempotency",
    metadata,
    Column("scope", String(64), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    # pending | done
    Column("state", String(16), nullable=False),
    Column("status_code", Integer),
    Column("response", Text),
    Column("location", String(500)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_api_idempotency_expires_at", "expires_at"),
)


@dataclass(frozen=True, slots=True)
class Created:
    """What a creating route answers: status, JSON body and, for 201/202, a ``Location``."""

    status: int
    body: Any
    location: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def response(self, replayed: bool = False) -> JSONResponse:
        """As an HTTP response."""
        headers = dict(self.headers)
        if self.location:
            headers["Location"] = self.location
        if replayed:
            headers[REPLAY_HEADER] = "true"
        return JSONResponse(jsonable_encoder(self.body), status_code=self.status, headers=headers)


class IdempotencyKeys:
    """The key records on one database."""

    def __init__(self, engine: Engine, clock: Clock, *, ttl: timedelta, stale_after: timedelta) -> None:
        self.engine = engine
        self.clock = clock
        self.ttl = ttl
        self.stale_after = stale_after
        self._last_purge: datetime | None = None
        self._postgres = engine.dialect.name == "postgresql"

    @contextlib.contextmanager
    def _statement(self) -> Iterator[Connection]:
        """A transaction for one write to this table, committed without waiting for the disk.

        On PostgreSQL the commit does not wait for its WAL to be flushed
        (``synchronous_commit = off``, for this transaction only): at worst a crash loses
        the last fraction of a second of these writes, never anything else, and the table
        is not what exactly-once rests on (see the module). A lost claim or answer leaves
        the key free or ``pending``, and the next request with it runs the create again,
        which finds the object by its own key. The object's own transaction does wait, and
        its flush carries every earlier write of the log, a claim before it included.
        """
        with self.engine.begin() as conn:
            if self._postgres:
                conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            yield conn

    def claim(self, scope: str, key: str, fingerprint: str) -> Created | None:
        """Claim ``key`` for a new request (None), or the stored answer to replay.

        :raises ApiError: 409 while the first request is in flight, 422 for another body.
        """
        now = self.clock.now()
        self._purge_expired(now)
        row = {"scope": scope, "key": key, "fingerprint": fingerprint, "state": "pending",
               "created_at": now, "expires_at": now + self.ttl}  # fmt: skip
        for _ in range(3):
            try:
                with self._statement() as conn:
                    conn.execute(insert(api_idempotency).values(**row))
                return None
            except IntegrityError:
                pass
            found = self._get(scope, key)
            if found is None:
                continue  # released meanwhile: claim again
            if found.fingerprint != fingerprint:
                raise ApiError(422, f"Idempotency-Key {key!r} was used with a different request",
                               code="IDEMPOTENCY_KEY_REUSED")  # fmt: skip
            if found.state == "done" and found.expires_at > now:
                return Created(found.status_code, json.loads(found.response), found.location)
            if found.state == "pending" and now - found.created_at < self.stale_after:
                raise ApiError(409, f"a request with Idempotency-Key {key!r} is still in progress",
                               code="IDEMPOTENCY_IN_PROGRESS", headers={"Retry-After": "1"})  # fmt: skip
            if self._take_over(found, row):
                return None
        raise ApiError(409, f"Idempotency-Key {key!r} is contended; retry",
                       code="IDEMPOTENCY_IN_PROGRESS", headers={"Retry-After": "1"})  # fmt: skip

    def finish(self, scope: str, key: str, answer: Created) -> None:
        """Store the first answer, to replay until the key expires."""
        body = json.dumps(jsonable_encoder(answer.body), separators=(",", ":"))
        with self._statement() as conn:
            conn.execute(
                update(api_idempotency)
                .where(api_idempotency.c.scope == scope, api_idempotency.c.key == key)
                .values(state="done", status_code=answer.status, response=body,
                        location=answer.location)
            )

    def release(self, scope: str, key: str) -> None:
        """Forget a claim whose request failed (it changed nothing)."""
        with self._statement() as conn:
            conn.execute(
                delete(api_idempotency).where(
                    api_idempotency.c.scope == scope,
                    api_idempotency.c.key == key,
                    api_idempotency.c.state == "pending",
                )
            )

    def _get(self, scope: str, key: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(
                select(api_idempotency).where(
                    api_idempotency.c.scope == scope, api_idempotency.c.key == key
                )
            ).first()

    def _take_over(self, found: Any, row: dict[str, Any]) -> bool:
        """Reclaim an expired key or a stale pending one; False if another request won."""
        with self._statement() as conn:
            done = conn.execute(
                update(api_idempotency)
                .where(
                    api_idempotency.c.scope == found.scope,
                    api_idempotency.c.key == found.key,
                    api_idempotency.c.created_at == found.created_at,
                )
                .values(**{k: v for k, v in row.items() if k not in ("scope", "key")},
                        status_code=None, response=None, location=None)
            )
        return bool(done.rowcount)

    def _purge_expired(self, now: datetime) -> None:
        if self._last_purge is not None and now - self._last_purge < timedelta(minutes=1):
            return
        self._last_purge = now
        with self.engine.begin() as conn:
            conn.execute(delete(api_idempotency).where(api_idempotency.c.expires_at < now))


def fingerprint_of(request: Request, payload: Any) -> str:
    """SHA-256 over the method, the path and the canonical JSON of the body."""
    canonical = json.dumps(jsonable_encoder(payload), sort_keys=True, separators=(",", ":"))
    text = f"{request.method} {request.url.path}\n{canonical}"
    return hashlib.sha256(text.encode()).hexdigest()


def check_key(key: str) -> str:
    """A key is 1–200 printable ASCII characters without spaces."""
    if not _KEY.match(key):
        raise ApiError(422, "Idempotency-Key: 1–200 printable ASCII characters, no spaces",
                       code="VALIDATION_ERROR")  # fmt: skip
    return key


async def respond_once(
    request: Request,
    keys: IdempotencyKeys,
    key: str | None,
    payload: Any,
    create: Callable[[str | None], Awaitable[Created]],
) -> JSONResponse:
    """Run ``create`` once per key, answering repeats with its first answer.

    ``create`` gets the key to store on the object (scoped to the caller), or None without one.
    """
    if key is None:
        return (await create(None)).response()
    check_key(key)
    who = principal_of(request)
    scope = who.token_id
    fp = fingerprint_of(request, payload)
    stored = await anyio.to_thread.run_sync(keys.claim, scope, key, fp)
    if stored is not None:
        return stored.response(replayed=True)
    try:
        answer = await create(f"api:{scope}:{key}")
    except BaseException:
        with anyio.CancelScope(shield=True):  # release even when the client went away
            await anyio.to_thread.run_sync(keys.release, scope, key)
        raise
    await anyio.to_thread.run_sync(keys.finish, scope, key, answer)
    return answer.response()
