"""Customers and their accounts: create, read, close, and erase personal data.

Personal data (name, e-mail, phone) lives in ``customer_pii``; :meth:`Customers.erase_pii`
deletes that row and nothing else, so ledger totals and the audit chain are untouched
(finance-rules.md §6, checklist 30).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, Engine, delete, insert, select, update

from duly.audit import AuditEntry, record
from duly.banking.errors import BankingError, ErrorCode
from duly.banking.money import check_currency, from_minor, mask_account
from duly.banking.schema import accounts, customer_pii, customers
from duly.clock import Clock

__all__ = ["AccountRow", "CustomerRow", "Customers", "NewAccount", "NewCustomer"]

TIERS = ("standard", "premium")


@dataclass(frozen=True, slots=True)
class NewCustomer:
    """A customer to create. ``min_balance_minor`` is the premium threshold (minor units)."""

    external_id: str
    tier: str = "standard"
    timezone: str = "UTC"
    locale: str = "en"
    min_balance_minor: int | None = None
    min_balance_currency: str | None = None
    notification_prefs: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    email: str | None = None
    phone: str | None = None


@dataclass(frozen=True, slots=True)
class CustomerRow:
    """A stored customer; the personal fields are ``None`` once erased."""

    id: int
    external_id: str
    tier: str
    timezone: str
    locale: str
    min_balance_minor: int | None
    min_balance_currency: str | None
    notification_prefs: dict[str, Any]
    name: str | None
    email: str | None
    phone: str | None
    pii_erased_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewAccount:
    """An account to open. ``overdraft_limit_minor=None`` means unlimited (internal accounts only)."""

    id: str
    currency: str
    customer_id: int | None = None
    overdraft_limit_minor: int | None = 0


@dataclass(frozen=True, slots=True)
class AccountRow:
    """A stored account (balances: see :meth:`duly.banking.ledger.LedgerBank.get_balance`)."""

    id: str
    customer_id: int | None
    currency: str
    overdraft_limit_minor: int | None
    status: str
    created_at: datetime
    closed_at: datetime | None

    @property
    def masked(self) -> str:
        """The id as shown to people and logs."""
        return mask_account(self.id)


class Customers:
    """Customers, their personal data and their accounts."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock

    def add(self, new: NewCustomer) -> CustomerRow:
        """Create a customer (and its personal-data row).

        :raises ValueError: for a bad tier, timezone, currency or a duplicate external id.
        """
        _validate_customer(new)
        now = self.clock.now()
        with self.engine.begin() as conn:
            taken = conn.execute(
                select(customers.c.id).where(customers.c.external_id == new.external_id)
            ).scalar()
            if taken is not None:
                raise ValueError(f"a customer with external id {new.external_id!r} exists")
            customer_id = conn.execute(
                insert(customers)
                .values(
                    external_id=new.external_id,
                    tier=new.tier,
                    min_balance_minor=new.min_balance_minor,
                    min_balance_currency=new.min_balance_currency,
                    timezone=new.timezone,
                    locale=new.locale,
                    notification_prefs=new.notification_prefs,
                    created_at=now,
                    updated_at=now,
                )
                .returning(customers.c.id)
            ).scalar_one()
            conn.execute(
                insert(customer_pii).values(
                    customer_id=customer_id,
                    name=new.name,
                    email=new.email,
                    phone=new.phone,
                    updated_at=now,
                )
            )
            record(conn, [_customer_created(int(customer_id), new)], now)
            created = self._get(conn, int(customer_id))
        assert created is not None
        return created

    def get(self, customer_id: int) -> CustomerRow | None:
        """The customer ``customer_id``, if any."""
        with self.engine.connect() as conn:
            return self._get(conn, customer_id)

    def by_external_id(self, external_id: str) -> CustomerRow | None:
        """The customer with ``external_id``, if any."""
        with self.engine.connect() as conn:
            cid = conn.execute(
                select(customers.c.id).where(customers.c.external_id == external_id)
            ).scalar()
            return self._get(conn, int(cid)) if cid is not None else None

    def find(
        self, *, tier: str | None = None, after_id: int = 0, limit: int = 100
    ) -> list[CustomerRow]:
        """Customers by id, ``limit`` at a time after ``after_id`` (keyset pagination)."""
        conds = [customers.c.id > after_id] + ([customers.c.tier == tier] if tier else [])
        with self.engine.connect() as conn:
            rows = conn.execute(
                self._select().where(*conds).order_by(customers.c.id).limit(limit)
            ).all()
        return [_customer(r) for r in rows]

    def erase_pii(self, customer_id: int) -> bool:
        """Delete the customer's name, e-mail and phone; ledger and audit rows stay as they are.

        Returns whether there was personal data to erase.
        """
        now = self.clock.now()
        with self.engine.begin() as conn:
            gone = conn.execute(
                delete(customer_pii).where(customer_pii.c.customer_id == customer_id)
            ).rowcount
            conn.execute(
                update(customers)
                .where(customers.c.id == customer_id)
                .values(pii_erased_at=now, updated_at=now)
            )
            record(
                conn,
                [AuditEntry("customer.erase_pii", "customer", customer_id, {"erased": bool(gone)})],
                now,
            )
        return bool(gone)

    # -- accounts -------------------------------------------------------------------

    def open_account(self, new: NewAccount, *, conn: Connection | None = None) -> AccountRow:
        """Open an account with zero balances.

        :raises ValueError: for an unknown currency, a negative limit, or an id in use.
        """
        currency = check_currency(new.currency)
        if new.overdraft_limit_minor is not None and new.overdraft_limit_minor < 0:
            raise ValueError("the overdraft limit must be ≥ 0")
        if not new.id or len(new.id) > 64:
            raise ValueError("an account id is 1–64 characters")
        if conn is None:
            with self.engine.begin() as own:
                return self.open_account(new, conn=own)
        if conn.execute(select(accounts.c.id).where(accounts.c.id == new.id)).scalar():
            raise ValueError(f"account {mask_account(new.id)} exists")
        now = self.clock.now()
        conn.execute(
            insert(accounts).values(
                id=new.id,
                customer_id=new.customer_id,
                currency=currency,
                overdraft_limit_minor=new.overdraft_limit_minor,
                status="open",
                created_at=now,
            )
        )
        record(conn, [_account_opened(new, currency)], now)
        return _account(conn.execute(select(accounts).where(accounts.c.id == new.id)).one())

    def close_account(self, account_id: str) -> AccountRow:
        """Close an account: no transfer may debit or credit it any more.

        :raises BankingError: ``MISSING_DATA`` if it does not exist.
        """
        now = self.clock.now()
        with self.engine.begin() as conn:
            before = conn.execute(
                select(accounts.c.status).where(accounts.c.id == account_id)
            ).scalar()
            row = conn.execute(
                update(accounts)
                .where(accounts.c.id == account_id)
                .values(status="closed", closed_at=now)
                .returning(*accounts.c)
            ).one_or_none()
            if row is not None:
                entry = AuditEntry("account.close", "account", mask_account(account_id),
                                   {"status": {"before": before, "after": "closed"}})  # fmt: skip
                record(conn, [entry], now)
        if row is None:
            raise BankingError(ErrorCode.MISSING_DATA, f"no account {mask_account(account_id)}")
        return _account(row)

    def account(self, account_id: str, *, conn: Connection | None = None) -> AccountRow | None:
        """The account ``account_id``, if any."""
        if conn is None:
            with self.engine.connect() as own:
                return self.account(account_id, conn=own)
        row = conn.execute(select(accounts).where(accounts.c.id == account_id)).one_or_none()
        return _account(row) if row is not None else None

    def accounts_of(self, customer_id: int) -> list[AccountRow]:
        """The customer's accounts, by id."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(accounts)
                .where(accounts.c.customer_id == customer_id)
                .order_by(accounts.c.id)
            ).all()
        return [_account(r) for r in rows]

    def find_accounts(
        self, *, customer_id: int | None = None, after_id: str = "", limit: int = 100
    ) -> list[AccountRow]:
        """Customers' accounts by id, ``limit`` at a time after ``after_id`` (keyset pagination).

        The bank's own accounts (no customer: funding, settlement) are left out.
        """
        conds = [accounts.c.customer_id.is_not(None), accounts.c.id > after_id]
        if customer_id is not None:
            conds.append(accounts.c.customer_id == customer_id)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(accounts).where(*conds).order_by(accounts.c.id).limit(limit)
            ).all()
        return [_account(r) for r in rows]

    # -- helpers --------------------------------------------------------------------

    def _select(self) -> Any:
        return select(
            customers,
            customer_pii.c.name,
            customer_pii.c.email,
            customer_pii.c.phone,
        ).outerjoin(customer_pii, customer_pii.c.customer_id == customers.c.id)

    def _get(self, conn: Connection, customer_id: int) -> CustomerRow | None:
        row = conn.execute(self._select().where(customers.c.id == customer_id)).one_or_none()
        return _customer(row) if row is not None else None


def _validate_customer(new: NewCustomer) -> None:
    if new.tier not in TIERS:
        raise ValueError(f"tier {new.tier!r}: use standard or premium")
    if not new.external_id or len(new.external_id) > 100:
        raise ValueError("an external id is 1–100 characters")
    try:
        ZoneInfo(new.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {new.timezone!r}") from None
    if new.min_balance_minor is not None:
        if new.min_balance_minor < 0:
            raise ValueError("the minimum balance must be ≥ 0")
        if new.min_balance_currency is None:
            raise ValueError("a minimum balance needs its currency")
        check_currency(new.min_balance_currency)


def _customer_created(customer_id: int, new: NewCustomer) -> AuditEntry:
    """The audit event of a new customer: its terms, never its personal data.

    The chain cannot be edited, so what :meth:`Customers.erase_pii` must be able to erase
    (name, e-mail, phone) never goes into it; nor does the minimum-balance threshold.
    """
    details = {
        "external_id": new.external_id,
        "tier": new.tier,
        "timezone": new.timezone,
        "locale": new.locale,
        # whether a premium threshold is set, not its amount: nothing balance-like is recorded
        "premium_threshold_set": new.min_balance_minor is not None,
    }
    return AuditEntry("customer.create", "customer", customer_id, details)


def _account_opened(new: NewAccount, currency: str) -> AuditEntry:
    """The audit event of a new account: masked, with its terms (it opens with nothing in it)."""
    limit = new.overdraft_limit_minor
    details = {
        "account": mask_account(new.id),
        "customer_id": new.customer_id,
        "currency": currency,
        "overdraft_limit": None if limit is None else str(from_minor(limit, currency)),
    }
    return AuditEntry("account.open", "account", mask_account(new.id), details)


def _customer(row: Any) -> CustomerRow:
    m = row._mapping
    return CustomerRow(
        id=int(m["id"]),
        external_id=m["external_id"],
        tier=m["tier"],
        timezone=m["timezone"],
        locale=m["locale"],
        min_balance_minor=None if m["min_balance_minor"] is None else int(m["min_balance_minor"]),
        min_balance_currency=m["min_balance_currency"],
        notification_prefs=dict(m["notification_prefs"] or {}),
        name=m["name"],
        email=m["email"],
        phone=m["phone"],
        pii_erased_at=m["pii_erased_at"],
        created_at=m["created_at"],
    )


def _account(row: Any) -> AccountRow:
    return AccountRow(
        id=row.id,
        customer_id=None if row.customer_id is None else int(row.customer_id),
        currency=row.currency,
        overdraft_limit_minor=None
        if row.overdraft_limit_minor is None
        else int(row.overdraft_limit_minor),
        status=row.status,
        created_at=row.created_at,
        closed_at=row.closed_at,
    )
