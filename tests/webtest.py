"""Helpers for the dashboard tests (fixtures ``ui``, ``ui_app`` and ``auth`` are in ``tests/conftest.py``)."""

from __future__ import annotations

import html as html_lib
import re
from typing import Any

import httpx

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token the page's forms carry."""
    found = CSRF.search(html)
    assert found, "no form with a CSRF token on the page"
    return found.group(1)


async def sign_in(ui: httpx.AsyncClient, token_header: dict[str, str]) -> str:
    """Sign ``ui`` in with the token of an ``auth(role)`` header; returns the session's CSRF."""
    token = token_header["Authorization"].removeprefix("Bearer ")
    form = await ui.get("/ui/signin")
    assert form.status_code == 200, form.text
    done = await ui.post(
        "/ui/signin", data={"csrf": csrf_of(form.text), "token": token, "next": "/"}
    )
    assert done.status_code == 303, done.text
    page = await ui.get("/ui/")
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


async def page(ui: httpx.AsyncClient, path: str, **params: Any) -> str:
    """A page's HTML, asserting 200."""
    response = await ui.get(f"/ui{path}", params=params)
    assert response.status_code == 200, (path, response.status_code, response.text[:500])
    return response.text


def text_of(html: str) -> str:
    """The page's text with tags dropped and spaces collapsed (for readable asserts)."""
    return html_lib.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))
