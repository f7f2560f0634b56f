"""Payment reminders on the manual clock, SQLite and PostgreSQL: offsets, quiet hours,
cancel after queueing, reschedule, business-day moves, DST, recurring payments
(finance-rules.md §5, checklist 23–26)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from conftest import Mailbox, Receiver
from duly.banking.customers import Customers, NewAccount, NewCustomer
from duly.banking.ledger import LedgerBank
from duly.clock import ManualClock
from duly.config import NotifySettings
from duly.engine.client import EngineClient
from duly.engine.store.sql import SqlStore
from duly.notify.deliveries import list_deliveries
from duly.notify.schema import reminders
from duly.operations import (
    NewRecurringPayment,
    NewTransfer,
    RecurringPayments,
    ScheduledTransfers,
    operations_registry,
)
from duly.operations.notifications.wiring import Notifications, build_notifications

LONDON = ZoneInfo("Europe/London")


@pytest.fixture
def client(store: SqlStore, clock: ManualClock) -> EngineClient:
    people = Customers(store.engine, clock)
    ann = people.add(
        NewCustomer("ann", timezone="Europe/London", email="ann@example.com",
                    phone="+447700900123", notification_prefs={"channels": ["email", "sms"]})
    )  # fmt: skip
    people.open_account(NewAccount("GB29NWBK60161331926819", "GBP", ann.id))
    people.open_account(NewAccount("GB94BARC10201530093459", "GBP", None))
    LedgerBank(store.engine, clock).fund("GB29NWBK60161331926819", 1_000_000, "GBP", "fund")
    return EngineClient(store, operations_registry, clock)


@pytest.fixture
def notify(
    store: SqlStore, clock: ManualClock, receiver: Receiver, smtp_server: Mailbox
) -> Iterator[Notifications]:
    s = NotifySettings(
        email={"host": smtp_server.host, "port": smtp_server.port, "starttls": False},
        sms={"url": receiver.at("/sms")},
        delivery={"concurrency": 1},
    )
    parts = build_notifications(s, store, clock)
    yield parts
    parts.close()


def transfer(**kw: Any) -> NewTransfer:
    base: dict[str, Any] = {
        "request_key": "t-1",
        "from_account": "GB29NWBK60161331926819",
        "to_account": "GB94BARC10201530093459",
        "amount": "125.50",
        "currency": "GBP",
        "local_date": date(2026, 3, 12),  # Thursday
        "local_time": "10:00",
    }
    base.update(kw)
    return NewTransfer(**base)


def sent(receiver: Receiver, smtp: Mailbox) -> list[tuple[str, str]]:
    """(channel, local send time) of what arrived, in order."""
    out = [("sms", r.body["text"]) for r in receiver.on("/sms")]
    out += [("email", str(m["Subject"])) for _, m in smtp.messages]
    return out


def planned(store: SqlStore) -> dict[tuple[int, str, str], tuple[str, str | None]]:
    """(version, offset, channel) → (status, London send time)."""
    with store.engine.connect() as conn:
        rows = conn.execute(select(reminders)).all()
    return {
        (r.version, r.offset, r.channel): (
            r.status,
            r.send_at.astimezone(LONDON).strftime("%a %d %H:%M") if r.status != "skipped" else None,
        )
        for r in rows
    }


async def run_until(notify: Notifications, clock: ManualClock, until: datetime) -> list[datetime]:
    """Move the clock from one due delivery to the next, sending at each; return send instants."""
    instants = []
    notify.drain()
    while True:
        due = [d.next_attempt_at for d in list_deliveries(notify.store.engine, status="pending")]
        nxt = min((d for d in due if d is not None), default=None)
        if nxt is None or nxt > until:
            break
        if nxt > clock.now():
            clock.set(nxt)
        if notify.drain():
            instants.append(clock.now())
    if clock.now() < until:
        clock.set(until)
    return instants


async def test_three_reminders_per_channel_at_their_times(
    client: EngineClient, store: SqlStore, clock: ManualClock, notify: Notifications,
    receiver: Receiver, smtp_server: Mailbox,
) -> None:  # fmt: skip
    ScheduledTransfers(client).create(transfer())
    notify.drain()
    assert planned(store) == {
        (1, "3d", "email"): ("planned", "Mon 09 10:00"),
        (1, "1d", "email"): ("planned", "Wed 11 10:00"),
        (1, "1h", "email"): ("planned", "Thu 12 09:00"),
        (1, "3d", "sms"): ("planned", "Mon 09 10:00"),
        (1, "1d", "sms"): ("planned", "Wed 11 10:00"),
        (1, "1h", "sms"): ("planned", "Thu 12 09:00"),
    }
    instants = await run_until(notify, clock, datetime(2026, 3, 13, tzinfo=UTC))
    assert [i.astimezone(LONDON).strftime("%a %H:%M") for i in instants] == [
        "Mon 10:00", "Wed 10:00", "Thu 09:00"
    ]  # fmt: skip
    assert len(receiver.on("/sms")) == 3 and len(smtp_server.messages) == 3
    texts = [r.body["text"] for r in receiver.on("/sms")]
    assert texts[0] == "Reminder: £125.50 to ****3459 on Mar 12, 2026, 10:00:00 AM GMT."
    assert "GB94BARC10201530093459" not in str(texts)  # masked
    assert all(d.status == "sent" for d in list_deliveries(store.engine))


async def test_offsets_past_at_creation_are_skipped(
    client: EngineClient, store: SqlStore, clock: ManualClock, notify: Notifications
) -> None:
    clock.set(datetime(2026, 3, 10, 12, tzinfo=UTC))  # Tue noon: the 3d reminder has passed
    ScheduledTransfers(client).create(transfer())
    notify.drain()
    p = planned(store)
    assert p[(1, "3d", "email")] == ("skipped", None)
    assert p[(1, "1d", "email")] == ("planned", "Wed 11 10:00")


async def test_quiet_hours_move_sms_earlier_never_into_the_night(
    client: EngineClient, store: SqlStore, clock: ManualClock, notify: Notifications,
    receiver: Receiver,
) -> None:  # fmt: skip
    ScheduledTransfers(client).create(transfer(local_time="08:30"))
    notify.drain()
    p = planned(store)
    assert p[(1, "1h", "email")] == ("planned", "Thu 12 07:30")  # e-mail has no quiet hours
    assert p[(1, "1h", "sms")] == ("planned", "Wed 11 20:59")
    instants = await run_until(notify, clock, datetime(2026, 3, 13, tzinfo=UTC))
    sms_at = [d.sent_at for d in list_deliveries(store.engine, channel="sms")]
    for at in sms_at:
        assert at is not None
        local = at.astimezone(LONDON).time()
        assert local.hour >= 8 and (local.hour, local.minute) < (21, 0)
    assert len(receiver.on("/sms")) == 3 and len(instants) == 4


async def test_cancel_after_queueing_sends_nothing(
    client: EngineClient, store: SqlStore, clock: ManualClock, notify: Notifications,
    receiver: Receiver, smtp_server: Mailbox,
) -> None:  # fmt: skip
    transfers = ScheduledTransfers(client)
    row, _ = transfers.create(transfer())
    notify.drain()  # six reminders queued as deliveries
    clock.set(datetime(2026, 3, 9, 10, tzinfo=UTC))
    transfers.cancel(row.id)  # the relay has not read the cancel yet …
    assert notify.sender.send_due() == 2  # … the 3d ones are claimed, and the guard stops them
    assert receiver.on("/sms") == [] and smtp_server.messages == []
    notify.drain()  # now the relay cancels the rest
    await run_until(notify, clock, datetime(2026, 3, 13, tzinfo=UTC))
    assert receiver.on("/sms") == [] and smtp_server.messages == []
    assert {d.status for d in list_deliveries(store.engine)} == {"cancelled"}
    assert {s for s, _ in planned(store).values()} == {"cancelled"}


async def test_reschedule_replans_resends_nothing_and_notifies_once(
    client: EngineClient, store: SqlStore, clock: ManualClock, notify: Notifications,
    receiver: Receiver, smtp_server: Mailbox,
) -> None:  # fmt: skip
    transfers = ScheduledTransfers(client)
    row, _ = transfers.create(transfer())
    await run_until(notify, clock, datetime(2026, 3, 10, tzinfo=UTC))  # 3d reminders sent
    assert len(receiver.on("/sms")) == 1
    transfers.reschedule(row.id, date(2026, 3, 19))
    notify.drain()
    p = planned(store)
    assert p[(1, "1d", "sms")][0] == "cancelled" and p[(1, "3d", "sms")][0] == "planned"
    assert p[(2, "3d", "sms")] == ("skipped", None)  # already sent once: not again
    assert p[(2, "1d", "sms")] == ("planned", "Wed 18 10:00")
    changed = [r.body["text"] for r in receiver.on("/sms") if "now runs" in r.body["text"]]
    assert changed == ["Your £125.50 payment now runs on Mar 19, 2026, 10:00:00 AM GMT."]
    await run_until(notify, clock, datetime(2026, 3, 20, tzinfo=UTC))
    texts = [r.body["text"] for r in receiver.on("/sms")]
    assert len(texts) == 4  # 3d (old date), date changed, 1d, 1h (new date)
    assert all("Mar 19" in t for t in texts[1:])
    assert len(receiver.processed("/sms")) == 4
    subjects = [str(m["Subject"]) for _, m in smtp_server.messages]
    assert sum("has changed" in s for s in subjects) == 1 and len(subjects) == 4


async def test_business_day_move_shifts_every_reminder(
    client: EngineClient, store: SqlStore, clock: ManualClock, notify: Notifications
) -> None:
    # Saturday 14 March → Monday 16 March (following, weekends-only calendar).
    ScheduledTransfers(client).create(transfer(local_date=date(2026, 3, 14)))
    notify.drain()
    p = planned(store)
    assert p[(1, "3d", "email")] == ("planned", "Fri 13 10:00")
    assert p[(1, "1d", "email")] == ("planned", "Sun 15 10:00")
    assert p[(1, "1h", "email")] == ("planned", "Mon 16 09:00")


async def test_dst_change_between_reminder_and_payment(
    client: EngineClient, store: SqlStore, clock: ManualClock, notify: Notifications
) -> None:
    # London springs forward on Sunday 29 March 2026; the payment is Monday 30th 10:00 BST.
    clock.set(datetime(2026, 3, 20, tzinfo=UTC))
    ScheduledTransfers(client).create(transfer(local_date=date(2026, 3, 30)))
    notify.drain()
    with store.engine.connect() as conn:
        rows = {r.offset: r.send_at for r in conn.execute(select(reminders).where(
            reminders.c.channel == "email"))}  # fmt: skip
    assert rows["3d"] == datetime(2026, 3, 27, 10, tzinfo=UTC)  # 10:00 GMT, same wall time
    assert rows["1d"] == datetime(2026, 3, 29, 9, tzinfo=UTC)  # 10:00 BST
    assert rows["1h"] == datetime(2026, 3, 30, 8, tzinfo=UTC)  # 09:00 BST


async def test_recurring_payment_reminders_are_planned_ahead_and_cancelled_on_pause(
    client: EngineClient, store: SqlStore, clock: ManualClock, notify: Notifications,
    receiver: Receiver,
) -> None:  # fmt: skip
    payments = RecurringPayments(client)
    row, _ = payments.create(
        NewRecurringPayment(request_key="rp-1", from_account="GB29NWBK60161331926819",
                            to_account="GB94BARC10201530093459", amount="40.00",
                            currency="GBP", frequency="monthly",
                            start_date=date(2026, 3, 16), time_of_day="10:00")
    )  # fmt: skip
    notify.drain()
    assert planned(store) == {}  # 16 March is beyond the look-ahead (3 d + 1 h + 24 h)
    clock.set(datetime(2026, 3, 12, 9, tzinfo=UTC))
    notify.planner.sweep()
    p = planned(store)
    assert p[(1, "3d", "sms")] == ("planned", "Fri 13 10:00")
    assert p[(1, "1h", "sms")] == ("planned", "Mon 16 09:00")
    await run_until(notify, clock, datetime(2026, 3, 14, tzinfo=UTC))
    assert len(receiver.on("/sms")) == 1
    payments.pause(row.id)
    notify.drain()
    await run_until(notify, clock, datetime(2026, 3, 17, tzinfo=UTC))
    texts = [r.body["text"] for r in receiver.on("/sms")]
    assert texts[1:] == ["Your recurring payment of £40.00 is paused."]  # and no reminder
    statuses = {k: v[0] for k, v in planned(store).items()}
    assert statuses[(1, "1d", "sms")] == "cancelled" and statuses[(1, "3d", "sms")] == "planned"


# -- per-operation offsets --------------------------------------------------------------


def set_offsets(notify: Notifications, kind: str, ref_id: int, offsets: list[str] | None) -> int:
    with notify.store.engine.begin() as conn:
        return notify.planner.set_offsets(conn, kind, ref_id, offsets)


async def test_a_transfers_own_offsets_replace_the_default_and_replan_at_once(
    client: EngineClient, store: SqlStore, clock: ManualClock, notify: Notifications,
    receiver: Receiver, smtp_server: Mailbox,
) -> None:  # fmt: skip
    transfers = ScheduledTransfers(client)
    row, _ = transfers.create(transfer())
    notify.drain()  # planned with the defaults (3d, 1d, 1h)
    with store.engine.connect() as conn:
        one_hour = conn.execute(
            select(reminders.c.delivery_id).where(
                reminders.c.offset == "1h", reminders.c.channel == "sms"
            )
        ).scalar()
    clock.set(datetime(2026, 3, 5, 12, tzinfo=UTC))
    assert set_offsets(notify, "transfer", row.id, ["30m", "2d", "1h"]) == 4  # 2d, 30m x 2
    p = planned(store)
    assert p[(1, "3d", "sms")][0] == "cancelled" and p[(1, "1d", "email")][0] == "cancelled"
    assert p[(1, "2d", "sms")] == ("planned", "Tue 10 10:00")
    assert p[(1, "30m", "email")] == ("planned", "Thu 12 09:30")
    assert p[(1, "1h", "sms")] == ("planned", "Thu 12 09:00")  # kept, not re-queued
    with store.engine.connect() as conn:
        assert (
            one_hour
            == conn.execute(
                select(reminders.c.delivery_id).where(
                    reminders.c.offset == "1h", reminders.c.channel == "sms"
                )
            ).scalar()
        )
    instants = await run_until(notify, clock, datetime(2026, 3, 13, tzinfo=UTC))
    assert [i.astimezone(LONDON).strftime("%a %H:%M") for i in instants] == [
        "Tue 10:00", "Thu 09:00", "Thu 09:30"
    ]  # fmt: skip
    assert len(receiver.processed("/sms")) == 3 == len(receiver.on("/sms"))
    assert len(smtp_server.messages) == 3
    assert all(d.status in ("sent", "cancelled") for d in list_deliveries(store.engine))


async def test_own_offsets_survive_a_reschedule_and_past_ones_are_skipped(
    client: EngineClient, store: SqlStore, clock: ManualClock, notify: Notifications,
    receiver: Receiver,
) -> None:  # fmt: skip
    transfers = ScheduledTransfers(client)
    row, _ = transfers.create(transfer())
    set_offsets(notify, "transfer", row.id, ["11d", "2h"])  # before the relay planned it
    notify.drain()
    p = planned(store)
    assert p[(1, "11d", "sms")] == ("skipped", None)  # 1 March 10:00 is past at creation
    assert p[(1, "2h", "sms")] == ("planned", "Thu 12 08:00")
    assert not any(offset in ("3d", "1d", "1h") for _, offset, _ in p)
    transfers.reschedule(row.id, date(2026, 3, 19))
    notify.drain()
    p = planned(store)
    assert p[(2, "11d", "sms")] == ("planned", "Sun 08 10:00")
    assert p[(2, "2h", "sms")] == ("planned", "Thu 19 08:00")
    assert p[(1, "2h", "sms")][0] == "cancelled"
    # Clearing the override goes back to the defaults for the current version.
    set_offsets(notify, "transfer", row.id, None)
    p = planned(store)
    assert p[(2, "11d", "sms")][0] == "cancelled"
    assert {o for v, o, c in p if v == 2 and p[(v, o, c)][0] == "planned"} == {"3d", "1d", "1h"}
    with pytest.raises(ValueError, match="bad reminder offset"):
        set_offsets(notify, "transfer", row.id, ["3 days"])


async def test_a_recurring_payments_own_offsets_reach_beyond_the_default_lookahead(
    client: EngineClient, store: SqlStore, clock: ManualClock, notify: Notifications,
    receiver: Receiver,
) -> None:  # fmt: skip
    row, _ = RecurringPayments(client).create(
        NewRecurringPayment(request_key="rp-1", from_account="GB29NWBK60161331926819",
                            to_account="GB94BARC10201530093459", amount="40.00",
                            currency="GBP", frequency="monthly",
                            start_date=date(2026, 3, 16), time_of_day="10:00")
    )  # fmt: skip
    notify.drain()
    set_offsets(notify, "payment", row.id, ["5d"])
    assert planned(store) == {}  # 16 March: beyond even 5 d + 1 h + 24 h on 2 March
    clock.set(datetime(2026, 3, 10, 9, tzinfo=UTC))  # within 5 d + 1 h + 24 h, not 3 d + …
    notify.planner.sweep()
    assert planned(store) == {
        (1, "5d", "email"): ("planned", "Wed 11 10:00"),
        (1, "5d", "sms"): ("planned", "Wed 11 10:00"),
    }
    await run_until(notify, clock, datetime(2026, 3, 17, tzinfo=UTC))
    assert len(receiver.processed("/sms")) == 1
    assert "40.00" in receiver.on("/sms")[0].body["text"]


def _snapshot(store: SqlStore) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    from duly.notify.schema import deliveries

    with store.engine.connect() as conn:
        rems = {
            (r.reminder_key, r.kind, r.ref_id, r.occurrence_key, r.version, r.customer_id,
             r.offset, r.channel, r.execute_at, r.send_at, r.status, r.reason,
             r.delivery_id is not None)
            for r in conn.execute(select(reminders))
        }  # fmt: skip
        dels = {
            (d.dedupe_key, d.source, d.source_ref, d.channel, d.recipient_ref, d.recipient_masked,
             d.template, d.locale, tuple(sorted(d.context.items())), d.status, d.next_attempt_at)
            for d in conn.execute(select(deliveries))
        }  # fmt: skip
    return rems, dels


async def test_bulk_planning_plans_exactly_what_one_by_one_planning_does(
    client: EngineClient, store: SqlStore, clock: ManualClock, notify: Notifications,
) -> None:  # fmt: skip
    """plan_transfers (the relay's path for a run of transfer.scheduled events) writes the
    same reminders and deliveries as plan_transfer for each: quiet hours, past offsets,
    an operation's own offsets, a cancelled transfer, reminders turned off."""
    from sqlalchemy import delete, insert

    from duly.banking.customers import Customers, NewAccount, NewCustomer
    from duly.notify.schema import deliveries, reminder_overrides, reminder_plans
    from duly.operations.outbox import unpublished

    people = Customers(store.engine, clock)
    bob = people.add(NewCustomer("bob", timezone="America/New_York", phone="+15550100",
                                 notification_prefs={"channels": ["sms"],
                                                     "reminder_offsets": ["2d", "30m"]}))  # fmt: skip
    people.open_account(NewAccount("US00BOB000000001", "GBP", bob.id))
    off = people.add(NewCustomer("off", email="off@example.com",
                                 notification_prefs={"reminders": False}))  # fmt: skip
    people.open_account(NewAccount("US00OFF000000001", "GBP", off.id))
    clock.set(datetime(2026, 3, 10, 12, tzinfo=UTC))  # the 3d reminders of Thursday are past
    st = ScheduledTransfers(client)
    friday, bobs = date(2026, 3, 13), "US00BOB000000001"
    ids = [
        st.create(transfer(request_key="a"))[0].id,
        st.create(transfer(request_key="b", local_time="08:30"))[0].id,  # SMS in quiet hours
        st.create(transfer(request_key="c", from_account=bobs, local_date=friday))[0].id,
        st.create(transfer(request_key="d", from_account="US00OFF000000001"))[0].id,
        st.create(transfer(request_key="e", local_date=date(2026, 3, 16)))[0].id,
        st.create(transfer(request_key="f", local_date=date(2026, 3, 17)))[0].id,
    ]
    st.cancel(ids[5])
    with store.engine.begin() as conn:
        conn.execute(insert(reminder_overrides).values(kind="transfer", ref_id=ids[4],
                                                       offsets=["4d", "2h"], updated_at=clock.now()))  # fmt: skip
        created = {int(e.aggregate_id): e.created_at for e in unpublished(conn, 100)
                   if e.event_type == "transfer.scheduled"}  # fmt: skip
    items = [(i, created[i]) for i in ids]

    with store.engine.begin() as conn:
        queued = notify.planner.plan_transfers(conn, items)
    bulk = _snapshot(store)
    with store.engine.begin() as conn:
        assert notify.planner.plan_transfers(conn, items) == 0  # planned once
    assert _snapshot(store) == bulk

    with store.engine.begin() as conn:
        for table in (reminders, reminder_plans, deliveries):
            conn.execute(delete(table))
    with store.engine.begin() as conn:
        one_by_one = sum(notify.planner.plan_transfer(conn, i, nb) for i, nb in items)
    assert _snapshot(store) == bulk
    assert queued == one_by_one and queued > 0
    statuses = {(r[2], r[10]) for r in bulk[0]}
    assert (ids[0], "skipped") in statuses and (ids[0], "planned") in statuses
    assert not any(r[2] in (ids[3], ids[5]) for r in bulk[0])  # reminders off; cancelled
