"""Who a delivery goes to: customers (from their personal data and preferences) and the
operations addresses in config.

Customer preferences (``customers.notification_prefs``, JSON)::

    {"channels": ["email", "sms", "push"],   # opted-in channels; default ["email"]
     "push_token": "device-token",           # for push
     "reminder_offsets": ["2d", "2h"],       # overrides notify.reminders.offsets
     "reminders": false}                     # no payment reminders at all

The address is read when the message is sent, never stored in the delivery row: a customer
whose personal data was erased gets nothing more.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from duly.banking.schema import customer_pii, customers
from duly.notify.mask import address_ref, mask_recipient

__all__ = [
    "CustomerContact",
    "OpsDirectory",
    "Target",
    "customer_contact",
    "customer_contacts",
    "customer_targets",
]

DEFAULT_CHANNELS = ("email",)


@dataclass(frozen=True, slots=True)
class Target:
    """One recipient on one channel, as queued: a reference and a masked form."""

    channel: str
    recipient_ref: str
    recipient_masked: str


@dataclass(frozen=True, slots=True)
class CustomerContact:
    """A customer's addresses and presentation preferences."""

    customer_id: int
    locale: str
    timezone: str
    prefs: dict[str, Any]
    email: str | None
    phone: str | None

    def address(self, channel: str) -> str | None:
        """The customer's address on ``channel``, if any."""
        if channel == "email":
            return self.email
        if channel == "sms":
            return self.phone
        if channel == "push":
            token = self.prefs.get("push_token")
            return str(token) if token else None
        return None

    @property
    def channels(self) -> list[str]:
        """The channels the customer opted in to."""
        chosen = self.prefs.get("channels")
        if not isinstance(chosen, list):
            return list(DEFAULT_CHANNELS)
        return [str(c) for c in chosen if c in ("email", "sms", "push")]


def customer_contact(conn: Connection, customer_id: int) -> CustomerContact | None:
    """The customer's contact details, read now."""
    return customer_contacts(conn, {customer_id}).get(customer_id)


def customer_contacts(conn: Connection, ids: set[int]) -> dict[int, CustomerContact]:
    """Contact details of the customers ``ids`` (those that exist), in one query."""
    if not ids:
        return {}
    rows = conn.execute(
        select(
            customers.c.id,
            customers.c.locale,
            customers.c.timezone,
            customers.c.notification_prefs,
            customer_pii.c.email,
            customer_pii.c.phone,
        )
        .outerjoin(customer_pii, customer_pii.c.customer_id == customers.c.id)
        .where(customers.c.id.in_(sorted(ids)))
    ).all()
    return {
        int(row.id): CustomerContact(
            customer_id=int(row.id),
            locale=row.locale or "en",
            timezone=row.timezone or "UTC",
            prefs=dict(row.notification_prefs or {}),
            email=row.email,
            phone=row.phone,
        )
        for row in rows
    }


def customer_targets(
    contact: CustomerContact, available: Iterable[str], only: Iterable[str] | None = None
) -> list[Target]:
    """The customer's opted-in channels that are configured and for which they have an address."""
    available = set(available)
    wanted = set(only) if only is not None else None
    out = []
    for channel in contact.channels:
        if channel not in available or (wanted is not None and channel not in wanted):
            continue
        address = contact.address(channel)
        if address:
            out.append(
                Target(channel, f"customer:{contact.customer_id}", mask_recipient(channel, address))
            )
    return out


class OpsDirectory:
    """The operations addresses of the routing config, by reference.

    ``routes`` maps a severity to ``(channel, [address, ...])`` pairs; for webhooks the
    address is the webhook's name.
    """

    def __init__(self, routes: dict[str, list[tuple[str, list[str]]]]) -> None:
        self.routes = routes
        self._by_ref: dict[str, str] = {}
        for pairs in routes.values():
            for channel, addresses in pairs:
                for address in addresses:
                    self._by_ref[address_ref(channel, address)] = address

    def targets(self, severity: str) -> list[Target]:
        """Where an alert of ``severity`` goes."""
        out = []
        for channel, addresses in self.routes.get(severity, []):
            if channel == "log":
                out.append(Target("log", "ops:log", "log"))
                continue
            for address in addresses:
                masked = (
                    f"webhook:{address}"
                    if channel == "webhook"
                    else mask_recipient(channel, address)
                )
                out.append(Target(channel, address_ref(channel, address), masked))
        return out

    def resolve(self, recipient_ref: str) -> str | None:
        """The configured address behind ``recipient_ref`` (``None`` if no longer configured)."""
        if recipient_ref == "ops:log":
            return "log"
        return self._by_ref.get(recipient_ref)
