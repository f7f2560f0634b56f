"""Recipients as shown in delivery rows, logs and the CLI: enough to recognise, not to use."""

from __future__ import annotations

import hashlib

__all__ = ["address_ref", "mask_email", "mask_phone", "mask_recipient", "mask_token", "mask_url"]


def mask_email(address: str) -> str:
    """``jane.doe@example.com`` → ``j***@example.com``."""
    local, sep, domain = address.partition("@")
    if not sep:
        return "***"
    return f"{local[:1]}***@{domain}"


def mask_phone(number: str) -> str:
    """``+447700900123`` → ``+44******23``: country prefix and the last two digits."""
    digits = number.strip()
    if len(digits) <= 5:
        return "***"
    return f"{digits[:3]}{'*' * (len(digits) - 5)}{digits[-2:]}"


def mask_token(token: str) -> str:
    """A device token: its first four characters."""
    return f"{token[:4]}…" if len(token) > 4 else "***"


def mask_url(url: str) -> str:
    """``https://hooks.example.com/T0/B1/secret`` → ``https://hooks.example.com/***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "***"
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}://{host}/***"


def mask_recipient(channel: str, address: str) -> str:
    """``address`` masked the way its channel's addresses are."""
    if channel == "email":
        return mask_email(address)
    if channel == "sms":
        return mask_phone(address)
    if channel == "push":
        return mask_token(address)
    if channel == "webhook":
        return mask_url(address)
    return address


def address_ref(channel: str, address: str) -> str:
    """A stable reference to a configured operations address that does not reveal it."""
    digest = hashlib.sha256(f"{channel}\x00{address}".encode()).hexdigest()[:16]
    return f"ops:{digest}"
