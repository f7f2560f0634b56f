"""API tokens in the store, on SQLite and PostgreSQL: create, authenticate, expire, revoke."""

from __future__ import annotations

import hmac
import logging
from datetime import timedelta

import pytest
import structlog
import structlog.testing
from sqlalchemy import select

import duly.auth.service
from duly.auth.roles import Role
from duly.auth.schema import tokens
from duly.auth.service import (
    DuplicateTokenName,
    Principal,
    TokenService,
    UnknownToken,
)
from duly.auth.tokens import hash_token
from duly.clock import ManualClock
from duly.engine.store.sql import SqlStore


@pytest.fixture
def service(store: SqlStore, clock: ManualClock) -> TokenService:
    return TokenService(store.engine, clock)


def _stored(store: SqlStore, token_id: str) -> dict[str, object]:
    with store.engine.connect() as conn:
        return dict(conn.execute(select(tokens).where(tokens.c.id == token_id)).one()._mapping)


def test_create_stores_only_the_hash_and_authenticates(
    store: SqlStore, service: TokenService, clock: ManualClock
) -> None:
    created = service.create("ops-bot", Role.OPERATOR, created_by="alice")
    row = _stored(store, created.row.id)
    assert row["secret_hash"] == hash_token(created.text)
    assert created.text not in {str(v) for v in row.values()}
    assert row["created_by"] == "alice" and row["created_at"] == clock.now()
    assert row["expires_at"] is None and row["revoked_at"] is None

    principal = service.authenticate(created.text, clock.now())
    assert principal == Principal(token_id=created.row.id, name="ops-bot", role=Role.OPERATOR)


def test_unknown_malformed_and_tampered_tokens_are_rejected(
    service: TokenService, clock: ManualClock
) -> None:
    created = service.create("ops-bot", Role.ADMIN, created_by="alice")
    now = clock.now()
    last = created.text[-1]
    tampered = created.text[:-1] + ("a" if last != "a" else "b")
    other_id = "duly_aaaaaaaa_" + created.text.split("_", 2)[2]
    for text in (tampered, other_id, "duly_nope", "", created.text + "a"):
        assert service.authenticate(text, now) is None, text
    assert service.authenticate(created.text, now) is not None


def test_authenticate_compares_hashes_in_constant_time(
    service: TokenService, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = service.create("ops-bot", Role.ADMIN, created_by="alice")
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert service.authenticate(created.text, clock.now()) is not None
    assert calls == [(hash_token(created.text), hash_token(created.text))]


def test_a_token_expires_at_its_instant(service: TokenService, clock: ManualClock) -> None:
    created = service.create(
        "short", Role.AUDITOR, created_by="alice", expires_in=timedelta(hours=12)
    )
    expires_at = clock.now() + timedelta(hours=12)
    assert created.row.expires_at == expires_at
    assert service.authenticate(created.text, expires_at - timedelta(seconds=1)) is not None
    assert service.authenticate(created.text, expires_at) is None


def test_revoke_by_id_or_name_stops_the_token_and_frees_the_name(
    service: TokenService, clock: ManualClock
) -> None:
    first = service.create("backend", Role.CHANNEL, created_by="alice")
    revoked = service.revoke("backend", revoked_by="bob")
    assert revoked.revoked_at == clock.now() and revoked.revoked_by == "bob"
    assert service.authenticate(first.text, clock.now()) is None

    second = service.create("backend", Role.CHANNEL, created_by="alice")
    assert second.row.id != first.row.id
    assert service.revoke(second.row.id, revoked_by="bob").id == second.row.id
    assert service.authenticate(second.text, clock.now()) is None


def test_revoke_unknown_or_twice_is_an_error_and_changes_nothing(
    service: TokenService,
) -> None:
    created = service.create("backend", Role.CHANNEL, created_by="alice")
    with pytest.raises(UnknownToken, match="no token 'ghost'"):
        service.revoke("ghost", revoked_by="bob")
    service.revoke(created.row.id, revoked_by="bob")
    before = service.list()
    with pytest.raises(UnknownToken, match="already revoked"):
        service.revoke(created.row.id, revoked_by="carol")
    with pytest.raises(UnknownToken):
        service.revoke("backend", revoked_by="carol")
    assert service.list() == before


def test_duplicate_name_is_refused_and_nothing_is_added(service: TokenService) -> None:
    service.create("backend", Role.CHANNEL, created_by="alice")
    with pytest.raises(DuplicateTokenName, match="a token named 'backend' exists"):
        service.create("backend", Role.ADMIN, created_by="alice")
    assert [r.name for r in service.list()] == ["backend"]


def test_bad_name_is_refused(service: TokenService) -> None:
    with pytest.raises(ValueError, match="bad token name"):
        service.create("has space", Role.ADMIN, created_by="alice")
    assert service.list() == []


def test_list_shows_every_token_without_secrets(service: TokenService, clock: ManualClock) -> None:
    a = service.create("a", Role.ADMIN, created_by="alice")
    clock.advance(1)
    b = service.create("b", Role.AUDITOR, created_by="alice", expires_in=timedelta(days=90))
    service.revoke("a", revoked_by="bob")
    rows = service.list()
    assert [(r.id, r.name, r.role) for r in rows] == [
        (a.row.id, "a", Role.ADMIN),
        (b.row.id, "b", Role.AUDITOR),
    ]
    assert rows[0].revoked_by == "bob" and rows[1].revoked_at is None
    assert not hasattr(rows[0], "secret_hash")


def test_last_used_is_recorded_at_most_once_a_minute(
    service: TokenService, clock: ManualClock
) -> None:
    created = service.create("ops-bot", Role.OPERATOR, created_by="alice")
    assert service.get(created.row.id).last_used_at is None  # type: ignore[union-attr]
    first = clock.now()
    service.authenticate(created.text, first)
    service.authenticate(created.text, first + timedelta(seconds=59))
    assert service.get(created.row.id).last_used_at == first  # type: ignore[union-attr]
    later = first + timedelta(seconds=60)
    service.authenticate(created.text, later)
    assert service.get(created.row.id).last_used_at == later  # type: ignore[union-attr]


def test_a_rejected_token_records_no_use(service: TokenService, clock: ManualClock) -> None:
    created = service.create(
        "short", Role.ADMIN, created_by="alice", expires_in=timedelta(minutes=30)
    )
    assert service.authenticate(created.text, clock.now() + timedelta(hours=1)) is None
    assert service.get(created.row.id).last_used_at is None  # type: ignore[union-attr]


def test_no_secret_or_hash_in_log_lines(
    service: TokenService,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    # a CLI test earlier in the session may have cached the module's logger on its processors
    monkeypatch.setattr(duly.auth.service, "log", structlog.get_logger("duly.auth"))
    with structlog.testing.capture_logs() as logs:
        created = service.create("ops-bot", Role.ADMIN, created_by="alice")
        service.authenticate(created.text, clock.now())
        service.revoke("ops-bot", revoked_by="bob")
    assert logs, "create and revoke are logged"
    secret = created.text.split("_", 2)[2]
    digest = hash_token(created.text)
    everything = repr(logs) + caplog.text
    assert secret not in everything and digest not in everything
