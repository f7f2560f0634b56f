"""The delivery queue's set-based steps on SQLite and PostgreSQL: claims through the queue's
index, outcomes written in one statement and fenced by the claim's attempt number."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from duly.engine.store.sql import SqlStore
from duly.notify.deliveries import (
    NewDelivery,
    Outcome,
    claim,
    enqueue_many,
    finish_many,
    list_deliveries,
    next_due,
)

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)


def new(i: int) -> NewDelivery:
    return NewDelivery(dedupe_key=f"k{i}", source="test", channel="sms",
                       recipient_ref=f"customer:{i}", recipient_masked="+44***",
                       template="test", context={"text": f"t{i}"},
                       not_before=T0 + timedelta(seconds=i))  # fmt: skip


def test_outcomes_are_fenced_by_the_claims_attempt(store: SqlStore) -> None:
    engine = store.engine
    with engine.begin() as conn:
        assert len(enqueue_many(conn, [new(1), new(2), new(3)], T0)) == 3
        assert list(enqueue_many(conn, [new(1), new(4)], T0)) == ["k4"]  # k1 was queued
    lease = timedelta(seconds=10)
    assert next_due(engine) == T0 + timedelta(seconds=1)
    first = claim(engine, T0 + timedelta(seconds=3), 10, lease)
    assert [d.dedupe_key for d in first] == ["k1", "k2", "k3"]
    assert claim(engine, T0 + timedelta(seconds=5), 10, lease)[0].dedupe_key == "k4"
    assert claim(engine, T0 + timedelta(seconds=12), 10, lease) == []  # leases still held
    # k1's sender is presumed dead: its lease ran out and another sender claims it.
    (again,) = claim(engine, T0 + timedelta(seconds=14), 1, lease)
    assert (again.dedupe_key, again.attempts) == ("k1", 2)
    now = T0 + timedelta(seconds=15)
    retry = now + timedelta(seconds=60)
    k1, k2, k3 = first
    done = finish_many(engine, [Outcome(k1, "sent", code="200", ref="late"),
                                Outcome(k2, "pending", code="503", error="HTTP 503", retry_at=retry),
                                Outcome(k3, "sent", code="200", ref="m3")], now)  # fmt: skip
    assert done == [False, True, True]  # k1 belongs to the second claim now
    rows = {d.dedupe_key: d for d in list_deliveries(engine)}
    assert (rows["k1"].status, rows["k1"].attempts, rows["k1"].provider_ref) == ("sending", 2, None)
    assert (rows["k2"].status, rows["k2"].next_attempt_at, rows["k2"].sent_at) == (
        "pending",
        retry,
        None,
    )
    assert rows["k2"].last_error == "HTTP 503" and rows["k2"].lease_until is None
    assert (rows["k3"].status, rows["k3"].sent_at, rows["k3"].provider_ref) == ("sent", now, "m3")
    assert rows["k3"].next_attempt_at is None
    assert finish_many(engine, [Outcome(again, "failed", code="400", error="bad")], now) == [True]
    assert list_deliveries(engine, status="failed")[0].dedupe_key == "k1"
    assert next_due(engine) == T0 + timedelta(seconds=15)  # k4's lease
