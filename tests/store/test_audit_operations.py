"""Every business change records its audit event in its own transaction, on both stores.

Transfers, recurring payments, attempts run by the engine, ledger postings and reversals,
customers and accounts, tokens and error resolutions: each change's event, with the right
object and details; the change and its event commit or roll back together (a recorder
that fails before writing, or a failure after the event is written); and no event of a
whole scenario carries a full account number, a balance or a token's secret or hash.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Table, func, insert, select
from typer.testing import CliRunner

import duly.audit
from duly.audit import AuditEntry, current_actor
from duly.audit.schema import audit_events
from duly.auth.roles import Role
from duly.auth.schema import tokens
from duly.auth.service import TokenService
from duly.banking.customers import Customers, NewAccount, NewCustomer
from duly.banking.ledger import LedgerBank
from duly.banking.money import from_minor
from duly.banking.port import TransferRequest
from duly.banking.schema import accounts, customers, ledger_transfers
from duly.cli import app
from duly.clock import ManualClock
from duly.engine.client import EngineClient
from duly.engine.store.sql import SqlStore
from duly.operations import (
    NewRecurringPayment,
    NewTransfer,
    RecurringPayments,
    ScheduledTransfers,
    operations_registry,
)
from duly.operations.balance_check.models import error_logs
from duly.operations.balance_check.monitoring import resolve
from duly.operations.recurring.models import PaymentChange, recurring_payments
from duly.operations.transfers.models import scheduled_transfers
from duly.operations.transfers.returns import AchReturns
from duly.testing import EngineHarness

#: Full account numbers: none may appear in any event.
PAYER = "GB29NWBK60161331926819"
SHOP = "DE89370400440532013000"
SPARE = "NL91ABNA0417164300"
ACCOUNTS = (PAYER, SHOP, SPARE)


@dataclass(frozen=True)
class Event:
    action: str
    object_type: str
    object_id: str | None
    actor: str
    actor_name: str | None
    details: dict[str, Any]
    raw_details: str


def events(store: SqlStore, prefix: str = "") -> list[Event]:
    """The audit events recorded so far (in insert order), optionally of actions ``prefix*``."""
    e = audit_events.c
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(audit_events).where(e.action.like(f"{prefix}%")).order_by(e.id)
        ).all()
    return [
        Event(r.action, r.object_type, r.object_id, r.actor, r.actor_name,
              json.loads(r.details), r.details)
        for r in rows
    ]  # fmt: skip


def actions(store: SqlStore, prefix: str = "") -> list[str]:
    return [ev.action for ev in events(store, prefix)]


def count(store: SqlStore, table: Table, *where: Any) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def seed(store: SqlStore, clock: ManualClock) -> LedgerBank:
    """A customer with a funded account, a shop's account and a spare one."""
    people = Customers(store.engine, clock)
    ann = people.add(NewCustomer("ann-ext-1", tier="premium", min_balance_minor=1_234_567,
                                 min_balance_currency="USD", name="Ann Smith",
                                 email="ann@example.com", phone="+44 20 7946 0958"))  # fmt: skip
    people.open_account(NewAccount(PAYER, "USD", ann.id))
    people.open_account(NewAccount(SHOP, "USD", None, overdraft_limit_minor=None))
    people.open_account(NewAccount(SPARE, "USD", ann.id))
    ledger = LedgerBank(store.engine, clock)
    ledger.fund(PAYER, 4_812_377, "USD", f"fund-{PAYER}")  # a key built from the number
    ledger.fund(PAYER, 1_000_003, "USD", "fund-2")
    ledger.fund(SHOP, 7_000_011, "USD", "fund-shop")
    ledger.fund(SHOP, 300_007, "USD", "fund-shop-2")
    return ledger


def transfer(**kw: Any) -> NewTransfer:
    base: dict[str, Any] = {
        "request_key": "t-1",
        "from_account": PAYER,
        "to_account": SHOP,
        "amount": "123.45",
        "currency": "USD",
        "local_date": date(2026, 3, 3),
        "local_time": "10:00",
        "timezone": "UTC",
        "memo": "invoice 42",
    }
    base.update(kw)
    return NewTransfer(**base)


def payment(**kw: Any) -> NewRecurringPayment:
    base: dict[str, Any] = {
        "request_key": "rent",
        "from_account": PAYER,
        "to_account": SHOP,
        "amount": "33.33",
        "currency": "USD",
        "frequency": "monthly",
        "start_date": date(2026, 3, 20),
        "time_of_day": "09:00",
        "timezone": "UTC",
    }
    base.update(kw)
    return NewRecurringPayment(**base)


@pytest.fixture
def ledger(store: SqlStore, clock: ManualClock) -> LedgerBank:
    return seed(store, clock)


@pytest.fixture
def client(store: SqlStore, clock: ManualClock, ledger: LedgerBank) -> EngineClient:
    return EngineClient(store, operations_registry, clock)


async def advance(h: EngineHarness, delta: timedelta) -> None:
    """Move the clock, settling twice at each due instant (a pass begun before the move)."""
    until = h.clock.now() + delta
    await h.settle()
    await h.settle()
    while True:
        step = await asyncio.to_thread(h.next_instant)
        if step is None or step > until:
            break
        h.clock.set(step)
        await h.settle()
        await h.settle()
    if h.clock.now() < until:
        h.clock.set(until)
    await h.settle()
    await h.settle()


# -- each action's event ------------------------------------------------------------------


def test_customers_and_accounts_are_recorded_without_personal_data(
    store: SqlStore, clock: ManualClock, ledger: LedgerBank
) -> None:
    people = Customers(store.engine, clock)
    ann = people.by_external_id("ann-ext-1")
    assert ann is not None
    people.close_account(SPARE)
    assert people.erase_pii(ann.id)

    got = events(store, "customer.") + events(store, "account.")
    assert [e.action for e in got] == [
        "customer.create", "customer.erase_pii", "account.open", "account.open", "account.open",
        "account.close",
    ]  # fmt: skip
    created = got[0]
    assert (created.object_type, created.object_id) == ("customer", str(ann.id))
    assert created.details == {"external_id": "ann-ext-1", "tier": "premium", "timezone": "UTC",
                               "locale": "en", "premium_threshold_set": True}  # fmt: skip
    for personal in ("Ann Smith", "ann@example.com", "7946", "1234567", "12345.67"):
        assert personal not in created.raw_details
    assert got[1].details == {"erased": True}
    opened = got[2]
    assert (opened.object_type, opened.object_id) == ("account", "****6819")
    assert opened.details == {"account": "****6819", "customer_id": ann.id, "currency": "USD",
                              "overdraft_limit": "0.00"}  # fmt: skip
    assert got[3].details["overdraft_limit"] is None  # no limit: the bank's own account
    assert got[5].object_id == "****4300"
    assert got[5].details == {"status": {"before": "open", "after": "closed"}}


def test_ledger_postings_reservations_and_reversals_are_recorded_masked(
    store: SqlStore, clock: ManualClock, ledger: LedgerBank
) -> None:
    ledger.transfer(PAYER, SHOP, 2_500, "USD", "pay-1", reference="order 7")
    ledger.reverse("pay-1", "pay-1:back", 1_000)
    ledger.reserve(PAYER, SHOP, 700, "USD", "hold-1", timeout=timedelta(hours=1))
    ledger.post_pending("hold-1", "hold-1:post", 600)
    ledger.reserve(PAYER, SHOP, 300, "USD", "hold-2")
    ledger.void_pending("hold-2", "hold-2:void")
    ledger.reserve(PAYER, SHOP, 200, "USD", "hold-3", timeout=timedelta(minutes=5))
    clock.advance(timedelta(minutes=10))
    assert ledger.expire_pending() == 1
    with store.engine.begin() as conn:
        ledger.transfer_many(
            [TransferRequest(PAYER, SHOP, 11, "USD", "many-1"),
             TransferRequest(SHOP, PAYER, 22, "USD", "many-2"),
             TransferRequest(PAYER, SHOP, 10**12, "USD", "many-3")],  # refused: no funds
            conn=conn,
        )  # fmt: skip
    ledger.transfer(PAYER, SHOP, 2_500, "USD", "pay-1", reference="order 7")  # a replay

    got = events(store, "ledger.")
    by_id = {e.object_id: e for e in got}
    assert [e.action for e in got] == [
        "ledger.post", "ledger.post", "ledger.post", "ledger.post",  # the four deposits
        "ledger.post", "ledger.reverse", "ledger.reserve", "ledger.post", "ledger.reserve",
        "ledger.void", "ledger.reserve", "ledger.expire", "ledger.post", "ledger.post",
    ]  # fmt: skip
    assert {e.object_type for e in got} == {"ledger_transfer"}
    assert "fund-****6819" in by_id  # the key held the account number: masked
    assert by_id["pay-1"].details == {
        "kind": "posted", "amount": "25.00", "currency": "USD", "debit_account": "****6819",
        "credit_account": "****3000", "reference": "order 7",
    }  # fmt: skip
    assert by_id["pay-1:back"].details == {
        "kind": "posted", "amount": "10.00", "currency": "USD", "debit_account": "****3000",
        "credit_account": "****6819", "reverses_id": "pay-1",
    }  # fmt: skip
    assert by_id["hold-1"].details["expires_at"] == "2026-03-02T01:00:00+00:00"
    assert by_id["hold-1:post"].details["pending_id"] == "hold-1"
    assert by_id["hold-1:post"].details["amount"] == "6.00"
    assert by_id["hold-2:void"].details["kind"] == "void_pending"
    assert by_id["hold-3:expired"].details["kind"] == "expire_pending"
    assert by_id["many-2"].details["debit_account"] == "****3000"
    assert "many-3" not in by_id


def test_transfer_create_cancel_and_reschedule_are_recorded(
    store: SqlStore, client: EngineClient
) -> None:
    transfers = ScheduledTransfers(client)
    kept, _ = transfers.create(transfer())
    gone, _ = transfers.create(transfer(request_key=f"from-{PAYER}"))
    transfers.create(transfer())  # a replay records nothing
    transfers.cancel(gone.id)
    transfers.reschedule(kept.id, date(2026, 3, 5), "16:30")
    (bulk, _), = transfers.create_many([transfer(request_key="bulk-1", amount="7.00")])  # fmt: skip

    got = events(store, "transfer.")
    assert [(e.action, e.object_id) for e in got] == [
        ("transfer.create", str(kept.id)), ("transfer.create", str(gone.id)),
        ("transfer.cancel", str(gone.id)), ("transfer.reschedule", str(kept.id)),
        ("transfer.create", str(bulk)),
    ]  # fmt: skip
    assert got[0].details == {
        "amount": "123.45", "currency": "USD", "from_account": "****6819",
        "to_account": "****3000", "customer_id": kept.customer_id, "bank": "ledger",
        "local_date": "2026-03-03", "local_time": "10:00", "timezone": "UTC",
        "convention": "following", "calendar": None, "memo": "invoice 42",
        "execution_date": "2026-03-03", "execute_at": "2026-03-03T10:00:00+00:00",
        "request_key": "t-1",
    }  # fmt: skip
    assert got[1].details["request_key"] == "from-****6819"
    assert got[2].details["status"] == {"before": "scheduled", "after": "cancelled"}
    assert got[3].details == {
        "before": {"local_date": "2026-03-03", "local_time": "10:00",
                   "execution_date": "2026-03-03", "execute_at": "2026-03-03T10:00:00+00:00",
                   "version": 1},
        "after": {"local_date": "2026-03-05", "local_time": "16:30",
                  "execution_date": "2026-03-05", "execute_at": "2026-03-05T16:30:00+00:00",
                  "version": 2},
    }  # fmt: skip
    assert got[4].details["amount"] == "7.00" and got[4].details["request_key"] == "bulk-1"


def test_recurring_payment_changes_are_recorded(store: SqlStore, client: EngineClient) -> None:
    payments = RecurringPayments(client)  # the first occurrence is beyond its horizon
    pay, _ = payments.create(payment())
    payments.update(pay.id, PaymentChange(amount="44.44"))
    payments.update(pay.id, PaymentChange(amount="44.44"))  # a change of nothing: no event
    payments.pause(pay.id, "customer asked")
    payments.resume(pay.id)
    ahead = RecurringPayments(client, horizon=timedelta(days=20))
    ahead.materialize(pay.id)
    ahead.cancel(pay.id)

    got = [e for e in events(store) if e.object_type in ("recurring_payment", "occurrence")]
    occurrence = next(e for e in got if e.object_type == "occurrence")
    assert [e.action for e in got] == [
        "recurring_payment.create", "recurring_payment.update", "recurring_payment.pause",
        "recurring_payment.resume", "occurrence.schedule", "recurring_payment.cancel",
    ]  # fmt: skip
    assert {e.object_id for e in got if e.object_type == "recurring_payment"} == {str(pay.id)}
    created = got[0].details
    assert created["amount"] == "33.33" and created["from_account"] == "****6819"
    assert created["frequency"] == "monthly" and created["start_date"] == "2026-03-20"
    assert created["first_execute_at"] == "2026-03-20T09:00:00+00:00"
    assert occurrence.details["payment_id"] == pay.id
    assert occurrence.details["execute_at"] == "2026-03-20T09:00:00+00:00"
    assert occurrence.details["amount"] == "44.44"
    assert got[1].details == {"before": {"amount": "33.33", "version": 1},
                              "after": {"amount": "44.44", "version": 2}}  # fmt: skip
    assert got[2].details == {"status": {"before": "active", "after": "paused"},
                              "reason": "customer asked", "version": 3}  # fmt: skip
    assert got[3].details["status"] == {"before": "paused", "after": "active"}
    assert got[5].details["status"] == {"before": "active", "after": "cancelled"}
    assert got[5].details["cancelled_occurrences"] == [int(occurrence.object_id or 0)]


def test_tokens_are_recorded_without_their_secret(store: SqlStore, clock: ManualClock) -> None:
    service = TokenService(store.engine, clock)
    made = service.create("ops-bot", Role.OPERATOR, created_by="alice",
                          expires_in=timedelta(days=90))  # fmt: skip
    service.revoke("ops-bot", revoked_by="bob")

    got = events(store, "token.")
    assert [(e.action, e.object_type, e.object_id) for e in got] == [
        ("token.create", "token", made.row.id), ("token.revoke", "token", made.row.id)
    ]  # fmt: skip
    assert got[0].details == {"name": "ops-bot", "role": "operator", "created_by": "alice",
                              "expires_at": "2026-05-31T00:00:00+00:00"}  # fmt: skip
    assert got[1].details["revoked_by"] == "bob"
    secret_hash = _token_hash(store, made.row.id)
    for e in got:
        assert made.text not in e.raw_details and secret_hash not in e.raw_details


def test_an_error_resolution_is_recorded_with_its_notes(
    store: SqlStore, clock: ManualClock
) -> None:
    error_id = _log_error(store, clock.now())
    resolve(store.engine, error_id, by="carol", notes="bank outage; re-run done", now=clock.now())

    (got,) = events(store, "error.")
    assert (got.action, got.object_type, got.object_id) == ("error.resolve", "error", str(error_id))
    assert got.details == {"error_code": "API_ERROR", "resolved_by": "carol",
                           "notes": "bank outage; re-run done"}  # fmt: skip


async def test_attempts_run_by_the_engine_record_execution_failure_and_return(
    store: SqlStore, clock: ManualClock, client: EngineClient
) -> None:
    async with EngineHarness(store, operations_registry, clock) as h:
        transfers = ScheduledTransfers(h.client)
        paid, _ = transfers.create(transfer())
        short, _ = transfers.create(transfer(request_key="t-2", amount="999999.00"))
        shut, _ = transfers.create(transfer(request_key="t-3", to_account=SPARE))
        Customers(store.engine, clock).close_account(SPARE)
        await advance(h, timedelta(days=2))
        AchReturns(transfers).record(paid.id, "R01")

    got = events(store, "transfer.") + events(store, "ledger.")
    executed = next(e for e in got if e.action == "transfer.execute")
    assert executed.object_id == str(paid.id)
    assert executed.details == {
        "amount": "123.45", "currency": "USD", "from_account": "****6819",
        "to_account": "****3000", "bank": "ledger", "reference": paid.transfer_key,
        "attempt": 1, "replayed": False,
    }  # fmt: skip
    retry = next(e for e in got if e.action == "transfer.retry")
    assert retry.object_id == str(short.id) and retry.details["attempt"] == 1
    assert retry.details["code"] == "INSUFFICIENT_FUNDS"
    assert retry.details["retry_at"] == "2026-03-03T14:00:00+00:00"
    failed = next(e for e in got if e.action == "transfer.fail")
    assert failed.object_id == str(shut.id) and failed.details["to_account"] == "****4300"
    assert failed.details["code"] == "ACCOUNT_CLOSED" and failed.details["transient"] is False
    posted = next(e for e in got if e.object_id == paid.transfer_key)
    assert posted.action == "ledger.post" and posted.details["amount"] == "123.45"
    returned = next(e for e in got if e.action == "transfer.return")
    assert returned.object_id == str(paid.id)
    assert returned.details["code"] == "R01" and returned.details["decision"] == "reinitiated"
    assert returned.details["reversal"] == f"{paid.transfer_key}:return"
    reversal = next(e for e in got if e.object_id == f"{paid.transfer_key}:return")
    assert reversal.action == "ledger.reverse" and reversal.details["amount"] == "123.45"
    reinitiated = [e for e in got if e.action == "transfer.create"][-1]
    assert reinitiated.details["request_key"].startswith(f"ach-reinit:{paid.id}:")
    assert {e.actor for e in got} == {"system:unknown"}  # no entry point in this test


# -- atomicity: the change and its event, or neither ----------------------------------------


class Boom(RuntimeError):
    """The failure a test injects."""


def _raising(entries_seen: list[str]) -> Callable[..., None]:
    def recorder(conn: Connection, entries: Sequence[AuditEntry], at: datetime) -> None:
        entries_seen.extend(e.action for e in entries)
        raise Boom("the audit trail refused the event")

    return recorder


def _failing_after(entries_seen: list[str]) -> Callable[..., None]:
    def recorder(conn: Connection, entries: Sequence[AuditEntry], at: datetime) -> None:
        duly.audit.record(conn, entries, at)  # the event is written in the transaction...
        entries_seen.extend(e.action for e in entries)
        raise Boom("a later statement of the transaction failed")  # ...and rolls back with it

    return recorder


@dataclass(frozen=True)
class Change:
    """One business change: where it records, how to make it, and a look at its effect."""

    module: str
    make: Callable[[SqlStore, ManualClock, EngineClient], object]
    effect: Callable[[SqlStore], object]


def _first_transfer(store: SqlStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.min(scheduled_transfers.c.id))).scalar_one())


def _first_payment(store: SqlStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.min(recurring_payments.c.id))).scalar_one())


def _transfers_state(store: SqlStore) -> list[tuple[Any, ...]]:
    t = scheduled_transfers.c
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(t.id, t.status, t.version, t.execute_at).order_by(t.id))]  # fmt: skip


def _payments_state(store: SqlStore) -> list[tuple[Any, ...]]:
    p = recurring_payments.c
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(p.id, p.status, p.version, p.amount_minor).order_by(p.id))]  # fmt: skip


def _ledger_state(store: SqlStore) -> tuple[int, list[tuple[Any, ...]]]:
    a = accounts.c
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(a.id, a.debits_posted, a.credits_posted, a.debits_pending).order_by(a.id)
        ).all()
    return count(store, ledger_transfers), [tuple(r) for r in rows]


def _tokens_state(store: SqlStore) -> list[tuple[Any, ...]]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(tokens.c.name, tokens.c.revoked_at).order_by(tokens.c.name))]  # fmt: skip


def _people_state(store: SqlStore) -> tuple[int, list[tuple[Any, ...]]]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(accounts.c.id, accounts.c.status).order_by(accounts.c.id)).all()
    return count(store, customers), [tuple(r) for r in rows]


def _errors_state(store: SqlStore) -> list[tuple[Any, ...]]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(error_logs.c.id, error_logs.c.resolved).order_by(error_logs.c.id))]  # fmt: skip


def _transfer_many(store: SqlStore, clock: ManualClock) -> None:
    with store.engine.begin() as conn:
        LedgerBank(store.engine, clock).transfer_many(
            [TransferRequest(PAYER, SHOP, 5, "USD", "batch-1")], conn=conn
        )


_TRANSFERS = "duly.operations.transfers.service"
_RECURRING = "duly.operations.recurring.service"
CHANGES: dict[str, Change] = {
    "transfer.create": Change(
        _TRANSFERS,
        lambda s, c, cl: ScheduledTransfers(cl).create(transfer(request_key="new")),
        _transfers_state,
    ),
    "transfer.create_many": Change(
        _TRANSFERS,
        lambda s, c, cl: ScheduledTransfers(cl).create_many([transfer(request_key="new")]),
        _transfers_state,
    ),
    "transfer.cancel": Change(
        _TRANSFERS,
        lambda s, c, cl: ScheduledTransfers(cl).cancel(_first_transfer(s)),
        _transfers_state,
    ),
    "transfer.reschedule": Change(
        _TRANSFERS,
        lambda s, c, cl: ScheduledTransfers(cl).reschedule(_first_transfer(s), date(2026, 3, 9)),
        _transfers_state,
    ),
    "recurring_payment.create": Change(
        _RECURRING,
        lambda s, c, cl: RecurringPayments(cl).create(payment(request_key="new")),
        _payments_state,
    ),
    "recurring_payment.update": Change(
        _RECURRING,
        lambda s, c, cl: RecurringPayments(cl).update(_first_payment(s), PaymentChange("1.00")),
        _payments_state,
    ),
    "recurring_payment.pause": Change(
        "duly.operations.recurring.execution",
        lambda s, c, cl: RecurringPayments(cl).pause(_first_payment(s)),
        _payments_state,
    ),
    "ledger.post": Change(
        "duly.banking.ledger.core",
        lambda s, c, cl: LedgerBank(s.engine, c).transfer(PAYER, SHOP, 5, "USD", "new"),
        _ledger_state,
    ),
    "ledger.post_many": Change(
        "duly.banking.ledger.postings", lambda s, c, cl: _transfer_many(s, c), _ledger_state
    ),
    "ledger.reverse": Change(
        "duly.banking.ledger.core",
        lambda s, c, cl: LedgerBank(s.engine, c).reverse("fund-2", "fund-2:back", 1),
        _ledger_state,
    ),
    "customer.create": Change(
        "duly.banking.customers",
        lambda s, c, cl: Customers(s.engine, c).add(NewCustomer("new")),
        _people_state,
    ),
    "account.open": Change(
        "duly.banking.customers",
        lambda s, c, cl: Customers(s.engine, c).open_account(NewAccount("ACC-NEW-0009", "USD")),
        _people_state,
    ),
    "account.close": Change(
        "duly.banking.customers",
        lambda s, c, cl: Customers(s.engine, c).close_account(SPARE),
        _people_state,
    ),
    "token.create": Change(
        "duly.auth.service",
        lambda s, c, cl: TokenService(s.engine, c).create("new", Role.AUDITOR, created_by="t"),
        _tokens_state,
    ),
    "token.revoke": Change(
        "duly.auth.service",
        lambda s, c, cl: TokenService(s.engine, c).revoke("old", revoked_by="t"),
        _tokens_state,
    ),
    "error.resolve": Change(
        "duly.operations.balance_check.monitoring",
        lambda s, c, cl: resolve(s.engine, 1, by="carol", notes="fixed", now=c.now()),
        _errors_state,
    ),
}


@pytest.fixture
def world(store: SqlStore, clock: ManualClock, client: EngineClient) -> EngineClient:
    """Something of each kind to change: a transfer, a payment, a token, an error."""
    ScheduledTransfers(client).create(transfer())
    RecurringPayments(client).create(payment())
    TokenService(store.engine, clock).create("old", Role.OPERATOR, created_by="t")
    _log_error(store, clock.now())
    return client


@pytest.mark.parametrize("name", sorted(CHANGES))
@pytest.mark.parametrize("failure", ["before_writing", "after_writing"])
def test_a_change_and_its_event_commit_together_or_not_at_all(
    name: str,
    failure: str,
    store: SqlStore,
    clock: ManualClock,
    world: EngineClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    change = CHANGES[name]
    before, recorded = change.effect(store), len(events(store))
    seen: list[str] = []
    broken = _raising(seen) if failure == "before_writing" else _failing_after(seen)
    monkeypatch.setattr(f"{change.module}.record", broken)

    with pytest.raises(Boom):
        change.make(store, clock, world)

    assert seen, "the change never reached its recorder"
    assert change.effect(store) == before  # the change rolled back with its event...
    assert len(events(store)) == recorded  # ...and the event with its change
    monkeypatch.undo()
    change.make(store, clock, world)  # with the recorder back, the same change is made
    assert change.effect(store) != before
    assert len(events(store)) > recorded


@pytest.mark.parametrize("failure", ["before_writing", "after_writing"])
async def test_an_attempt_and_its_events_commit_with_the_run_or_not_at_all(
    failure: str,
    store: SqlStore,
    clock: ManualClock,
    client: EngineClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str] = []
    broken = _raising(seen) if failure == "before_writing" else _failing_after(seen)
    async with EngineHarness(store, operations_registry, clock) as h:
        transfers = ScheduledTransfers(h.client)
        row, _ = transfers.create(transfer())
        ledger_before = _ledger_state(store)
        monkeypatch.setattr("duly.operations.execution.outcomes.record", broken)
        await advance(h, row.execute_at + timedelta(seconds=5) - clock.now())
        assert "transfer.execute" in seen  # the attempt ran and failed at its recorder
        stuck = transfers.get(row.id)
        assert stuck is not None and stuck.status != "executed"
        assert _ledger_state(store) == ledger_before  # the posting rolled back with the run
        assert actions(store, "transfer.execute") == []
        assert row.transfer_key not in {e.object_id for e in events(store, "ledger.")}
        monkeypatch.undo()
        await advance(h, timedelta(minutes=1))  # the engine's retry, with the recorder back
    done = transfers.get(row.id)
    assert done is not None and done.status == "executed"
    assert actions(store, "transfer.execute") == ["transfer.execute"]
    assert [e.object_id for e in events(store, "ledger.post")][-1] == row.transfer_key


# -- no secret, no balance, no account number in any event --------------------------------


async def test_no_event_of_a_whole_scenario_carries_an_account_number_balance_or_secret(
    store: SqlStore, clock: ManualClock
) -> None:
    balances: set[int] = set()
    ledger = seed(store, clock)

    def snapshot() -> None:
        for account in (*ACCOUNTS, "BANK-FUNDING-USD"):
            b = ledger.get_balance(account)
            balances.update({b.posted_minor, b.available_minor})

    # From here on: the first deposit into an empty account is, for that instant, its
    # balance too; every balance after the seeding must differ from what any event says.
    snapshot()
    people = Customers(store.engine, clock)
    async with EngineHarness(store, operations_registry, clock) as h:
        transfers = ScheduledTransfers(h.client)
        paid, _ = transfers.create(transfer(request_key=f"pay-{PAYER}-{SHOP}"))
        gone, _ = transfers.create(transfer(request_key="gone", amount="17.17"))
        moved, _ = transfers.create(transfer(request_key="moved", amount="200.01"))
        transfers.create(transfer(request_key="broke", amount="999999.99"))
        transfers.create(transfer(request_key="shut", to_account=SPARE, amount="1.11"))
        transfers.cancel(gone.id)
        transfers.reschedule(moved.id, date(2026, 3, 4), "11:15")
        ledger.reserve(PAYER, SHOP, 55_555, "USD", f"hold-{SHOP}")
        snapshot()
        payments = RecurringPayments(h.client)
        pay, _ = payments.create(payment(to_account=SPARE))
        payments.update(pay.id, PaymentChange(amount="44.44", memo="rent, flat 2"))
        payments.pause(pay.id)
        payments.resume(pay.id)
        ahead = RecurringPayments(h.client, horizon=timedelta(days=30))
        ahead.materialize(pay.id)
        ahead.cancel(pay.id)
        people.close_account(SPARE)
        await advance(h, timedelta(days=3))
        snapshot()
        AchReturns(transfers).record(paid.id, "R09")
        ledger.void_pending(f"hold-{SHOP}", "unhold")
        snapshot()
        await advance(h, timedelta(days=3))  # the reinitiation executes
        snapshot()
    service = TokenService(store.engine, clock)
    tokens_made = [
        service.create(f"bot-{role.value}", role, created_by="ops")
        for role in (Role.ADMIN, Role.OPERATOR)
    ]
    service.revoke("bot-admin", revoked_by="ops")
    resolve(store.engine, _log_error(store, clock.now()), by="carol", notes="re-ran it",
            now=clock.now())  # fmt: skip
    snapshot()

    got = events(store)
    assert {"transfer.create", "transfer.cancel", "transfer.reschedule", "transfer.execute",
            "transfer.fail", "transfer.return", "ledger.post", "ledger.reverse",
            "ledger.reserve", "ledger.void", "recurring_payment.create",
            "recurring_payment.update", "recurring_payment.pause", "recurring_payment.resume",
            "recurring_payment.cancel", "token.create", "token.revoke", "error.resolve",
            "customer.create", "account.open", "account.close"} <= {e.action for e in got}  # fmt: skip
    forbidden = {*ACCOUNTS, *(t.text for t in tokens_made)}
    forbidden |= {t.text.rsplit("_", 1)[1] for t in tokens_made}  # the secret part alone
    forbidden |= {_token_hash(store, t.row.id) for t in tokens_made}
    balance_texts = {str(b) for b in balances if abs(b) >= 1000}
    balance_texts |= {str(from_minor(abs(b), "USD")) for b in balances if abs(b) >= 1000}
    balance_texts.add("12345.67")  # the premium threshold
    assert len(balance_texts) >= 10  # the scenario moved the balances about
    for e in got:
        fields = {"details": e.raw_details, "object_id": e.object_id or "",
                  "actor_name": e.actor_name or "", "actor": e.actor}  # fmt: skip
        for where, value in fields.items():
            for secret in forbidden:
                assert secret not in value, f"{e.action} {where} carries a secret or account"
            for figure in balance_texts:
                assert figure not in value, f"{e.action} {where} carries balance {figure}"
        _no_balance_keys(e.details, e.action)


def _no_balance_keys(details: Any, action: str) -> None:
    if isinstance(details, dict):
        for key, value in details.items():
            assert "balance" not in key.lower() or key == "premium_threshold_set", (action, key)
            _no_balance_keys(value, action)
    elif isinstance(details, list):
        for value in details:
            _no_balance_keys(value, action)


# -- the CLI's actor ------------------------------------------------------------------------


def test_a_cli_command_records_its_change_as_the_operating_system_user(
    cli_store: SqlStore,
) -> None:
    result = CliRunner().invoke(app, ["token", "create", "--role", "auditor", "--name", "aud"])
    assert result.exit_code == 0, result.stderr

    (got,) = events(cli_store, "token.")
    user = getpass.getuser()
    assert (got.action, got.actor, got.actor_name) == ("token.create", f"cli:{user}", user)
    with cli_store.engine.connect() as conn:
        role = conn.execute(select(audit_events.c.actor_role)).scalar_one()
    assert role == "cli"
    assert current_actor().id == "system:unknown"  # the command's actor ended with it


# -- helpers ------------------------------------------------------------------------------


def _token_hash(store: SqlStore, token_id: str) -> str:
    with store.engine.connect() as conn:
        return str(
            conn.execute(select(tokens.c.secret_hash).where(tokens.c.id == token_id)).scalar_one()
        )


def _log_error(store: SqlStore, at: datetime) -> int:
    with store.engine.begin() as conn:
        return int(
            conn.execute(
                insert(error_logs)
                .values(run_id=1, job_name="daily_balance_check", customer_id=None,
                        business_date=at.date(), error_code="API_ERROR",
                        message="the bank answered 503", retry_count=3,
                        stack_trace="Traceback…", logged_at=at)
                .returning(error_logs.c.id)
            ).scalar_one()
        )  # fmt: skip
