"""Errors of the operations services; each maps to one 4xx answer of the API later."""

from __future__ import annotations

__all__ = ["IdempotencyConflict", "InvalidRequest", "NotFound", "OperationError", "StateConflict"]


class OperationError(ValueError):
    """A request the operations services refuse; the message is one line for the caller."""

    code = "VALIDATION_ERROR"


class InvalidRequest(OperationError):
    """A field is missing or wrong (400)."""


class IdempotencyConflict(OperationError):
    """The idempotency key was used before with a different body (409); nothing changed."""

    code = "IDEMPOTENCY_CONFLICT"


class NotFound(OperationError):
    """No such transfer or payment (404)."""

    code = "NOT_FOUND"


class StateConflict(OperationError):
    """The operation's state does not allow this (409): e.g. cancelling a transfer that started."""

    code = "STATE_CONFLICT"
