"""A small demo bank for ``duly serve --demo``: customers, funded accounts, money in motion.

:func:`seed_demo_bank` is idempotent: every customer, account, deposit, transfer and
payment has a fixed key, and whatever exists already is left alone, so a second
``duly serve --demo`` adds nothing. On an empty database it creates:

* five customers in several timezones (two premium, with a minimum balance), each with a
  funded current account, plus a merchant (``demo-shop``, accounts in GBP, USD and EUR);
* a scheduled transfer executing a few minutes after the first start, in its customer's
  timezone;
* a monthly recurring payment (rent) whose first occurrence is also a few minutes away;
* the money-movement sweeper (``operations.sweep`` every minute), which materialises
  recurring occurrences and retries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from duly.banking.customers import Customers, NewAccount, NewCustomer
from duly.banking.ledger import LedgerBank
from duly.engine.client import EngineClient
from duly.operations.recurring.models import NewRecurringPayment, recurring_payments
from duly.operations.recurring.service import RecurringPayments
from duly.operations.sweep import sweep_schedule
from duly.operations.transfers.models import NewTransfer, scheduled_transfers
from duly.operations.transfers.service import ScheduledTransfers

__all__ = ["DEMO_CUSTOMERS", "DemoSeed", "seed_demo_bank"]

#: (external id, name, timezone, tier, premium minimum in minor units, opening deposit, currency)
DEMO_CUSTOMERS: tuple[tuple[str, str, str, str, int | None, int, str], ...] = (
    ("demo-ada", "Ada Lovelace", "Europe/London", "premium", 500_000, 1_250_000, "GBP"),
    ("demo-grace", "Grace Hopper", "America/New_York", "premium", 1_000_000, 820_000, "USD"),
    ("demo-alan", "Alan Turing", "Europe/London", "standard", None, 150_000, "GBP"),
    ("demo-katherine", "Katherine Johnson", "America/Chicago", "standard", None, 90_000, "USD"),
    ("demo-emmy", "Emmy Noether", "Europe/Berlin", "standard", None, 300_000, "EUR"),
)
SHOP = ("demo-shop", "Corner Shop Ltd", "Europe/London")
TRANSFER_KEY = "demo-transfer-1"
RENT_KEY = "demo-rent-1"
LEAD = timedelta(minutes=3)  # how far ahead the demo's first money movements are


@dataclass
class DemoSeed:
    """What one call created (all zero on a second call)."""

    customers: int = 0
    accounts: int = 0
    transfers: int = 0
    recurring: int = 0
    schedules: list[str] = field(default_factory=list)


def account_id(external_id: str) -> str:
    """The demo account number of a customer (digits at the end, so masking shows them)."""
    digits = sum(ord(c) for c in external_id) * 7919 % 10**8
    return f"DEMO{digits:08d}{len(external_id):04d}"


def seed_demo_bank(client: EngineClient) -> DemoSeed:
    """Create the demo bank's missing pieces (see the module docstring); returns what was new."""
    engine, clock = client.store.engine, client.clock
    people, ledger = Customers(engine, clock), LedgerBank(engine, clock)
    out = DemoSeed()
    owners: dict[str, int] = {}
    for ext, name, tz, tier, minimum, deposit, currency in (*DEMO_CUSTOMERS, (*SHOP, "standard",
                                                                             None, 0, "GBP")):  # fmt: skip
        row = people.by_external_id(ext)
        if row is None:
            row = people.add(NewCustomer(
                external_id=ext, name=name, timezone=tz, tier=tier, min_balance_minor=minimum,
                min_balance_currency=currency if minimum is not None else None,
                email=f"{ext.removeprefix('demo-')}@example.com",
                notification_prefs={"email": True},
            ))  # fmt: skip
            out.customers += 1
        owners[ext] = row.id
        acct = account_id(ext)
        if people.account(acct) is None:
            people.open_account(NewAccount(acct, currency, row.id))
            out.accounts += 1
        if deposit:
            ledger.fund(acct, deposit, currency, f"demo-deposit-{ext}")  # a replay posts nothing
    for currency in ("USD", "EUR"):  # the shop takes every currency
        acct = f"{account_id(SHOP[0])[:-4]}{currency}"
        if people.account(acct) is None:
            people.open_account(NewAccount(acct, currency, owners[SHOP[0]]))
            out.accounts += 1
    with engine.connect() as conn:
        have_transfer = conn.execute(
            select(scheduled_transfers.c.id).where(
                scheduled_transfers.c.request_key == TRANSFER_KEY
            )
        ).first()
        have_rent = conn.execute(
            select(recurring_payments.c.id).where(recurring_payments.c.request_key == RENT_KEY)
        ).first()
    soon = (clock.now() + LEAD).replace(second=0, microsecond=0) + timedelta(minutes=1)
    if have_transfer is None:
        ext, tz = "demo-grace", "America/New_York"
        local = soon.astimezone(ZoneInfo(tz))
        ScheduledTransfers(client).create(NewTransfer(
            request_key=TRANSFER_KEY, from_account=account_id(ext),
            to_account=f"{account_id(SHOP[0])[:-4]}USD", amount="42.50", currency="USD",
            local_date=local.date(), local_time=local.strftime("%H:%M"), timezone=tz,
            convention="none", memo="Groceries", customer_id=owners[ext],
        ))  # fmt: skip
        out.transfers += 1
    if have_rent is None:
        ext, tz = "demo-ada", "Europe/London"
        local = soon.astimezone(ZoneInfo(tz))
        RecurringPayments(client).create(NewRecurringPayment(
            request_key=RENT_KEY, from_account=account_id(ext), to_account=account_id(SHOP[0]),
            amount="950.00", currency="GBP", frequency="monthly", start_date=local.date(),
            time_of_day=local.strftime("%H:%M"), timezone=tz, convention="following",
            calendar="GB-BACS", memo="Rent", customer_id=owners[ext],
        ))  # fmt: skip
        out.recurring += 1
    sweep = sweep_schedule("every:1m", horizon=timedelta(hours=1))
    client.upsert_schedule(sweep)
    out.schedules.append(sweep.name)
    return out
