"""Balance check records and monitoring figures, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import delete, insert, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from duly.banking.customers import Customers, NewCustomer
from duly.clock import ManualClock
from duly.engine.store.sql import SqlStore
from duly.operations.balance_check.models import balance_check_results, error_logs
from duly.operations.balance_check.monitoring import (
    AlreadyResolved,
    ResolveError,
    UnknownError,
    customer_history,
    error_counts_by_code,
    error_counts_by_hour,
    get_error,
    recent_errors,
    resolve,
    run_results,
    top_customers,
)
from duly.operations.balance_check.service import (
    decided_customers,
    load_premium_customers,
    night_counts,
)
from duly.operations.errors import NotFound, StateConflict

T0 = datetime(2026, 3, 2, 22, 0, tzinfo=UTC)


@pytest.fixture
def people(store: SqlStore, clock: ManualClock) -> list[int]:
    c = Customers(store.engine, clock)
    return [
        c.add(NewCustomer(f"c{i}", tier="premium", min_balance_minor=100,
                          min_balance_currency="USD")).id
        for i in range(4)
    ]  # fmt: skip


def log_error(store: SqlStore, customer: int | None, code: str, at: datetime, **kw: object) -> int:
    with store.engine.begin() as conn:
        return int(
            conn.execute(
                insert(error_logs)
                .values(run_id=kw.get("run_id", 1), job_name="daily_balance_check",
                        customer_id=customer, business_date=at.date(), error_code=code,
                        message=f"{code} happened", retry_count=3, stack_trace="Traceback…",
                        logged_at=at)
                .returning(error_logs.c.id)
            ).scalar_one()
        )  # fmt: skip


def result(store: SqlStore, customer: int, day: date, outcome: str, code: str | None = None,
           run_id: int = 1) -> None:  # fmt: skip
    with store.engine.begin() as conn:
        conn.execute(
            insert(balance_check_results).values(
                run_id=run_id, business_date=day, customer_id=customer, result=outcome,
                error_code=code, attempts=1, checked_at=T0,
            )
        )  # fmt: skip


def test_figures_by_code_hour_and_customer(store: SqlStore, people: list[int]) -> None:
    a, b, c, _ = people
    h = timedelta(hours=1)
    log_error(store, a, "TIMEOUT", T0)
    log_error(store, a, "TIMEOUT", T0 + timedelta(minutes=10))
    log_error(store, a, "API_ERROR", T0 + 2 * h)
    log_error(store, b, "TIMEOUT", T0 + 2 * h + timedelta(minutes=59))
    log_error(store, c, "NULL_BALANCE", T0 + timedelta(days=2))  # outside the period
    log_error(store, None, "INTERNAL", T0 + h)  # not about a customer
    end = T0 + timedelta(hours=3)
    by_code = error_counts_by_code(store.engine, T0, end)
    assert [(x.code, x.count, x.unresolved) for x in by_code] == [
        ("TIMEOUT", 3, 3), ("API_ERROR", 1, 1), ("INTERNAL", 1, 1)
    ]  # fmt: skip
    assert by_code[0].severity == "medium" and "in time" in by_code[0].description
    hours = error_counts_by_hour(store.engine, T0, end)
    assert [(x.hour, x.count) for x in hours] == [(T0, 2), (T0 + h, 1), (T0 + 2 * h, 2)]
    only = error_counts_by_hour(store.engine, T0, end, code="TIMEOUT")
    assert [x.count for x in only] == [2, 0, 1]
    top = top_customers(store.engine, T0, end, limit=5)
    assert [(x.customer_id, x.count, x.last_code) for x in top] == [(a, 3, "API_ERROR"), (b, 1, "TIMEOUT")]
    assert top[0].last_logged_at == T0 + 2 * h
    assert top_customers(store.engine, T0, end, limit=1)[0].customer_id == a


def test_recent_errors_filters_pages_and_hides_the_trace(store: SqlStore, people: list[int]) -> None:
    a, b, *_ = people
    ids = [log_error(store, a if i % 2 else b, "TIMEOUT" if i < 3 else "MISSING_DATA",
                     T0 + timedelta(minutes=i)) for i in range(6)]  # fmt: skip
    newest = recent_errors(store.engine, limit=2)
    assert [e.id for e in newest] == [ids[5], ids[4]]
    assert [e.id for e in recent_errors(store.engine, limit=2, before_id=ids[4])] == [ids[3], ids[2]]
    assert {e.customer_id for e in recent_errors(store.engine, customer_id=a)} == {a}
    assert {e.error_code for e in recent_errors(store.engine, code="TIMEOUT")} == {"TIMEOUT"}
    assert not hasattr(newest[0], "stack_trace")


def test_resolve_once_with_notes_and_nothing_else_may_change(
    store: SqlStore, people: list[int]
) -> None:
    err = log_error(store, people[0], "TIMEOUT", T0)
    with pytest.raises(ResolveError, match="notes are required"):
        resolve(store.engine, err, by="ana", notes="  ", now=T0)
    with pytest.raises(ResolveError, match="no error 999"):
        resolve(store.engine, 999, by="ana", notes="x", now=T0)
    done = resolve(store.engine, err, by="ana", notes="core bank was restarted", now=T0 + timedelta(hours=1))
    assert (done.resolved, done.resolved_by, done.resolution_notes) == (True, "ana", "core bank was restarted")
    assert done.resolved_at == T0 + timedelta(hours=1)
    with pytest.raises(ResolveError, match="already resolved by ana"):
        resolve(store.engine, err, by="bob", notes="again", now=T0)
    assert recent_errors(store.engine, unresolved_only=True) == []
    assert error_counts_by_code(store.engine, T0, T0 + timedelta(hours=1))[0].unresolved == 0
    # append-only: the database refuses any other change, and any delete
    for stmt in (
        update(error_logs).where(error_logs.c.id == err).values(message="edited"),
        update(error_logs).where(error_logs.c.id == err).values(error_code="API_ERROR"),
        delete(error_logs).where(error_logs.c.id == err),
    ):
        with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as conn:
            conn.execute(stmt)
    again = get_error(store.engine, err)
    assert again is not None and again.message == "TIMEOUT happened"


def test_one_result_per_customer_and_night(store: SqlStore, people: list[int]) -> None:
    a, b, c, d = people
    day = date(2026, 3, 2)
    result(store, a, day, "PASS")
    result(store, b, day, "FAIL")
    result(store, c, day, "ERROR", "TIMEOUT", run_id=2)
    result(store, a, day + timedelta(days=1), "FAIL", run_id=3)
    with pytest.raises(IntegrityError), store.engine.begin() as conn:
        conn.execute(insert(balance_check_results).values(
            run_id=9, business_date=day, customer_id=a, result="FAIL", attempts=1, checked_at=T0))
    with pytest.raises(IntegrityError), store.engine.begin() as conn:  # ERROR needs its code
        conn.execute(insert(balance_check_results).values(
            run_id=9, business_date=day, customer_id=d, result="ERROR", attempts=1, checked_at=T0))
    assert decided_customers(store.engine, day) == {a, b, c}
    outcomes, codes = night_counts(store.engine, day)
    assert outcomes == {"PASS": 1, "FAIL": 1, "ERROR": 1} and codes == {"TIMEOUT": 1}
    assert [r.customer_id for r in run_results(store.engine, 1)] == [a, b]
    assert [r.customer_id for r in run_results(store.engine, 1, result="FAIL")] == [b]
    history = customer_history(store.engine, a)
    assert [(h.business_date, h.result) for h in history] == [
        (day + timedelta(days=1), "FAIL"), (day, "PASS")
    ]  # fmt: skip


def test_premium_customers_with_their_open_accounts_in_the_minimums_currency(
    store: SqlStore, clock: ManualClock
) -> None:
    from duly.banking.customers import NewAccount

    c = Customers(store.engine, clock)
    p = c.add(NewCustomer("p", tier="premium", min_balance_minor=5, min_balance_currency="EUR"))
    c.open_account(NewAccount("P-EUR-2", "EUR", p.id))
    c.open_account(NewAccount("P-EUR-1", "EUR", p.id))
    c.open_account(NewAccount("P-USD-1", "USD", p.id))
    c.open_account(NewAccount("P-EUR-X", "EUR", p.id))
    c.close_account("P-EUR-X")
    bare = c.add(NewCustomer("bare", tier="premium"))
    c.add(NewCustomer("s", tier="standard"))
    got = load_premium_customers(store.engine)
    assert [(x.id, x.min_balance_minor, x.currency, x.accounts) for x in got] == [
        (p.id, 5, "EUR", ("P-EUR-1", "P-EUR-2")), (bare.id, None, None, ())
    ]  # fmt: skip


def test_recent_errors_until_and_resolved_or_not(store: SqlStore, people: list[int]) -> None:
    a = people[0]
    ids = [log_error(store, a, "TIMEOUT", T0 + timedelta(hours=i)) for i in range(4)]
    resolve(store.engine, ids[1], by="ana", notes="fixed", now=T0)
    period = recent_errors(store.engine, since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=3))
    assert [e.id for e in period] == [ids[2], ids[1]]  # half-open: T0 + 3 h is out
    assert [e.id for e in recent_errors(store.engine, resolved=True)] == [ids[1]]
    assert [e.id for e in recent_errors(store.engine, resolved=False)] == [ids[3], ids[2], ids[0]]
    assert recent_errors(store.engine, resolved=False) == recent_errors(store.engine, unresolved_only=True)
    assert len(recent_errors(store.engine, resolved=None)) == 4


def test_results_and_history_page_by_their_keys(store: SqlStore, people: list[int]) -> None:
    a, b, c, d = people
    day = date(2026, 3, 2)
    for i, who in enumerate((d, b, a, c)):  # written out of customer order
        result(store, who, day, "ERROR" if i == 1 else "PASS", "TIMEOUT" if i == 1 else None)
    first = run_results(store.engine, 1, limit=2)
    assert [r.customer_id for r in first] == [a, b]
    after = run_results(store.engine, 1, limit=2, after_customer_id=first[-1].customer_id)
    assert [r.customer_id for r in after] == [c, d]
    assert run_results(store.engine, 1, after_customer_id=d) == []
    assert [r.customer_id for r in run_results(store.engine, 1, result="PASS", after_customer_id=a)] == [c, d]
    for back in range(1, 5):
        result(store, a, day - timedelta(days=back), "FAIL", run_id=1 + back)
    newest = customer_history(store.engine, a, limit=2)
    assert [h.business_date for h in newest] == [day, day - timedelta(days=1)]
    older = customer_history(store.engine, a, limit=2, before_date=newest[-1].business_date)
    assert [h.business_date for h in older] == [day - timedelta(days=2), day - timedelta(days=3)]
    last = customer_history(store.engine, a, limit=2, before_date=older[-1].business_date)
    assert [h.business_date for h in last] == [day - timedelta(days=4)]


def test_resolve_refusals_say_which(store: SqlStore, people: list[int]) -> None:
    err = log_error(store, people[0], "TIMEOUT", T0)
    with pytest.raises(UnknownError) as unknown:
        resolve(store.engine, 999, by="ana", notes="x", now=T0)
    assert isinstance(unknown.value, NotFound) and isinstance(unknown.value, ResolveError)
    resolve(store.engine, err, by="ana", notes="x", now=T0)
    with pytest.raises(AlreadyResolved) as twice:
        resolve(store.engine, err, by="bob", notes="y", now=T0)
    assert isinstance(twice.value, StateConflict) and isinstance(twice.value, ResolveError)
    with pytest.raises(ResolveError) as blank:
        resolve(store.engine, err, by="bob", notes=" ", now=T0)
    assert not isinstance(blank.value, NotFound | StateConflict)
    other = log_error(store, people[0], "TIMEOUT", T0)
    with pytest.raises(ResolveError, match="NUL"):  # PostgreSQL cannot store it
        resolve(store.engine, other, by="ana", notes="fixed\x00", now=T0)
    row = get_error(store.engine, other)
    assert row is not None and not row.resolved
