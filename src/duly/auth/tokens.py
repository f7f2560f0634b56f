"""The token text: ``duly_<id>_<secret>``, its parsing, hashing and constant-time check.

* ``duly_`` makes a leaked token easy to recognise (secret scanners, log reviews);
* ``<id>`` is public: it finds the stored row without revealing anything;
* ``<secret>`` is 256 random bits from :mod:`secrets`.

Both parts are lowercase base32 without padding, so the token has no character that a URL,
a shell or a double-click would split, and ``_`` only ever separates the parts.

Only SHA-256 of the whole token is stored. A slow password KDF (bcrypt, scrypt, argon2)
exists to make guessing a low-entropy password expensive; a 256-bit random secret cannot be
guessed at any hashing speed, so a fast hash is as safe here and keeps every request cheap.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

__all__ = [
    "PREFIX",
    "IssuedToken",
    "ParsedToken",
    "check_name",
    "hash_token",
    "new_token",
    "parse_token",
    "token_matches",
]

PREFIX = "duly"
ID_BYTES = 5  # 8 base32 characters; the store's unique key settles the rare collision
SECRET_BYTES = 32

_ID_CHARS = 8
_SECRET_CHARS = 52
_PATTERN = re.compile(
    rf"{PREFIX}_(?P<id>[a-z2-7]{{{_ID_CHARS}}})_(?P<secret>[a-z2-7]{{{_SECRET_CHARS}}})"
)


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A token text split into its public id and the full text (what is hashed)."""

    token_id: str
    text: str

    def __repr__(self) -> str:  # the text is the credential: never show it
        return f"ParsedToken(token_id={self.token_id!r})"


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new token: the text to hand over once, and what the store keeps."""

    token_id: str
    text: str
    secret_hash: str

    def __repr__(self) -> str:
        return f"IssuedToken(token_id={self.token_id!r})"


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def hash_token(text: str) -> str:
    """The hex SHA-256 of a token's text, as stored."""
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def new_token() -> IssuedToken:
    """A fresh token with a random id and a 256-bit random secret."""
    token_id = _b32(secrets.token_bytes(ID_BYTES))
    text = f"{PREFIX}_{token_id}_{_b32(secrets.token_bytes(SECRET_BYTES))}"
    return IssuedToken(token_id=token_id, text=text, secret_hash=hash_token(text))


def parse_token(text: str) -> ParsedToken | None:
    """The token in ``text`` (surrounding blanks ignored), or ``None`` if it is not one."""
    stripped = text.strip()
    match = _PATTERN.fullmatch(stripped)
    if match is None:
        return None
    return ParsedToken(token_id=match.group("id"), text=stripped)


def token_matches(parsed: ParsedToken, stored_hash: str) -> bool:
    """Whether ``parsed`` hashes to ``stored_hash``, compared in constant time."""
    return hmac.compare_digest(hash_token(parsed.text), stored_hash)


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_name(name: str) -> str:
    """``name`` if it is a valid token name: 1–64 letters, digits, ``.``, ``_`` or ``-``.

    :raises ValueError: otherwise.
    """
    if _NAME.fullmatch(name) is None:
        raise ValueError(
            f"bad token name {name!r}: 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name
