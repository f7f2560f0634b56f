"""The database: the URL (schemes, driver, the password kept out of output) and how connections are bounded."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

_SQLITE = "sqlite"


_PG_DRIVER = "postgresql+psycopg"


_DB_SCHEMES = {
    "sqlite": _SQLITE,
    "postgresql": _PG_DRIVER,
    "postgres": _PG_DRIVER,
    "postgresql+psycopg": _PG_DRIVER,
}


_DB_RULE = (
    "allowed schemes are sqlite:///PATH, postgresql://…, postgresql+psycopg://… "
    "and postgres://… (the last two are read as postgresql+psycopg)"
)


def check_database_url(value: Any) -> Any:
    if not isinstance(value, str):
        return value  # the str type check reports it
    scheme, sep, rest = value.strip().partition("://")
    target = _DB_SCHEMES.get(scheme.lower())
    if not sep or target is None or (target == _SQLITE and len(rest) < 2):
        raise PydanticCustomError("database_url", _DB_RULE)
    if target == _SQLITE and not rest.startswith("/"):
        raise PydanticCustomError("database_url", _DB_RULE)
    return f"{target}://{rest}"


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (in the user part and in ``?password=``).

    >>> redact_url("postgresql+psycopg://duly:s3cret@db:5432/duly")
    'postgresql+psycopg://duly:***@db:5432/duly'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = len(rest)
    for stop in "/?#":
        index = rest.find(stop)
        if index != -1:
            end = min(end, index)
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        userinfo, _, hostport = authority.rpartition("@")
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            authority = f"{user}:***@{hostport}"
    tail = re.sub(r"(?i)([?&]password=)[^&#]*", r"\1***", tail)
    return f"{scheme}{sep}{authority}{tail}"


Seconds = Annotated[float, Field(ge=0)]

"""A limit in seconds; ``0`` means duly sets none."""


RESPONSE_MARGIN = 15.0

"""How much longer than the statement timeout the client waits for an answer by default:
the server's own, clean, error must come first, and a busy server may be a little late."""


class DatabaseSettings(BaseModel):
    """How connections are opened and bounded, so no loop can hang on the database.

    The PostgreSQL settings are ignored on SQLite, which has its busy timeout instead. The
    reason behind each default is in ``docs/configuration.md`` (``database``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    connect_timeout_seconds: Annotated[int, Field(ge=2, le=600)] = 5
    """Longest wait to open a connection (libpq ``connect_timeout``; it counts whole seconds, 2 at least)."""
    statement_timeout_seconds: Seconds = 30.0
    """The server cancels a statement running longer (``statement_timeout``)."""
    lock_timeout_seconds: Seconds = 10.0
    """The server gives up a wait for a lock after this long (``lock_timeout``)."""
    idle_in_transaction_timeout_seconds: Seconds = 60.0
    """The server ends a session idle this long inside a transaction (``idle_in_transaction_session_timeout``)."""
    response_timeout_seconds: Seconds | None = None
    """The client drops a connection whose server has not answered for this long.

    ``None``: :data:`RESPONSE_MARGIN` s past ``statement_timeout_seconds`` (45 by default),
    or no limit when that is off: statements may then legitimately take any time.
    """
    keepalives_idle_seconds: Annotated[int, Field(ge=1, le=7200)] = 10
    """TCP keepalive probes start after this long without traffic."""
    keepalives_interval_seconds: Annotated[int, Field(ge=1, le=600)] = 5
    """Seconds between unanswered keepalive probes."""
    keepalives_count: Annotated[int, Field(ge=1, le=100)] = 3
    """Unanswered probes before the connection is declared dead."""
    tcp_user_timeout_seconds: Seconds = 25.0
    """Sent data unacknowledged this long kills the connection (``tcp_user_timeout``, Linux)."""
    pool_size: Annotated[int, Field(ge=1, le=1000)] | None = None
    """Connections the pool keeps open (up to twice as many more under load); ``None``:
    10 for the node's loops and jobs plus ``api.threads``."""
    pool_timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    """Longest wait for a free connection of the pool."""
    pool_recycle_seconds: Annotated[float, Field(gt=0)] = 1800.0
    """A pooled connection older than this is replaced before use."""
    sqlite_busy_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    """SQLite: how long a writer waits for the database's single write lock."""

    @property
    def response_timeout(self) -> float:
        """``response_timeout_seconds``, or the one it follows from (``0``: no limit)."""
        if self.response_timeout_seconds is not None:
            return self.response_timeout_seconds
        statement = self.statement_timeout_seconds
        return statement + RESPONSE_MARGIN if statement else 0.0

    @model_validator(mode="after")
    def _timeouts_in_order(self) -> DatabaseSettings:
        statement, lock = self.statement_timeout_seconds, self.lock_timeout_seconds
        response = self.response_timeout
        if statement and lock and lock >= statement:
            raise _order_error(
                "lock_timeout_seconds",
                lock,
                "statement_timeout_seconds",
                statement,
                "a wait for a lock is part of a statement",
            )
        slowest = max(statement, lock)
        if response and slowest and response <= slowest:
            name = "statement_timeout_seconds" if statement >= lock else "lock_timeout_seconds"
            raise _order_error(
                "response_timeout_seconds",
                response,
                name,
                slowest,
                "so the server's own timeout ends a slow statement cleanly first",
            )
        return self


def _order_error(
    field: str, value: float, other: str, limit: float, why: str
) -> PydanticCustomError:
    return PydanticCustomError(
        "database_timeout_order",
        "must be less than database.{other} ({limit}): {why}"
        if field == "lock_timeout_seconds"
        else "must be greater than database.{other} ({limit}) {why}",
        {
            "other": other,
            "limit": f"{limit:g}",
            "why": why,
            "at": (field,),
            "value": value,
            "related": ((other,),),
        },
    )
