"""Who is acting: the actor and request id every audit event of the current task carries.

Entry points set them once and everything below records under them: the API's gate for
each request (the token's id, name and role, and the request id), the CLI for each command
(the operating-system user), a node for its loops (``system:<node>``). They live in context
variables, so they follow a request into the threads its blocking calls run on
(``asyncio.to_thread``, Starlette's thread pool and the node's ``Env.db`` copy the context).
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

__all__ = [
    "Actor",
    "acting_as",
    "cli_actor",
    "current_actor",
    "current_request_id",
    "in_request",
    "set_actor",
    "system_actor",
]


@dataclass(frozen=True, slots=True)
class Actor:
    """An actor as recorded: ``id`` is ``token:<id>``, ``system:<node>`` or ``cli:<user>``."""

    id: str
    name: str | None = None
    role: str | None = None


_ACTOR: ContextVar[Actor | None] = ContextVar("duly_audit_actor", default=None)
_REQUEST_ID: ContextVar[str | None] = ContextVar("duly_audit_request_id", default=None)
_UNKNOWN = Actor("system:unknown")


def system_actor(node: str) -> Actor:
    """The engine acting on its own, on node ``node``."""
    return Actor(f"system:{node}", node, "system")


def cli_actor() -> Actor:
    """The operating-system user running a CLI command."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        user = "unknown"
    return Actor(f"cli:{user}", user, "cli")


def current_actor() -> Actor:
    """The actor of the current task (``system:unknown`` when no entry point set one)."""
    return _ACTOR.get() or _UNKNOWN


def current_request_id() -> str | None:
    """The HTTP request being served, if any."""
    return _REQUEST_ID.get()


def set_actor(actor: Actor) -> None:
    """Make ``actor`` the actor of the current context from now on (a process or task start)."""
    _ACTOR.set(actor)


@contextmanager
def acting_as(actor: Actor) -> Iterator[Actor]:
    """Record under ``actor`` inside the block."""
    token = _ACTOR.set(actor)
    try:
        yield actor
    finally:
        _ACTOR.reset(token)


@contextmanager
def in_request(actor: Actor, request_id: str | None) -> Iterator[None]:
    """Record under ``actor`` and ``request_id`` inside the block (one HTTP request)."""
    actor_token = _ACTOR.set(actor)
    request_token = _REQUEST_ID.set(request_id)
    try:
        yield
    finally:
        _REQUEST_ID.reset(request_token)
        _ACTOR.reset(actor_token)
