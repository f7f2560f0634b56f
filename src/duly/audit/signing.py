"""Ed25519 keys and checkpoint signatures (``cryptography``).

A checkpoint says "the chain up to ``seq`` hashes to ``hash``, as of ``at``"; its signature
is over the UTF-8 bytes of ``["duly-audit-checkpoint-v1", seq, hash, at]`` (JSON, no spaces).
A key's id is the first 16 hex digits of the SHA-256 of its raw public key, so a checkpoint
names the key that signed it without carrying it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "AuditKeyError",
    "SigningKey",
    "VerifyKey",
    "checkpoint_message",
    "generate_key_pair",
    "load_signing_key",
    "load_verify_key",
]


class AuditKeyError(ValueError):
    """A key file that is missing, unreadable or not an Ed25519 key."""


def checkpoint_message(seq: int, hash_: str, at: str) -> bytes:
    """The bytes a checkpoint's signature covers."""
    return json.dumps(["duly-audit-checkpoint-v1", seq, hash_, at], separators=(",", ":")).encode()


def _key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class VerifyKey:
    """A public key that checks checkpoint signatures."""

    key: Ed25519PublicKey

    @property
    def key_id(self) -> str:
        return _key_id(self.key)

    def verifies(self, seq: int, hash_: str, at: str, signature_hex: str) -> bool:
        """Whether ``signature_hex`` is this key's signature of the checkpoint.

        Only the form :meth:`SigningKey.sign` writes (lower-case hex) counts, so no stored
        signature can change, even in its letters' case, and still verify.
        """
        try:
            raw = bytes.fromhex(signature_hex)
            if raw.hex() != signature_hex:
                return False
            self.key.verify(raw, checkpoint_message(seq, hash_, at))
        except (InvalidSignature, ValueError):
            return False
        return True

    def pem(self) -> bytes:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@dataclass(frozen=True)
class SigningKey:
    """A private key that signs checkpoints."""

    key: Ed25519PrivateKey

    @property
    def public(self) -> VerifyKey:
        return VerifyKey(self.key.public_key())

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def sign(self, seq: int, hash_: str, at: str) -> str:
        """The hex signature of the checkpoint."""
        return self.key.sign(checkpoint_message(seq, hash_, at)).hex()

    def pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def generate_key_pair(private_path: Path, public_path: Path | None = None) -> SigningKey:
    """Write a new key pair (the private key readable by its owner only) and return it.

    Refuses to overwrite an existing private key: losing it would orphan every checkpoint.
    """
    public_path = public_path or private_path.with_suffix(".pub")
    key = SigningKey(Ed25519PrivateKey.generate())
    private_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise AuditKeyError(f"{private_path} exists; refusing to overwrite a signing key") from exc
    with os.fdopen(fd, "wb") as out:
        out.write(key.pem())
    public_path.write_bytes(key.public.pem())
    return key


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AuditKeyError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc


def load_signing_key(path: Path) -> SigningKey:
    """The private key in PEM file ``path``."""
    try:
        key = serialization.load_pem_private_key(_read(path, "signing key"), password=None)
    except (ValueError, TypeError) as exc:
        raise AuditKeyError(f"{path} is not a PEM private key without a password") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditKeyError(f"{path} is not an Ed25519 key")
    return SigningKey(key)


def load_verify_key(path: Path) -> VerifyKey:
    """The public key in PEM file ``path`` (a private key file is accepted too)."""
    data = _read(path, "public key")
    if b"PRIVATE KEY" in data:
        return load_signing_key(path).public
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise AuditKeyError(f"{path} is not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise AuditKeyError(f"{path} is not an Ed25519 key")
    return VerifyKey(key)
