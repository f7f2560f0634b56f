"""Helpers for the API tests (the fixtures ``http``, ``auth`` and ``app`` are in ``tests/conftest.py``)."""

from __future__ import annotations

from typing import Any

import httpx


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The error envelope of a 4xx answer (asserting its shape)."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message", "details"} <= set(body["error"]), body
    assert body["error"]["message"], body
    return dict(body["error"])
