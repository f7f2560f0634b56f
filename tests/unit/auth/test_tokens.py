"""The pure token parts: format, parsing, hashing, roles, names and lifetimes."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest

from duly.auth.durations import MAX_LIFETIME, parse_duration
from duly.auth.roles import Role, parse_role
from duly.auth.tokens import (
    check_name,
    hash_token,
    new_token,
    parse_token,
    token_matches,
)


def test_new_token_has_the_recognisable_shape_and_256_bit_secret() -> None:
    issued = new_token()
    match = re.fullmatch(r"duly_([a-z2-7]{8})_([a-z2-7]{52})", issued.text)
    assert match is not None, issued.text
    assert match.group(1) == issued.token_id
    # 52 base32 characters carry 260 bits: room for all 256 of the secret
    assert len(match.group(2)) * 5 >= 256
    assert issued.secret_hash == hashlib.sha256(issued.text.encode()).hexdigest()


def test_new_tokens_differ() -> None:
    texts = {new_token().text for _ in range(50)}
    assert len(texts) == 50


def test_issued_token_repr_hides_the_text() -> None:
    issued = new_token()
    secret = issued.text.split("_", 2)[2]
    assert secret not in repr(issued)
    assert issued.secret_hash not in repr(issued)


def test_parse_round_trips_and_ignores_surrounding_blanks() -> None:
    issued = new_token()
    parsed = parse_token(f"  {issued.text}\n")
    assert parsed is not None
    assert parsed.token_id == issued.token_id
    assert parsed.text == issued.text
    assert issued.text not in repr(parsed)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "duly_",
        "bearer duly_abcdefgh_" + "a" * 52,
        "duly_abcdefgh_" + "a" * 51,
        "duly_abcdefgh_" + "a" * 53,
        "duly_ABCDEFGH_" + "a" * 52,
        "duly_abcdefg1_" + "a" * 52,  # 1 is not base32
        "xuly_abcdefgh_" + "a" * 52,
        "duly-abcdefgh-" + "a" * 52,
    ],
)
def test_parse_rejects_what_is_not_a_token(text: str) -> None:
    assert parse_token(text) is None


def test_token_matches_only_its_own_hash() -> None:
    issued = new_token()
    parsed = parse_token(issued.text)
    assert parsed is not None
    assert token_matches(parsed, issued.secret_hash)
    assert not token_matches(parsed, hash_token(new_token().text))


def test_token_matches_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    issued = new_token()
    parsed = parse_token(issued.text)
    assert parsed is not None
    assert token_matches(parsed, issued.secret_hash)
    assert calls == [(issued.secret_hash, issued.secret_hash)]


@pytest.mark.parametrize("text", ["admin", "operator", "auditor", "channel", " Admin "])
def test_parse_role_accepts_the_four_roles(text: str) -> None:
    assert parse_role(text) == Role(text.strip().lower())


def test_parse_role_rejects_others_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown role 'root': expected one of admin, operator"):
        parse_role("root")


def test_there_are_exactly_four_roles() -> None:
    assert {r.value for r in Role} == {"admin", "operator", "auditor", "channel"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", timedelta(days=90)),
        ("12h", timedelta(hours=12)),
        ("30m", timedelta(minutes=30)),
        ("1M", timedelta(minutes=1)),
        ("3650d", MAX_LIFETIME),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", "90", "d", "0d", "1.5h", "-1d", "90 d", "2w", "3651d", "99999999d", "1d2h"]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)


@pytest.mark.parametrize("name", ["ops-bot", "a", "online.banking_1", "x" * 64])
def test_check_name_accepts(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "-lead", "has space", "x" * 65, "naïve", "a/b"])
def test_check_name_rejects(name: str) -> None:
    with pytest.raises(ValueError, match="bad token name"):
        check_name(name)
