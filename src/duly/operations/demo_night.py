"""The demo bank's last night: a balance check read from the bank simulator, with PASS/FAIL/ERROR.

``duly serve --demo`` starts a :class:`~duly.banking.simulator.BankSimulator` on loopback
and points the nightly check at it (``jobs.daily_balance_check.bank: http``). This module
adds premium demo customers, gives the simulator their accounts so that the night has every
outcome — balances above the minimum (PASS), below it (FAIL), an account the bank does not
know (ERROR ``MISSING_DATA``) and a balance below the overdraft limit (ERROR
``NEGATIVE_BALANCE``) — and queues the real check for yesterday's business date, which the
node then runs like any other night. Everything is keyed, so a second start adds nothing to
the database (the simulator, in memory, is loaded again).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, timedelta

from duly.banking.customers import Customers, NewAccount, NewCustomer
from duly.banking.simulator import BankSimulator
from duly.engine.client import EngineClient
from duly.engine.store.base import NewAlert
from duly.operations.balance_check.models import JOB_NAME
from duly.operations.demo import DEMO_CUSTOMERS, account_id

__all__ = ["NIGHT_CUSTOMERS", "DemoNight", "load_simulator", "seed_demo_night"]

#: (external id, name, timezone, minimum in minor units, what the simulator answers), in GBP.
#: ``pass``/``fail``: a balance above/below the minimum; ``missing``: the bank does not know
#: the account; ``negative``: a balance below the overdraft limit.
NIGHT_CUSTOMERS: tuple[tuple[str, str, str, int, str], ...] = (
    ("demo-mary", "Mary Somerville", "Europe/London", 250_000, "pass"),
    ("demo-hedy", "Hedy Lamarr", "Europe/Vienna", 400_000, "pass"),
    ("demo-rosalind", "Rosalind Franklin", "Europe/London", 300_000, "fail"),
    ("demo-sophie", "Sophie Germain", "Europe/Paris", 150_000, "missing"),
    ("demo-lise", "Lise Meitner", "Europe/Berlin", 200_000, "negative"),
)


@dataclass
class DemoNight:
    """What one call did: customers added, and the check's run (new or found again)."""

    customers: int
    run_id: int
    business_date: str
    queued: bool


def _balance(minimum: int, outcome: str) -> int | None:
    return {"pass": minimum + 125_000, "fail": minimum - 40_000, "negative": -5_000}.get(outcome)


def load_simulator(sim: BankSimulator) -> None:
    """Give the simulator every premium demo account, each answering as its outcome says.

    The first demo bank's premium customers answer their opening deposits (so one passes and
    one fails against their minimums, as in the ledger).
    """
    for ext, _name, _tz, tier, minimum, deposit, currency in DEMO_CUSTOMERS:
        if tier == "premium" and minimum is not None:
            sim.add_account(account_id(ext), currency, deposit)
    for ext, _, _, minimum, outcome in NIGHT_CUSTOMERS:
        balance = _balance(minimum, outcome)
        if balance is not None:
            sim.add_account(account_id(ext), "GBP", balance)


def seed_demo_night(client: EngineClient) -> DemoNight:
    """Add the night's premium customers (once) and queue the check of yesterday (once)."""
    people = Customers(client.store.engine, client.clock)
    added = 0
    for ext, name, tz, minimum, _ in NIGHT_CUSTOMERS:
        row = people.by_external_id(ext)
        if row is None:
            row = people.add(NewCustomer(
                external_id=ext, name=name, timezone=tz, tier="premium",
                min_balance_minor=minimum, min_balance_currency="GBP",
                email=f"{ext.removeprefix('demo-')}@example.com", notification_prefs={"email": True},
            ))  # fmt: skip
            added += 1
        if people.account(account_id(ext)) is None:
            people.open_account(NewAccount(account_id(ext), "GBP", row.id))
    now = client.clock.now().astimezone(UTC)
    night = now.date() - timedelta(days=1)
    run, queued = client.trigger(
        JOB_NAME,
        {"business_date": night.isoformat()},
        idempotency_key=f"demo-night:{night.isoformat()}",
        origin="backfill",
    )
    if queued:
        _demo_alerts(client, night)
    return DemoNight(added, run.id, night.isoformat(), queued)


def _demo_alerts(client: EngineClient, night: date) -> None:
    """Two alerts of the kinds operators see, so the dashboard has something to acknowledge."""
    now = client.clock.now()
    earlier = (night - timedelta(days=2)).isoformat()
    command = f"duly trigger {JOB_NAME} --arg business_date={earlier}"
    client.store.alert_raise(NewAlert(
        dedupe_key=f"demo:balance_check.missed_night:{earlier}", rule="balance_check.missed_night",
        severity="high", title=f"{JOB_NAME} never completed for business date {earlier}; "
        f"backfill with `{command}` (demo)", now=now,
        details={"business_date": earlier, "backfill": command}, job_name=JOB_NAME,
    ))  # fmt: skip
    client.store.alert_raise(NewAlert(
        dedupe_key="demo:node.lost:demo-old-node", rule="node.lost", severity="medium",
        title="node demo-old-node stopped heartbeating; its runs were taken back (demo)", now=now,
        details={"node": "demo-old-node"},
    ))  # fmt: skip
