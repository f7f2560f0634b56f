"""Every route of the OpenAPI document, called with a token of every role, against ``docs/api.md``.

The table "Roles by route" in ``docs/api.md`` is the contract: a route missing from it, a
row for a route that does not exist, a role admitted that the table refuses (or the other
way round) — each fails here. The routes are called with absent ids and empty bodies, so
an admitted role gets a 404 or 422, a refused one 403, and nobody changes anything.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from duly.auth.roles import Role

DOC = Path(__file__).parents[2] / "docs" / "api.md"
ROLES = [Role.ADMIN, Role.OPERATOR, Role.AUDITOR, Role.CHANNEL]
_ROW = re.compile(r"^\|\s*(GET|POST|PUT|PATCH|DELETE)\s*\|\s*`([^`]+)`\s*\|(.*)\|\s*$")
_METHODS = ("get", "post", "put", "patch", "delete")


def documented_matrix() -> dict[tuple[str, str], set[Role]]:
    """(method, path) → the roles the table in docs/api.md admits."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Roles by route", 1)[1].split("\n## ", 1)[0]
    matrix: dict[tuple[str, str], set[Role]] = {}
    for line in section.splitlines():
        m = _ROW.match(line.strip())
        if m is None:
            continue
        cells = [c.strip() for c in m.group(3).split("|")]
        assert len(cells) >= len(ROLES), f"row needs a cell per role: {line}"
        allowed = {role for role, cell in zip(ROLES, cells, strict=False) if cell == "✓"}
        key = (m.group(1), m.group(2))
        assert key not in matrix, f"route listed twice in docs/api.md: {key}"
        matrix[key] = allowed
    return matrix


def api_operations(app: FastAPI) -> dict[tuple[str, str], dict[str, Any]]:
    """(method, path) → its OpenAPI operation, for every ``/api/v1`` route."""
    ops = {}
    for path, item in app.openapi()["paths"].items():
        if not path.startswith("/api/v1"):
            continue
        for method in _METHODS:
            if method in item:
                ops[(method.upper(), path)] = item[method]
    return ops


def _row_for(key: tuple[str, str], op: dict[str, Any]) -> str:
    declared = set(op.get("x-duly-roles", []))
    cells = " | ".join("✓" if r.value in declared else "—" for r in ROLES)
    return f"| {key[0]} | `{key[1]}` | {cells} |"


def _concrete(path: str, op: dict[str, Any]) -> str:
    """``path`` with each parameter replaced by a value naming nothing that exists."""
    kinds = {p["name"]: p.get("schema", {}).get("type") for p in op.get("parameters", [])
             if p.get("in") == "path"}  # fmt: skip
    return re.sub(
        r"\{(\w+)\}",
        lambda m: "987654321" if kinds.get(m.group(1)) == "integer" else "no-such-thing",
        path,
    )


def test_the_table_lists_every_route_and_only_those(app: FastAPI) -> None:
    documented, actual = documented_matrix(), api_operations(app)
    missing = sorted(set(actual) - set(documented))
    stale = sorted(set(documented) - set(actual))
    assert not missing, "routes missing from docs/api.md:\n" + "\n".join(
        _row_for(k, actual[k]) for k in missing
    )
    assert not stale, f"docs/api.md lists routes that do not exist: {stale}"


def test_each_route_declares_the_roles_the_table_gives(app: FastAPI) -> None:
    documented = documented_matrix()
    for key, op in api_operations(app).items():
        declared = {Role(r) for r in op.get("x-duly-roles", [])}
        assert declared, f"{key} declares no roles"
        assert declared == documented.get(key), f"{key}: code says {sorted(declared)}"


@pytest.mark.parametrize("role", ROLES, ids=[r.value for r in ROLES])
async def test_every_route_admits_exactly_the_roles_of_the_table(
    app: FastAPI, http: httpx.AsyncClient, auth, role: Role
) -> None:
    documented = documented_matrix()
    wrong = []
    for (method, path), op in api_operations(app).items():
        body = {} if method in ("POST", "PUT", "PATCH") else None
        response = await http.request(method, _concrete(path, op), json=body, headers=auth(role))
        admitted = role in documented.get((method, path), set())
        refused = response.status_code == 403
        if response.status_code in (401, 429) or response.status_code >= 500 or admitted == refused:
            wrong.append(f"{method} {path}: {response.status_code} {response.text[:120]}")
    assert not wrong, f"as {role.value}:\n" + "\n".join(wrong)


async def test_every_route_needs_a_token(app: FastAPI, http: httpx.AsyncClient) -> None:
    for (method, path), op in api_operations(app).items():
        response = await http.request(method, _concrete(path, op), json={} if method != "GET" else None)
        assert response.status_code == 401, f"{method} {path}: {response.status_code}"
