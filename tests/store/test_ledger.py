"""The built-in ledger on SQLite and PostgreSQL (finance-rules.md §3, checklist 10–11, 16–19, 30)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import delete, select, text, update

from duly.banking.catalog import CATALOG, error_code_get, error_code_list
from duly.banking.customers import Customers, NewAccount, NewCustomer
from duly.banking.errors import BankingError
from duly.banking.ledger import LedgerBank, funding_account_id
from duly.banking.schema import accounts, error_codes, ledger_transfers
from duly.clock import ManualClock
from duly.engine.store.sql import SqlStore


@pytest.fixture
def bank(store: SqlStore, clock: ManualClock) -> LedgerBank:
    people = Customers(store.engine, clock)
    alice = people.add(
        NewCustomer("alice", timezone="Europe/London", name="Alice", email="a@x.test")
    )
    people.open_account(NewAccount("ACC-ALICE-0001", "USD", alice.id))
    people.open_account(NewAccount("ACC-BOB-0002", "USD", None))
    people.open_account(NewAccount("ACC-OVER-0003", "USD", None, overdraft_limit_minor=5_000))
    people.open_account(NewAccount("ACC-EURO-0004", "EUR", None))
    ledger = LedgerBank(store.engine, clock)
    ledger.fund("ACC-ALICE-0001", 10_000, "USD", "fund-alice")
    return ledger


def code_of(call: object) -> str:
    assert callable(call)
    with pytest.raises(BankingError) as info:
        call()
    return info.value.code


def test_a_transfer_moves_money_once_per_key(bank: LedgerBank) -> None:
    first = bank.transfer("ACC-ALICE-0001", "ACC-BOB-0002", 2_500, "USD", "t1")
    again = bank.transfer("ACC-ALICE-0001", "ACC-BOB-0002", 2_500, "USD", "t1")
    assert (first.exists, again.exists) == (False, True)
    assert first.id == again.id == "t1" and first.status == "posted"
    alice, bob = bank.get_balance("ACC-ALICE-0001"), bank.get_balance("ACC-BOB-0002")
    assert (alice.posted_minor, bob.posted_minor) == (7_500, 2_500)
    assert str(alice.available) == "75.00"
    assert bank.get_transfer("t1") == again
    assert bank.get_transfer("nope") is None
    assert bank.check().ok


def test_11_same_key_other_fields_is_refused_alerted_and_posts_nothing(
    bank: LedgerBank, store: SqlStore
) -> None:
    bank.transfer("ACC-ALICE-0001", "ACC-BOB-0002", 2_500, "USD", "t1")
    with pytest.raises(BankingError) as info:
        bank.transfer("ACC-ALICE-0001", "ACC-BOB-0002", 9_999, "USD", "t1")
    assert info.value.code == "IDEMPOTENCY_CONFLICT" and not info.value.transient
    assert "amount" in info.value.message
    assert code_of(
        lambda: bank.transfer("ACC-ALICE-0001", "ACC-OVER-0003", 2_500, "USD", "t1")
    ) == ("IDEMPOTENCY_CONFLICT")
    assert bank.get_balance("ACC-ALICE-0001").posted_minor == 7_500
    (alert,) = store.alert_list()
    assert alert.rule == "ledger.idempotency_conflict" and alert.severity == "critical"
    assert alert.occurrences == 2 and "t1" in alert.title


def test_no_debit_beyond_credits_and_overdraft(bank: LedgerBank) -> None:
    assert code_of(lambda: bank.transfer("ACC-ALICE-0001", "ACC-BOB-0002", 10_001, "USD", "x")) == (
        "INSUFFICIENT_FUNDS"
    )
    bank.transfer("ACC-ALICE-0001", "ACC-BOB-0002", 10_000, "USD", "all")  # exactly the credits
    bank.transfer("ACC-OVER-0003", "ACC-BOB-0002", 5_000, "USD", "od")  # exactly the overdraft
    assert code_of(lambda: bank.transfer("ACC-OVER-0003", "ACC-BOB-0002", 1, "USD", "od2")) == (
        "INSUFFICIENT_FUNDS"
    )
    assert bank.get_balance("ACC-OVER-0003").posted_minor == -5_000
    assert bank.get_transfer("x") is None and bank.check().ok


def test_pending_reservations_count_against_funds(bank: LedgerBank) -> None:
    bank.reserve("ACC-ALICE-0001", "ACC-BOB-0002", 6_000, "USD", "p1")
    bal = bank.get_balance("ACC-ALICE-0001")
    assert (bal.posted_minor, bal.pending_debits_minor, bal.available_minor) == (
        10_000,
        6_000,
        4_000,
    )
    assert code_of(lambda: bank.transfer("ACC-ALICE-0001", "ACC-BOB-0002", 4_001, "USD", "x")) == (
        "INSUFFICIENT_FUNDS"
    )
    assert code_of(lambda: bank.reserve("ACC-ALICE-0001", "ACC-BOB-0002", 4_001, "USD", "p2")) == (
        "INSUFFICIENT_FUNDS"
    )
    assert bank.check().ok


def test_19_a_pending_transfer_ends_exactly_once(bank: LedgerBank, clock: ManualClock) -> None:
    bank.reserve("ACC-ALICE-0001", "ACC-BOB-0002", 6_000, "USD", "p1")
    posted = bank.post_pending("p1", "p1-post", 4_000)  # partial: the rest is released
    assert posted.status == "posted" and posted.amount_minor == 4_000
    assert bank.post_pending("p1", "p1-post", 4_000).exists
    assert code_of(lambda: bank.void_pending("p1", "p1-void")) == "VALIDATION_ERROR"
    assert code_of(lambda: bank.post_pending("p1", "p1-post-2")) == "VALIDATION_ERROR"
    alice = bank.get_balance("ACC-ALICE-0001")
    assert (alice.posted_minor, alice.pending_debits_minor) == (6_000, 0)

    bank.reserve("ACC-ALICE-0001", "ACC-BOB-0002", 1_000, "USD", "p2")
    assert bank.void_pending("p2", "p2-void").status == "voided"
    assert code_of(lambda: bank.post_pending("p2", "p2-post")) == "VALIDATION_ERROR"

    bank.reserve("ACC-ALICE-0001", "ACC-BOB-0002", 1_000, "USD", "p3", timeout=timedelta(minutes=5))
    assert bank.expire_pending() == 0
    clock.advance(timedelta(minutes=5))
    assert code_of(lambda: bank.post_pending("p3", "p3-post")) == "VALIDATION_ERROR"
    assert bank.expire_pending() == 1 and bank.expire_pending() == 0
    assert bank.get_transfer("p3:expired") is not None
    assert code_of(lambda: bank.post_pending("p3", "p3-post")) == "VALIDATION_ERROR"
    assert code_of(lambda: bank.post_pending("p1-post", "zz")) == "VALIDATION_ERROR"  # not pending
    assert code_of(lambda: bank.post_pending("p1", "p1-post", 5_000)) == "IDEMPOTENCY_CONFLICT"
    bal = bank.get_balance("ACC-ALICE-0001")
    assert (bal.posted_minor, bal.pending_debits_minor) == (6_000, 0)
    assert bank.check().ok


def test_16_17_sums_balance_and_no_account_overdraws_after_a_mix_of_operations(
    bank: LedgerBank, store: SqlStore
) -> None:
    """Transfers, replays, refusals, reservations posted, voided and expired, reversals:
    after every step Σ debits = Σ credits (posted and pending), and no account beyond its
    overdraft (the hypothesis machine in test_ledger_properties.py does the same at random)."""

    def invariants() -> None:
        check = bank.check()
        assert check.ok, check.problems
        assert check.debits_posted == check.credits_posted  # 16
        assert check.debits_pending == check.credits_pending
        with store.engine.connect() as conn:
            rows = conn.execute(select(accounts)).all()
        for r in rows:  # 17
            if r.overdraft_limit_minor is not None:
                assert r.debits_posted + r.debits_pending <= r.credits_posted + r.overdraft_limit_minor

    steps = [
        lambda: bank.transfer("ACC-ALICE-0001", "ACC-BOB-0002", 3_000, "USD", "m1"),
        lambda: bank.transfer("ACC-ALICE-0001", "ACC-BOB-0002", 3_000, "USD", "m1"),  # a retry
        lambda: bank.transfer("ACC-ALICE-0001", "ACC-BOB-0002", 9_000, "USD", "m2"),  # refused
        lambda: bank.reserve("ACC-ALICE-0001", "ACC-OVER-0003", 6_000, "USD", "r1"),
        lambda: bank.transfer("ACC-ALICE-0001", "ACC-BOB-0002", 2_000, "USD", "m3"),  # pending counts
        lambda: bank.post_pending("r1", "r1-post", 5_000),
        lambda: bank.transfer("ACC-OVER-0003", "ACC-BOB-0002", 9_000, "USD", "m4"),  # into overdraft
        lambda: bank.transfer("ACC-OVER-0003", "ACC-BOB-0002", 2_000, "USD", "m5"),  # beyond it
        lambda: bank.reserve("ACC-BOB-0002", "ACC-ALICE-0001", 1_000, "USD", "r2"),
        lambda: bank.void_pending("r2", "r2-void"),
        lambda: bank.reverse("m4", "m4-back", 4_000),
        lambda: bank.reverse("m4", "m4-back-2", 6_000),  # more than is left of m4
        lambda: bank.reserve(
            "ACC-BOB-0002", "ACC-OVER-0003", 500, "USD", "r3", timeout=timedelta(seconds=0)
        ),
        lambda: bank.expire_pending(),
    ]
    outcomes = []
    for step in steps:
        try:
            step()
            outcomes.append("ok")
        except BankingError as exc:
            outcomes.append(exc.code)
        invariants()
    assert outcomes.count("INSUFFICIENT_FUNDS") == 3
    assert outcomes[11] != "ok"  # a reversal never exceeds its original
    over = bank.get_balance("ACC-OVER-0003")
    assert over.posted_minor == 5_000 - 9_000 + 4_000


def test_18_corrections_are_reversing_transfers(bank: LedgerBank, store: SqlStore) -> None:
    bank.transfer("ACC-ALICE-0001", "ACC-BOB-0002", 3_000, "USD", "t1")
    with store.engine.connect() as conn:
        before = conn.execute(select(ledger_transfers).where(ledger_transfers.c.id == "t1")).one()
    part = bank.reverse("t1", "t1-rev-1", 1_000)
    assert (part.debit_account_id, part.credit_account_id) == ("ACC-BOB-0002", "ACC-ALICE-0001")
    assert bank.reverse("t1", "t1-rev-1", 1_000).exists
    rest = bank.reverse("t1", "t1-rev-2")
    assert rest.amount_minor == 2_000
    assert code_of(lambda: bank.reverse("t1", "t1-rev-3", 1)) == "VALIDATION_ERROR"
    assert code_of(lambda: bank.reverse("missing", "r")) == "MISSING_DATA"
    with store.engine.connect() as conn:
        after = conn.execute(select(ledger_transfers).where(ledger_transfers.c.id == "t1")).one()
        refs = conn.execute(
            select(ledger_transfers.c.id).where(ledger_transfers.c.reverses_id == "t1")
        ).scalars()
        assert sorted(refs) == ["t1-rev-1", "t1-rev-2"]
    assert before == after  # the original is never touched
    assert bank.get_balance("ACC-ALICE-0001").posted_minor == 10_000
    assert bank.check().ok


def test_a_reversal_cannot_overdraw_the_account_it_debits(bank: LedgerBank) -> None:
    bank.transfer("ACC-ALICE-0001", "ACC-BOB-0002", 3_000, "USD", "t1")
    bank.transfer("ACC-BOB-0002", "ACC-OVER-0003", 3_000, "USD", "t2")  # Bob spends it
    assert code_of(lambda: bank.reverse("t1", "t1-rev")) == "INSUFFICIENT_FUNDS"


def test_closed_unknown_and_invalid(bank: LedgerBank, store: SqlStore, clock: ManualClock) -> None:
    Customers(store.engine, clock).close_account("ACC-BOB-0002")
    assert code_of(lambda: bank.transfer("ACC-ALICE-0001", "ACC-BOB-0002", 1, "USD", "a")) == (
        "ACCOUNT_CLOSED"
    )
    assert code_of(lambda: bank.transfer("ACC-ALICE-0001", "NOPE", 1, "USD", "b")) == "MISSING_DATA"
    assert code_of(lambda: bank.get_balance("NOPE")) == "MISSING_DATA"
    for call in (
        lambda: bank.transfer("ACC-ALICE-0001", "ACC-EURO-0004", 1, "USD", "c"),
        lambda: bank.transfer("ACC-ALICE-0001", "ACC-OVER-0003", 0, "USD", "d"),
        lambda: bank.transfer("ACC-ALICE-0001", "ACC-OVER-0003", -5, "USD", "e"),
        lambda: bank.transfer("ACC-ALICE-0001", "ACC-ALICE-0001", 1, "USD", "f"),
        lambda: bank.transfer("ACC-ALICE-0001", "ACC-OVER-0003", 1, "XXX", "g"),
        lambda: bank.transfer("ACC-ALICE-0001", "ACC-OVER-0003", 1, "USD", ""),
    ):
        assert code_of(call) == "VALIDATION_ERROR"
    assert bank.check().ok


def test_the_database_itself_refuses_an_overdraft(bank: LedgerBank, store: SqlStore) -> None:
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError), store.engine.begin() as conn:
        conn.execute(
            update(accounts)
            .where(accounts.c.id == "ACC-ALICE-0001")
            .values(debits_posted=accounts.c.credits_posted + 1)
        )


def test_a_posting_on_a_callers_transaction_commits_or_rolls_back_with_it(
    bank: LedgerBank, store: SqlStore
) -> None:
    with store.engine.connect() as conn:
        conn.begin()
        bank.transfer("ACC-ALICE-0001", "ACC-BOB-0002", 1_000, "USD", "in-tx", conn=conn)
        with pytest.raises(
            BankingError
        ):  # a refused posting leaves the caller's transaction usable
            bank.transfer("ACC-ALICE-0001", "ACC-BOB-0002", 999_999, "USD", "too-much", conn=conn)
        conn.rollback()
    assert bank.get_transfer("in-tx") is None
    with store.engine.connect() as conn:
        conn.begin()
        bank.transfer("ACC-ALICE-0001", "ACC-BOB-0002", 1_000, "USD", "in-tx", conn=conn)
        conn.commit()
    assert bank.get_balance("ACC-BOB-0002").posted_minor == 1_000


def test_a_conflict_on_a_callers_transaction_alerts_on_it(
    bank: LedgerBank, store: SqlStore
) -> None:
    bank.transfer("ACC-ALICE-0001", "ACC-BOB-0002", 1_000, "USD", "k")
    with store.engine.connect() as conn:
        conn.begin()
        with pytest.raises(BankingError):
            bank.transfer("ACC-ALICE-0001", "ACC-BOB-0002", 2_000, "USD", "k", conn=conn)
        conn.commit()
    assert [a.rule for a in store.alert_list()] == ["ledger.idempotency_conflict"]


@pytest.mark.parametrize("workers", [8])
def test_10_concurrent_replays_of_one_key_post_once(
    bank: LedgerBank, store: SqlStore, workers: int
) -> None:
    outcomes: list[bool] = []
    errors: list[BaseException] = []
    start = threading.Barrier(workers)

    def post(i: int) -> None:
        try:
            start.wait()
            res = bank.transfer("ACC-ALICE-0001", "ACC-BOB-0002", 100, "USD", "same")
            outcomes.append(res.exists)
            bank.transfer("ACC-ALICE-0001", "ACC-BOB-0002", 100, "USD", f"own-{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(outcomes) == [False] + [True] * (workers - 1)
    assert bank.get_balance("ACC-BOB-0002").posted_minor == 100 * (workers + 1)
    assert bank.check().ok


def test_concurrent_transfers_between_the_same_accounts_never_deadlock_or_overdraw(
    bank: LedgerBank,
) -> None:
    bank.fund("ACC-BOB-0002", 10_000, "USD", "fund-bob")
    failures: list[str] = []

    def churn(src: str, dst: str, tag: str) -> None:
        for i in range(25):
            try:
                bank.transfer(src, dst, 700, "USD", f"{tag}-{i}")
            except BankingError as exc:
                failures.append(exc.code)

    threads = [
        threading.Thread(target=churn, args=("ACC-ALICE-0001", "ACC-BOB-0002", "ab")),
        threading.Thread(target=churn, args=("ACC-BOB-0002", "ACC-ALICE-0001", "ba")),
        threading.Thread(target=churn, args=("ACC-ALICE-0001", "ACC-OVER-0003", "ao")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(failures) <= {"INSUFFICIENT_FUNDS"}
    check = bank.check()
    assert check.ok, check.problems
    assert bank.get_balance("ACC-ALICE-0001").posted_minor >= 0


def test_check_reports_a_tampered_ledger(bank: LedgerBank, store: SqlStore) -> None:
    bank.transfer("ACC-ALICE-0001", "ACC-BOB-0002", 1_000, "USD", "t1")
    with store.engine.begin() as conn:
        conn.execute(
            update(accounts).where(accounts.c.id == "ACC-BOB-0002").values(credits_posted=5)
        )
    check = bank.check()
    assert not check.ok
    assert any("Σ debits_posted" in p for p in check.problems)
    assert any("differ from its transfers" in p for p in check.problems)


def test_the_funding_account_has_no_limit(bank: LedgerBank) -> None:
    funding = bank.get_balance(funding_account_id("USD"))
    assert funding.overdraft_limit_minor is None and funding.posted_minor == -10_000


def test_error_codes_table_is_seeded_from_the_catalogue(store: SqlStore) -> None:
    with store.engine.connect() as conn:
        rows = {r.code: r for r in conn.execute(select(error_codes)).all()}
    assert set(rows) == {c.code for c in CATALOG}
    for info in CATALOG:
        row = rows[info.code]
        assert (row.description, row.severity, row.suggested_action, bool(row.transient)) == (
            info.description,
            info.severity,
            info.suggested_action,
            info.transient,
        )


def test_error_codes_are_read_from_the_table_by_code(store: SqlStore) -> None:
    codes = sorted(c.code for c in CATALOG)
    assert [c.code for c in error_code_list(store.engine)] == codes
    first = error_code_list(store.engine, limit=3)
    rest = error_code_list(store.engine, after=first[-1].code)
    assert [c.code for c in first + rest] == codes
    high = error_code_list(store.engine, severity="high")
    assert [c.code for c in high] == sorted(c.code for c in CATALOG if c.severity == "high")
    assert error_code_get(store.engine, "TIMEOUT") == next(c for c in CATALOG if c.code == "TIMEOUT")
    assert error_code_get(store.engine, "NOPE") is None


def test_30_erasing_personal_data_leaves_the_ledger_alone(
    bank: LedgerBank, store: SqlStore, clock: ManualClock
) -> None:
    people = Customers(store.engine, clock)
    alice = people.by_external_id("alice")
    assert alice is not None and alice.name == "Alice"
    bank.transfer("ACC-ALICE-0001", "ACC-BOB-0002", 1_000, "USD", "t1")
    totals = bank.check()
    assert people.erase_pii(alice.id) and not people.erase_pii(alice.id)
    erased = people.get(alice.id)
    assert erased is not None and erased.name is None and erased.email is None
    assert erased.pii_erased_at == clock.now() and erased.tier == "standard"
    after = bank.check()
    assert after.ok and (after.debits_posted, after.transfers) == (
        totals.debits_posted,
        totals.transfers,
    )


def test_customers_and_accounts(store: SqlStore, clock: ManualClock) -> None:
    people = Customers(store.engine, clock)
    prem = people.add(NewCustomer("p1", tier="premium", min_balance_minor=500_000,
                                  min_balance_currency="USD", timezone="America/New_York",
                                  notification_prefs={"sms": True}, phone="+15550100"))  # fmt: skip
    people.add(NewCustomer("s1"))
    assert [c.external_id for c in people.find(tier="premium")] == ["p1"]
    assert [c.external_id for c in people.find(after_id=prem.id)] == ["s1"]
    assert prem.notification_prefs == {"sms": True} and prem.min_balance_minor == 500_000
    for bad in (
        NewCustomer("p1"),
        NewCustomer("x", tier="gold"),
        NewCustomer("y", timezone="Mars/Base"),
        NewCustomer("z", min_balance_minor=5),
    ):
        with pytest.raises(ValueError):
            people.add(bad)
    acct = people.open_account(NewAccount("ACC-P1-0001", "usd", prem.id))
    assert acct.currency == "USD" and acct.masked == "****0001" and acct.status == "open"
    assert [a.id for a in people.accounts_of(prem.id)] == ["ACC-P1-0001"]
    with pytest.raises(ValueError):
        people.open_account(NewAccount("ACC-P1-0001", "USD", prem.id))
    assert people.close_account("ACC-P1-0001").status == "closed"
    with pytest.raises(BankingError):
        people.close_account("NOPE")


def test_store_tables_are_empty_between_tests(store: SqlStore) -> None:
    with store.engine.begin() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM ledger_transfers")).scalar() == 0
        conn.execute(delete(ledger_transfers))


def test_transfer_many_decides_each_request_as_transfer_would_in_order(
    bank: LedgerBank, store: SqlStore
) -> None:
    from duly.banking.port import TransferRequest as R

    bank.transfer("ACC-ALICE-0001", "ACC-BOB-0002", 1_000, "USD", "old")
    requests = [
        R("ACC-ALICE-0001", "ACC-BOB-0002", 6_000, "USD", "b1"),  # leaves 3,000
        R("ACC-ALICE-0001", "ACC-BOB-0002", 4_000, "USD", "b2"),  # too much after b1
        R("ACC-BOB-0002", "ACC-ALICE-0001", 500, "USD", "b3"),  # credits alice
        R("ACC-ALICE-0001", "ACC-BOB-0002", 3_500, "USD", "b4"),  # fits thanks to b3
        R("ACC-ALICE-0001", "ACC-BOB-0002", 1_000, "USD", "old"),  # replay of an old one
        R("ACC-ALICE-0001", "ACC-OVER-0003", 1_000, "USD", "old"),  # conflict with it
        R("ACC-ALICE-0001", "ACC-EURO-0004", 100, "USD", "b5"),  # currency mismatch
        R("ACC-ALICE-0001", "ACC-NONE-9999", 100, "USD", "b6"),  # no such account
        R("ACC-ALICE-0001", "ACC-BOB-0002", 0, "USD", "b7"),  # invalid amount
        R("ACC-OVER-0003", "ACC-BOB-0002", 5_000, "USD", "b8"),  # within the overdraft
        R("ACC-BOB-0002", "ACC-ALICE-0001", 500, "USD", "b3"),  # b3 again, same batch
    ]
    with store.engine.begin() as conn:
        out = bank.transfer_many(requests, conn=conn)
    codes = [r.code if isinstance(r, BankingError) else ("replay" if r.exists else "new")
             for r in out]  # fmt: skip
    assert codes == [
        "new", "INSUFFICIENT_FUNDS", "new", "new", "replay", "IDEMPOTENCY_CONFLICT",
        "VALIDATION_ERROR", "MISSING_DATA", "VALIDATION_ERROR", "new", "replay",
    ]  # fmt: skip
    balances = {a: bank.get_balance(a).posted_minor for a in ("ACC-ALICE-0001", "ACC-BOB-0002")}
    assert balances == {"ACC-ALICE-0001": 10_000 - 1_000 - 6_000 + 500 - 3_500,
                        "ACC-BOB-0002": 1_000 + 6_000 - 500 + 3_500 + 5_000}  # fmt: skip
    assert bank.get_balance("ACC-OVER-0003").posted_minor == -5_000
    got = bank.get_transfer("b4")
    assert got is not None and got.amount_minor == 3_500 and got.created_at is not None
    assert [a.rule for a in store.alert_list()] == ["ledger.idempotency_conflict"]
    assert bank.check().ok


def test_transfer_many_keeps_nothing_when_its_transaction_rolls_back(
    bank: LedgerBank, store: SqlStore
) -> None:
    from duly.banking.port import TransferRequest as R

    conn = store.engine.connect()
    conn.begin()
    out = bank.transfer_many([R("ACC-ALICE-0001", "ACC-BOB-0002", 100, "USD", "rb")], conn=conn)
    assert not isinstance(out[0], BankingError)
    conn.rollback()
    conn.close()
    assert bank.get_transfer("rb") is None
    assert bank.get_balance("ACC-BOB-0002").posted_minor == 0
