"""The database URL: the schemes accepted, the driver chosen, and the password kept out of output."""

from __future__ import annotations

import re
from typing import Any

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
