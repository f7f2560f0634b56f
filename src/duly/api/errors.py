"""Every error answer of the API, in one shape: ``{"error": {"code", "message", "details"}}``.

Routes raise :class:`ApiError` or let a service's own exception through; the handlers here
turn each into its 4xx status. Nothing a request can send reaches a 5xx: an unexpected
exception is logged with the request id and answered 500 with the same envelope, which the
schema tests treat as a failure.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from duly.auth.service import TokenError, UnknownToken
from duly.banking.money import MoneyError
from duly.engine import errors as engine_errors
from duly.operations import errors as op_errors
from duly.timing import SpecError

__all__ = [
    "ERROR_RESPONSES",
    "ApiError",
    "ErrorResponse",
    "error_body",
    "install_error_handlers",
]

log = structlog.get_logger("duly.api")

_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "BODY_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    500: "INTERNAL",
}


class ApiError(Exception):
    """An answer other than success: ``status`` with a stable ``code`` and a one-line message."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "ERROR")
        self.message = message
        self.details = details
        self.headers = headers or {}


class ErrorInfo(BaseModel):
    """What went wrong: a stable ``code`` to branch on, a message for people, and details."""

    code: str
    message: str
    details: Any = None
    """Per-field problems for ``VALIDATION_ERROR`` (``field``, ``message``, ``type``), else null."""


class ErrorResponse(BaseModel):
    """The body of every error answer."""

    error: ErrorInfo


def _documented(description: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"model": ErrorResponse, "description": description}
    if headers:
        entry["headers"] = {name: {"description": text, "schema": {"type": "string"}}
                            for name, text in headers.items()}  # fmt: skip
    return entry


#: The errors any ``/api/v1`` route can answer, for its OpenAPI entry: the gate's (401, 413,
#: 429) and the ones a route's checks and services raise. A route's own ``responses`` win.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _documented("The body could not be read (not JSON, or not UTF-8)."),
    401: _documented("No valid bearer token.", {"WWW-Authenticate": "`Bearer`."}),
    403: _documented("The token's role may not call this route."),
    404: _documented("No such object, or an unknown job."),
    409: _documented(
        "The object's state forbids this, or a request with the same `Idempotency-Key` is "
        "still in progress.",
        {"Retry-After": "Seconds to wait, for a key in progress."},
    ),
    413: _documented("The request body is over `api.max_body_bytes`."),
    422: _documented("The request is invalid: `details` lists each problem."),
    429: _documented("Over the token's rate limit.", {"Retry-After": "Seconds to wait."}),
}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """The envelope every error answer carries."""
    return {"error": {"code": code, "message": message, "details": details}}


def _answer(status: int, code: str, message: str, details: Any = None,
            headers: dict[str, str] | None = None) -> JSONResponse:  # fmt: skip
    body = jsonable_encoder(error_body(code, message, details))
    return JSONResponse(body, status_code=status, headers=headers)


#: A service's refusal → the status it stands for. The first matching class wins.
_SERVICE_ERRORS: list[tuple[type[Exception], int, str]] = [
    (op_errors.NotFound, 404, "NOT_FOUND"),
    (op_errors.StateConflict, 409, "STATE_CONFLICT"),
    (op_errors.IdempotencyConflict, 422, "IDEMPOTENCY_KEY_REUSED"),
    (op_errors.OperationError, 422, "VALIDATION_ERROR"),
    (engine_errors.NotFound, 404, "NOT_FOUND"),
    (engine_errors.UnknownJob, 404, "UNKNOWN_JOB"),
    (engine_errors.RunConflict, 409, "STATE_CONFLICT"),
    (UnknownToken, 404, "NOT_FOUND"),
    (TokenError, 422, "VALIDATION_ERROR"),
    (SpecError, 422, "INVALID_SPEC"),
    (MoneyError, 422, "INVALID_AMOUNT"),
]


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        out.append({"field": ".".join(loc), "message": str(err.get("msg", "")),
                    "type": err.get("type")})  # fmt: skip
    return out


def install_error_handlers(app: FastAPI) -> None:
    """Answer every failure with the envelope and the right status."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _answer(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(exc)
        first = details[0] if details else {"field": "", "message": "invalid request"}
        where = f"{first['field']}: " if first["field"] else ""
        return _answer(422, "VALIDATION_ERROR", f"{where}{first['message']}", details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else _CODES.get(exc.status_code, "")
        headers = dict(exc.headers) if exc.headers else None
        return _answer(exc.status_code, _CODES.get(exc.status_code, "ERROR"), message,
                       headers=headers)  # fmt: skip

    for cls, status, code in _SERVICE_ERRORS:
        app.add_exception_handler(cls, _service_handler(status, code))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The route's template, not the path: a path can hold an account number.
        route = getattr(request.scope.get("route"), "path", "unmatched")
        log.error("api.unexpected_error", error=type(exc).__name__, route=route, exc_info=exc)
        return _answer(500, "INTERNAL", "internal error; the request id is in the server log")


def _service_handler(status: int, code: str) -> Any:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return _answer(status, getattr(exc, "api_code", code), str(exc))

    return handle
