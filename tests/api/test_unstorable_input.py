"""Input a store cannot take is a 422 before it reaches the store, not a driver error (500).

Each case here was a 500 found by the schema fuzzing (``test_schema_fuzz.py``), on PostgreSQL,
SQLite or both; these pin them down without the fuzzer.
"""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from apitest import error_of
from duly.auth.roles import Role


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/runs/9223372036854775808",  # one past a signed 64-bit id
        "/api/v1/runs/99999999999999999999999",
        "/api/v1/runs/0",
        "/api/v1/runs?cursor=OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk",  # a cursor of 99…9 (23 digits)
        "/api/v1/runs?since=0001-01-01T00:00:00%2B14:00",  # before year 1 in UTC
        "/api/v1/runs?until=9999-12-31T23:59:59-14:00",  # after year 9999 in UTC
        "/api/v1/schedules/a%00b",
        "/api/v1/runs?job=a%00b",
        "/api/v1/tokens/%00",
    ],
)
async def test_ids_instants_and_text_no_store_holds_are_422(
    http: httpx.AsyncClient, auth, path: str
) -> None:
    response = await http.get(path, headers=auth(Role.ADMIN))
    assert response.status_code == 422, response.text
    assert error_of(response)["code"] in ("VALIDATION_ERROR", "INVALID_CURSOR")


async def test_the_largest_id_is_a_plain_404(http: httpx.AsyncClient, auth) -> None:
    response = await http.get("/api/v1/runs/9223372036854775807", headers=auth(Role.ADMIN))
    assert response.status_code == 404, response.text


@pytest.mark.parametrize(
    "args",
    [
        '{"a": "x\\u0000y"}',
        '{"a\\u0000": 1}',
        '{"a": [{"b": ["\\u0000"]}]}',
        '{"a": NaN}',
        '{"a": [1e999]}',
        '{"a": -Infinity}',
    ],
)
async def test_job_args_with_nul_or_non_finite_numbers_are_422(
    http: httpx.AsyncClient, auth, args: str
) -> None:
    response = await http.post("/api/v1/jobs/duly.noop/runs", content=f'{{"args": {args}}}',
                               headers={**auth(Role.OPERATOR), "content-type": "application/json"})  # fmt: skip
    assert response.status_code == 422, response.text
    assert error_of(response)["code"] == "VALIDATION_ERROR"


async def test_plain_job_args_still_pass(http: httpx.AsyncClient, auth) -> None:
    response = await http.post("/api/v1/jobs/duly.noop/runs",
                               json={"args": {"a": [1.5, "text", None, 10**30]}},
                               headers=auth(Role.OPERATOR))  # fmt: skip
    assert response.status_code == 202, response.text


@pytest.mark.parametrize("name", ["-", ".hidden", "_x"])
async def test_a_token_name_the_service_refuses_is_422(
    http: httpx.AsyncClient, auth, name: str
) -> None:
    response = await http.post("/api/v1/tokens", json={"name": name, "role": "auditor"},
                               headers=auth(Role.ADMIN))  # fmt: skip
    assert response.status_code == 422, response.text


def test_every_api_route_documents_the_error_envelope(app: FastAPI) -> None:
    doc = app.openapi()
    envelope = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, item in doc["paths"].items():
        if not path.startswith("/api/v1"):
            continue
        for method, op in item.items():
            for status in ("401", "403", "404", "409", "422", "429"):
                content = op["responses"][status]["content"]["application/json"]
                assert content["schema"] == envelope, (method, path, status)
    assert "HTTPValidationError" not in doc["components"]["schemas"]


async def test_the_refusal_names_where_the_value_is(http: httpx.AsyncClient, auth) -> None:
    response = await http.post("/api/v1/jobs/duly.noop/runs",
                               json={"args": {"a": [{"b": [1, "x\x00"]}]}},
                               headers=auth(Role.OPERATOR))  # fmt: skip
    assert response.status_code == 422
    assert "args.a[0].b[1]: text may not contain NUL" in error_of(response)["message"]
