"""The HTTP API over httpx against the real app, on each store (a SQLite file, then PostgreSQL).

``http`` is an ``httpx.AsyncClient`` on the ASGI app; ``auth(role)`` issues a token of that
role and returns its ``Authorization`` header. The app's clock is the real one unless a test
overrides ``api_clock``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from duly.api.app import create_app
from duly.auth.roles import Role
from duly.auth.service import TokenService
from duly.clock import Clock, SystemClock
from duly.config import Settings
from duly.engine.store.sql import SqlStore
from duly.runtime import job_registry

Auth = Callable[..., dict[str, str]]


@pytest.fixture
def api_clock() -> Clock:
    """The app's clock: the real one (override for manual time)."""
    return SystemClock()


@pytest.fixture
def api_settings(db_url: str) -> Settings:
    """Settings of the app under test (override to change limits)."""
    return Settings(database_url=db_url)


@pytest.fixture
def app(api_settings: Settings, store: SqlStore, api_clock: Clock) -> FastAPI:
    """The API over the test store."""
    return create_app(api_settings, store, job_registry(api_settings), api_clock)


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the app (no socket)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://duly.test") as client:
        yield client


@pytest.fixture
def auth(store: SqlStore, api_clock: Clock) -> Auth:
    """``auth(role, name=None)``: a new token of ``role`` as an ``Authorization`` header."""
    tokens = TokenService(store.engine, api_clock)
    issued: dict[Any, dict[str, str]] = {}

    def header(role: Role | str, name: str | None = None) -> dict[str, str]:
        role = Role(role)
        key = (role, name)
        if key not in issued:
            created = tokens.create(name or f"test-{role.value}-{len(issued)}", role,
                                    created_by="tests")  # fmt: skip
            issued[key] = {"Authorization": f"Bearer {created.text}"}
        return issued[key]

    return header
