"""Who is calling and what they may do: the principal of the bearer token, and role checks.

The :class:`~duly.api.middleware.RequestGate` authenticates every ``/api/v1`` request
before routing (401 for a missing, unknown, revoked or expired token) and leaves the
:class:`~duly.auth.service.Principal` on the request. Each route then declares its roles
with :func:`roles`; any other role gets 403. The declared roles are also written into the
OpenAPI document (``x-duly-roles``), where the matrix test and ``docs/api.md`` read them.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from duly.api.errors import ApiError
from duly.auth.roles import Role
from duly.auth.service import Principal

__all__ = ["ALL", "OPS", "OPS_READ", "READ_ALL", "bearer", "principal_of", "roles"]

#: Only documents the scheme in OpenAPI; the gate does the checking.
bearer = HTTPBearer(auto_error=False, description="An API token: `duly token create`.")

ALL = (Role.ADMIN, Role.OPERATOR, Role.AUDITOR, Role.CHANNEL)
READ_ALL = (Role.ADMIN, Role.OPERATOR, Role.AUDITOR)
"""Reading operations data: everyone but the customer channel."""
OPS = (Role.ADMIN, Role.OPERATOR)
"""Changing operations data."""
OPS_READ = READ_ALL


def principal_of(request: Request) -> Principal:
    """The authenticated caller of ``request`` (set by the gate)."""
    found = request.scope.get("state", {}).get("principal")
    if not isinstance(found, Principal):
        raise ApiError(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    return found


def roles(*allowed: Role) -> dict[str, Any]:
    """Route keyword arguments that admit only ``allowed`` roles (and document them)."""
    names = [r.value for r in allowed]

    def check(request: Request) -> Principal:
        who = principal_of(request)
        if who.role not in allowed:
            raise ApiError(403, f"role {who.role.value} may not do this; allowed: {', '.join(names)}")
        return who

    return {
        "dependencies": [Depends(bearer), Depends(check)],
        "openapi_extra": {"x-duly-roles": names},
    }
