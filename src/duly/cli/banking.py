"""``duly customers`` and ``duly accounts``: the bank's customers and their ledger accounts.

Amounts are decimal strings in the currency's major unit (``"1500.00"``), never floats.
Account numbers are printed masked (``****1234``). Bad input prints one line on stderr and
exits 2 with nothing changed. ``customers erase`` deletes personal data only (name,
e-mail, phone); the customer's ledger, history and audit rows stay.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from duly.cli.common import fail, open_system

if TYPE_CHECKING:
    from duly.banking.customers import CustomerRow, Customers

__all__ = ["accounts_app", "customers_app"]

customers_app = typer.Typer(help="Customers: add, list, show, erase personal data.",
                            no_args_is_help=True)  # fmt: skip
accounts_app = typer.Typer(help="Ledger accounts: open, list, close.", no_args_is_help=True)


def _minor(amount: str, currency: str, flag: str) -> int:
    from duly.banking.money import MoneyError, to_minor

    try:
        value = to_minor(amount, currency)
    except MoneyError as exc:
        fail(f"{flag} {amount!r}: {exc}")
    if value < 0:
        fail(f"{flag} {amount!r}: must not be negative")
    return value


def _currency(code: str) -> str:
    from duly.banking.money import MoneyError, check_currency

    try:
        return check_currency(code)
    except MoneyError as exc:
        fail(f"--currency {code!r}: {exc}")


def _find_customer(people: Customers, ref: str) -> CustomerRow:
    """A customer by id (digits) or external id; exit 2 if there is none."""
    found = people.get(int(ref)) if ref.isdigit() else None
    found = found or people.by_external_id(ref)
    if found is None:
        fail(f"no customer {ref!r} (give its id or external id)")
    return found


def _money(minor: int | None, currency: str | None) -> str:
    from duly.banking.money import format_money

    return "-" if minor is None or currency is None else format_money(minor, currency)


@customers_app.command("add")
def customers_add(
    external_id: Annotated[str, typer.Argument(help="The bank's own reference for the customer.")],
    name: Annotated[str | None, typer.Option("--name", help="Full name (personal data).")] = None,
    email: Annotated[str | None, typer.Option("--email", help="E-mail (personal data).")] = None,
    phone: Annotated[str | None, typer.Option("--phone", help="Phone, E.164 (personal data).")] = None,
    tz: Annotated[str, typer.Option("--timezone", "--tz", help="IANA timezone.")] = "UTC",
    tier: Annotated[str, typer.Option("--tier", help="standard or premium.")] = "standard",
    min_balance: Annotated[
        str | None, typer.Option("--min-balance", help="Premium minimum balance, e.g. 5000.00.")
    ] = None,
    currency: Annotated[
        str | None, typer.Option("--currency", help="Currency of --min-balance (ISO 4217).")
    ] = None,
    locale: Annotated[str, typer.Option("--locale", help="Language of notifications.")] = "en",
    notify: Annotated[
        str | None,
        typer.Option("--notify", help='Notification preferences as JSON, e.g. \'{"email": true}\'.'),
    ] = None,
) -> None:
    """Add a customer; prints its id."""
    from duly.banking.customers import Customers, NewCustomer

    if (min_balance is None) != (currency is None):
        fail("--min-balance and --currency go together")
    if min_balance is not None and tier != "premium":
        fail("--min-balance applies to premium customers (add --tier premium)")
    code = _currency(currency) if currency is not None else None
    minimum = _minor(min_balance, code, "--min-balance") if min_balance is not None and code else None
    prefs: dict[str, Any] = {}
    if notify is not None:
        try:
            prefs = json.loads(notify)
        except json.JSONDecodeError as exc:
            fail(f"--notify is not JSON: {exc.msg}")
        if not isinstance(prefs, dict):
            fail("--notify must be a JSON object")
    new = NewCustomer(external_id=external_id, tier=tier, timezone=tz, locale=locale,
                      min_balance_minor=minimum, min_balance_currency=code,
                      notification_prefs=prefs, name=name, email=email, phone=phone)  # fmt: skip
    with open_system() as system:
        try:
            row = Customers(system.store.engine, system.clock).add(new)
        except ValueError as exc:
            fail(str(exc))
    typer.echo(f"customer {row.id} added: {row.external_id} ({row.tier}, {row.timezone})")


@customers_app.command("list")
def customers_list(
    tier: Annotated[str | None, typer.Option("--tier", help="Only standard or premium.")] = None,
    after: Annotated[int, typer.Option("--after", min=0, help="Ids after this one (paging).")] = 0,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 50,
) -> None:
    """List customers by id (names shown; erased ones as -)."""
    from rich.console import Console
    from rich.table import Table

    from duly.banking.customers import TIERS, Customers

    if tier is not None and tier not in TIERS:
        fail(f"--tier {tier!r}: use standard or premium")
    with open_system() as system:
        rows = Customers(system.store.engine, system.clock).find(tier=tier, after_id=after, limit=limit)
    table = Table("id", "external id", "name", "tier", "minimum", "timezone")
    for r in rows:
        table.add_row(str(r.id), r.external_id, r.name or "-", r.tier,
                      _money(r.min_balance_minor, r.min_balance_currency), r.timezone)  # fmt: skip
    Console().print(table)


@customers_app.command("show")
def customers_show(
    customer: Annotated[str, typer.Argument(help="Customer id or external id.")],
) -> None:
    """Show a customer and their accounts (masked)."""
    from duly.banking.customers import Customers

    with open_system() as system:
        people = Customers(system.store.engine, system.clock)
        row = _find_customer(people, customer)
        accounts = people.accounts_of(row.id)
    erased = f" (personal data erased {row.pii_erased_at.isoformat()})" if row.pii_erased_at else ""
    typer.echo(f"customer {row.id}: {row.external_id}{erased}")
    typer.echo(f"  name      {row.name or '-'}")
    typer.echo(f"  email     {row.email or '-'}")
    typer.echo(f"  phone     {row.phone or '-'}")
    typer.echo(f"  tier      {row.tier}"
               + (f", minimum {_money(row.min_balance_minor, row.min_balance_currency)}"
                  if row.min_balance_minor is not None else ""))  # fmt: skip
    typer.echo(f"  timezone  {row.timezone}, locale {row.locale}")
    typer.echo(f"  notify    {json.dumps(row.notification_prefs, sort_keys=True)}")
    typer.echo(f"  accounts  {len(accounts)}")
    for a in accounts:
        typer.echo(f"    {a.masked} {a.currency} {a.status}")


@customers_app.command("erase")
def customers_erase(
    customer: Annotated[str, typer.Argument(help="Customer id or external id.")],
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: this cannot be undone.")] = False,
) -> None:
    """Erase a customer's personal data (name, e-mail, phone); ledger and history stay."""
    from duly.banking.customers import Customers

    if not yes:
        fail("erasing personal data cannot be undone: add --yes")
    with open_system() as system:
        people = Customers(system.store.engine, system.clock)
        row = _find_customer(people, customer)
        erased = people.erase_pii(row.id)
    typer.echo(f"customer {row.id}: personal data {'erased' if erased else 'was already erased'}; "
               "ledger and history kept")  # fmt: skip


@accounts_app.command("open")
def accounts_open(
    account_id: Annotated[str, typer.Argument(help="The account number (1–64 characters).")],
    customer: Annotated[str, typer.Option("--customer", help="Owner: id or external id.")],
    currency: Annotated[str, typer.Option("--currency", help="ISO 4217 code.")],
    overdraft: Annotated[
        str, typer.Option("--overdraft", help="Overdraft limit, e.g. 500.00 (default none).")
    ] = "0",
    deposit: Annotated[
        str | None,
        typer.Option("--deposit", help="Opening deposit, posted from the bank's funding account."),
    ] = None,
) -> None:
    """Open a ledger account for a customer (optionally with an opening deposit)."""
    from duly.banking.customers import Customers, NewAccount
    from duly.banking.errors import BankingError
    from duly.banking.ledger import LedgerBank
    from duly.banking.money import mask_account

    code = _currency(currency)
    limit = _minor(overdraft, code, "--overdraft")
    opening = _minor(deposit, code, "--deposit") if deposit is not None else 0
    with open_system() as system:
        engine = system.store.engine
        people = Customers(engine, system.clock)
        owner = _find_customer(people, customer)
        try:
            with engine.begin() as conn:  # the account and its deposit, or neither
                row = people.open_account(NewAccount(account_id, code, owner.id, limit), conn=conn)
                if opening:
                    # the key is logged: it names the account by a digest, never its number
                    digest = hashlib.sha256(account_id.encode()).hexdigest()[:20]
                    LedgerBank(engine, system.clock).fund(
                        account_id, opening, code, f"opening-deposit:{digest}", conn=conn
                    )
        except (ValueError, BankingError) as exc:
            fail(str(exc))
    typer.echo(f"account {mask_account(row.id)} opened for customer {owner.id} in {code}"
               + (f", deposit {_money(opening, code)}" if opening else ""))  # fmt: skip


@accounts_app.command("list")
def accounts_list(
    customer: Annotated[str | None, typer.Option("--customer", help="Only this customer's.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
) -> None:
    """List accounts (masked) with their available balance (posted less pending debits)."""
    from rich.console import Console
    from rich.table import Table
    from sqlalchemy import select

    from duly.banking.customers import Customers
    from duly.banking.schema import accounts

    a = accounts
    with open_system() as system:
        stmt = select(a).where(a.c.customer_id.is_not(None)).order_by(a.c.id).limit(limit)
        if customer is not None:
            owner = _find_customer(Customers(system.store.engine, system.clock), customer)
            stmt = stmt.where(a.c.customer_id == owner.id)
        with system.store.engine.connect() as conn:
            rows = conn.execute(stmt).all()
    table = Table("account", "customer", "currency", "available", "overdraft", "status")
    for r in rows:
        available = int(r.credits_posted) - int(r.debits_posted) - int(r.debits_pending)
        table.add_row(_mask(r.id), str(r.customer_id), r.currency, _money(available, r.currency),
                      _money(r.overdraft_limit_minor, r.currency), r.status)  # fmt: skip
    Console().print(table)


@accounts_app.command("close")
def accounts_close(
    account_id: Annotated[str, typer.Argument(help="The account number.")],
) -> None:
    """Close an account: no transfer may debit or credit it any more."""
    from duly.banking.customers import Customers
    from duly.banking.errors import BankingError

    with open_system() as system:
        people = Customers(system.store.engine, system.clock)
        current = people.account(account_id)
        if current is None or current.customer_id is None:
            fail(f"no customer account {_mask(account_id)}")
        if current.status == "closed":
            fail(f"account {_mask(account_id)} is already closed")
        try:
            row = people.close_account(account_id)
        except BankingError as exc:
            fail(str(exc))
    typer.echo(f"account {row.masked} closed")


def _mask(account_id: str) -> str:
    from duly.banking.money import mask_account

    return mask_account(account_id)
