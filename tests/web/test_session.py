"""Sign-in, the session cookie and CSRF: tampered, expired and revoked sessions, forged forms.

The app's clock is manual, so a session's expiry is reached by advancing it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from duly.auth.roles import Role
from duly.auth.service import TokenService
from duly.auth.sessions import SessionSigner, load_session_secret
from duly.clock import ManualClock
from duly.engine.client import EngineClient
from duly.engine.store.base import NewSchedule
from duly.engine.store.sql import SqlStore
from duly.runtime import job_registry
from duly.web.app import DEFAULT_SESSION_LIFETIME
from duly.web.session import COOKIE
from webtest import csrf_of, sign_in

NOW = datetime(2026, 3, 3, 0, 0, tzinfo=UTC)


@pytest.fixture
def api_clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def schedule(store: SqlStore, api_clock: ManualClock) -> str:
    EngineClient(store, job_registry(), api_clock).upsert_schedule(
        NewSchedule(name="morning", job_name="duly.noop", spec="daily:09:00")
    )
    return "morning"


def signed_out(response: httpx.Response) -> bool:
    return response.status_code == 303 and response.headers["location"].startswith("/ui/signin")


async def test_the_cookie_is_signed_httponly_strict_and_bounded(
    ui: httpx.AsyncClient, auth
) -> None:
    form = await ui.get("/ui/signin")
    token = auth(Role.OPERATOR)["Authorization"].removeprefix("Bearer ")
    done = await ui.post(
        "/ui/signin", data={"csrf": csrf_of(form.text), "token": token, "next": "/errors"}
    )
    assert (done.status_code, done.headers["location"]) == (303, "/ui/errors")
    cookie = next(c for c in done.headers.get_list("set-cookie") if c.startswith(f"{COOKIE}="))
    attrs = cookie.lower()
    assert "httponly" in attrs and "samesite=strict" in attrs and "path=/ui" in attrs
    assert f"max-age={int(DEFAULT_SESSION_LIFETIME.total_seconds())}" in attrs
    assert "secure" not in attrs  # plain HTTP here; over HTTPS it is Secure (below)
    assert token not in cookie and token.split("_")[2] not in cookie  # never the secret
    assert "content-security-policy" in done.headers


async def test_over_https_the_cookie_is_secure(ui_app, auth) -> None:
    transport = httpx.ASGITransport(app=ui_app)
    async with httpx.AsyncClient(transport=transport, base_url="https://duly.test") as ui:
        form = await ui.get("/ui/signin")
        token = auth(Role.ADMIN)["Authorization"].removeprefix("Bearer ")
        done = await ui.post("/ui/signin", data={"csrf": csrf_of(form.text), "token": token})
        cookie = next(c for c in done.headers.get_list("set-cookie") if c.startswith(f"{COOKIE}="))
        assert "secure" in cookie.lower()


async def test_a_page_without_a_session_goes_to_sign_in(ui: httpx.AsyncClient) -> None:
    response = await ui.get("/ui/errors", params={"window": "7d"})
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/signin?next=/errors%3Fwindow%3D7d"
    posted = await ui.post("/ui/schedules/morning/pause", data={"csrf": "x"})
    assert posted.status_code == 401


async def test_a_tampered_cookie_is_refused_and_dropped(ui: httpx.AsyncClient, auth) -> None:
    await sign_in(ui, auth(Role.ADMIN))
    value = ui.cookies[COOKIE]
    payload, signature = value.split(".")
    forged = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + signature
    ui.cookies.set(COOKIE, forged, domain="duly.test", path="/ui")
    response = await ui.get("/ui/")
    assert signed_out(response)
    assert (
        f'{COOKIE}=""' in response.headers["set-cookie"]
        or "max-age=0" in response.headers["set-cookie"].lower()
    )
    ui.cookies.set(COOKIE, "garbage", domain="duly.test", path="/ui")
    assert signed_out(await ui.get("/ui/"))


async def test_a_cookie_signed_with_another_secret_is_refused(ui: httpx.AsyncClient, auth, store: SqlStore,
                                                              api_clock: ManualClock) -> None:  # fmt: skip
    await sign_in(ui, auth(Role.ADMIN))
    mine = SessionSigner(load_session_secret(store.engine, api_clock))
    session = mine.loads(ui.cookies[COOKIE], api_clock.now())
    assert session is not None  # the installation's secret signed it
    other = SessionSigner(b"x" * 32).dumps(session)
    ui.cookies.set(COOKIE, other, domain="duly.test", path="/ui")
    assert signed_out(await ui.get("/ui/"))


async def test_an_expired_session_is_refused(
    ui: httpx.AsyncClient, auth, api_clock: ManualClock
) -> None:
    await sign_in(ui, auth(Role.ADMIN))
    api_clock.advance(DEFAULT_SESSION_LIFETIME - timedelta(seconds=1))
    assert (await ui.get("/ui/")).status_code == 200
    api_clock.advance(timedelta(seconds=1))
    assert signed_out(await ui.get("/ui/"))


async def test_revoking_the_token_ends_its_sessions(ui: httpx.AsyncClient, auth, store: SqlStore,
                                                   api_clock: ManualClock) -> None:  # fmt: skip
    await sign_in(ui, auth(Role.OPERATOR, "revoked-soon"))
    TokenService(store.engine, api_clock).revoke("revoked-soon", revoked_by="tests")
    assert signed_out(await ui.get("/ui/"))


async def test_sign_in_refusals(ui: httpx.AsyncClient, auth) -> None:
    form = await ui.get("/ui/signin")
    csrf = csrf_of(form.text)
    bad = await ui.post("/ui/signin", data={"csrf": csrf, "token": "duly_nope_nope"})
    assert bad.status_code == 401 and "not valid" in bad.text
    form = await ui.get("/ui/signin")
    channel = auth(Role.CHANNEL)["Authorization"].removeprefix("Bearer ")
    refused = await ui.post("/ui/signin", data={"csrf": csrf_of(form.text), "token": channel})
    assert refused.status_code == 401 and "no access to the dashboard" in refused.text
    admin = auth(Role.ADMIN)["Authorization"].removeprefix("Bearer ")
    no_csrf = await ui.post("/ui/signin", data={"token": admin})
    assert no_csrf.status_code == 403 and COOKIE not in no_csrf.headers.get("set-cookie", "")
    ui.cookies.clear()
    no_cookie = await ui.post("/ui/signin", data={"csrf": csrf, "token": admin})
    assert no_cookie.status_code == 403
    form = await ui.get("/ui/signin")
    away = await ui.post("/ui/signin", data={"csrf": csrf_of(form.text), "token": admin,
                                             "next": "//evil.example/"})  # fmt: skip
    assert away.headers["location"] == "/ui/"  # never to another site


async def test_a_form_without_the_sessions_csrf_token_changes_nothing(
    ui: httpx.AsyncClient, auth, store: SqlStore, schedule: str
) -> None:
    csrf = await sign_in(ui, auth(Role.ADMIN))
    for data in ({"x": "1"}, {"csrf": ""}, {"csrf": csrf[:-1] + ("A" if csrf[-1] != "A" else "B")}):
        refused = await ui.post(f"/ui/schedules/{schedule}/pause", data=data)
        assert refused.status_code == 403, data
    assert not store.schedule_get(schedule).paused  # type: ignore[union-attr]
    other = httpx.AsyncClient(
        transport=ui._transport, base_url="http://duly.test"
    )  # another browser
    async with other:
        other_csrf = await sign_in(other, auth(Role.OPERATOR))
    assert other_csrf != csrf
    assert (
        await ui.post(f"/ui/schedules/{schedule}/pause", data={"csrf": other_csrf})
    ).status_code == 403
    assert (
        await ui.post(f"/ui/schedules/{schedule}/pause", data={"csrf": csrf})
    ).status_code == 303


async def test_bad_input_is_a_4xx_never_a_5xx(ui: httpx.AsyncClient, auth) -> None:
    csrf = await sign_in(ui, auth(Role.ADMIN))
    json_body = await ui.post("/ui/schedules/morning/pause", json={"csrf": csrf})
    assert json_body.status_code == 415
    huge = await ui.post("/ui/errors/1/resolve", data={"csrf": csrf, "notes": "x" * 20_000})
    assert huge.status_code == 413
    nul = await ui.post("/ui/errors/1/resolve", data={"csrf": csrf, "notes": "a\x00b"})
    assert nul.status_code == 422
    for path in ("/ui/runs/0", "/ui/errors/-1", "/ui/transfers/x", "/ui/recurring/99", "/ui/nope"):
        assert (await ui.get(path)).status_code == 404, path
    assert (await ui.get("/ui/money", params={"customer": "\x00" * 300})).status_code == 200


async def test_sign_out_forgets_the_session(ui: httpx.AsyncClient, auth) -> None:
    csrf = await sign_in(ui, auth(Role.AUDITOR))
    assert (await ui.post("/ui/signout", data={"x": "1"})).status_code == 403  # CSRF-checked too
    out = await ui.post("/ui/signout", data={"csrf": csrf})
    assert out.status_code == 303 and out.headers["location"] == "/ui/signin"
    assert signed_out(await ui.get("/ui/"))


def test_the_signer_round_trips_and_rejects_edits() -> None:
    signer = SessionSigner(b"k" * 32)
    session = signer.new_session("tok123", NOW, timedelta(hours=1))
    value = signer.dumps(session)
    assert signer.loads(value, NOW) == session.__class__(
        "tok123", NOW + timedelta(hours=1), session.nonce
    )
    assert signer.loads(value, NOW + timedelta(hours=1)) is None
    assert signer.loads(value + "x", NOW) is None and signer.loads("a.b", NOW) is None
    assert signer.loads("x" * 2000, NOW) is None
    assert signer.csrf_ok(session.nonce, signer.csrf_token(session.nonce))
    assert not signer.csrf_ok(session.nonce, None)
    assert signer.loads_nonce(signer.dumps_nonce("abc")) == "abc"
    assert signer.loads_nonce("abc.AAAA") is None
    with pytest.raises(ValueError):
        SessionSigner(b"short")


def test_one_secret_per_installation(store: SqlStore, api_clock: ManualClock) -> None:
    first = load_session_secret(store.engine, api_clock)
    assert len(first) == 32 and load_session_secret(store.engine, api_clock) == first
