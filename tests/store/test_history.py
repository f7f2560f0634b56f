"""A customer's execution history on each store: order, pages, filters, zones, masking, exports,
retention.

Rows are written with ``tests/historytest.py`` at exact instants (ties included); the PDF is
read back as a person would, rendered by ``pdftoppm`` and its text taken by ``pdftotext``.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

import historytest as h
from duly.audit.schema import audit_events
from duly.clock import ManualClock
from duly.config.history import DEJAVU_SANS
from duly.engine.store.sql import SqlStore
from duly.operations.errors import InvalidRequest, NotFound
from duly.operations.execution.models import payment_attempts
from duly.operations.history.export import CSV_COLUMNS, csv_chunks, neutralise
from duly.operations.history.models import HistoryFilter
from duly.operations.history.retention import prune_history
from duly.operations.history.service import count, customer_info, entries, history, local_range
from duly.operations.history.statement import Statement, StatementStyle, render_statement
from duly.operations.transfers.models import scheduled_transfers

T0 = h.T0


def ids(store: SqlStore, flt: HistoryFilter, limit: int = 1000) -> list[str]:
    return [e.id for e in history(store.engine, flt, limit=limit).entries]


def all_pages(store: SqlStore, flt: HistoryFilter, limit: int) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        page = history(store.engine, flt, limit=limit, cursor=cursor)
        seen += [e.id for e in page.entries]
        cursor = page.next_cursor
        if cursor is None:
            return seen


@pytest.fixture
def mixed(store: SqlStore) -> dict[str, int]:
    """One customer with every kind, several at the same instant; another customer beside."""
    cid = h.customer(store.engine, "ann", name="Ann", timezone="Europe/Berlin")
    other = h.customer(store.engine, "bob")
    pay = h.payment(store.engine, cid)
    tie = T0 + timedelta(days=2)
    made = {
        "t_old": h.transfer(store.engine, cid, T0, memo="rent"),
        "t_tie1": h.transfer(store.engine, cid, tie, amount_minor=2500),
        "t_tie2": h.transfer(
            store.engine,
            cid,
            tie,
            amount_minor=99_999,
            status="failed",
            error_code="INSUFFICIENT_FUNDS",
            attempts=2,
        ),
        "o_tie": h.occurrence(store.engine, pay, cid, tie),
        "o_new": h.occurrence(
            store.engine, pay, cid, T0 + timedelta(days=5), status="scheduled", attempts=0
        ),
        "b_tie": h.check(store.engine, cid, tie, result="ERROR", error_code="TIMEOUT"),
        "b_old": h.check(store.engine, cid, T0 - timedelta(days=1), result="FAIL"),
        "other": h.transfer(store.engine, other, tie),
    }
    made["r_tie"] = h.reminder(store.engine, cid, made["t_old"], tie)
    made["cid"], made["other_cid"], made["pay"] = cid, other, pay
    return made


def test_newest_first_ties_by_kind_then_id(store: SqlStore, mixed: dict[str, int]) -> None:
    got = ids(store, HistoryFilter(customer_id=mixed["cid"]))
    assert got == [
        f"recurring:{mixed['o_new']}",
        # four kinds at one instant: balance check, reminder, recurring, then transfers by id
        f"balance_check:{mixed['b_tie']}",
        f"reminder:{mixed['r_tie']}",
        f"recurring:{mixed['o_tie']}",
        f"transfer:{mixed['t_tie2']}",
        f"transfer:{mixed['t_tie1']}",
        f"transfer:{mixed['t_old']}",
        f"balance_check:{mixed['b_old']}",
    ]
    assert f"transfer:{mixed['other']}" not in got
    assert count(store.engine, HistoryFilter(customer_id=mixed["cid"])) == len(got)


@pytest.mark.parametrize("limit", [1, 2, 3, 5])
def test_pages_cover_everything_once_across_ties(
    store: SqlStore, mixed: dict[str, int], limit: int
) -> None:
    flt = HistoryFilter(customer_id=mixed["cid"])
    assert all_pages(store, flt, limit) == ids(store, flt)
    assert [e.id for e in entries(store.engine, flt, chunk=limit)] == ids(store, flt)


@pytest.mark.parametrize("limit", [3, 5])
def test_inserts_during_paging_neither_repeat_nor_skip(
    store: SqlStore, mixed: dict[str, int], limit: int
) -> None:
    cid = mixed["cid"]
    flt = HistoryFilter(customer_id=cid)
    before = ids(store, flt)
    first = history(store.engine, flt, limit=limit)
    tie = T0 + timedelta(days=2)
    # newer than the first page; at the tie instant (a transfer with a higher id, so it sorts
    # before the tie's transfers already shown); older than everything
    newest = h.transfer(store.engine, cid, T0 + timedelta(days=30))
    at_tie = h.transfer(store.engine, cid, tie)
    oldest = h.transfer(store.engine, cid, T0 - timedelta(days=30))
    seen = [e.id for e in first.entries]
    cursor = first.next_cursor
    while cursor is not None:
        page = history(store.engine, flt, limit=limit, cursor=cursor)
        seen += [e.id for e in page.entries]
        cursor = page.next_cursor
    assert len(seen) == len(set(seen))
    assert [i for i in seen if i in before] == before  # none skipped, order kept
    assert f"transfer:{newest}" not in seen and seen[-1] == f"transfer:{oldest}"
    # the first page of 3 ends at the reminder: the tie's new transfer is still ahead;
    # the page of 5 ended inside the tie's transfers, past where the new one sorts
    assert (f"transfer:{at_tie}" in seen) == (limit == 3)
    assert ids(store, flt)[:3] == [f"transfer:{newest}", *before[:2]]


def test_filters(store: SqlStore, mixed: dict[str, int]) -> None:
    cid = mixed["cid"]
    base = {"customer_id": cid}
    assert ids(store, HistoryFilter(**base, kinds=("balance_check",))) == [
        f"balance_check:{mixed['b_tie']}", f"balance_check:{mixed['b_old']}"]  # fmt: skip
    assert ids(store, HistoryFilter(**base, statuses=("failed", "below_minimum"))) == [
        f"transfer:{mixed['t_tie2']}", f"balance_check:{mixed['b_old']}"]  # fmt: skip
    # the customer's days in Berlin: 2 March 2026 09:00 UTC is 10:00 there
    since, until = local_range("Europe/Berlin", date(2026, 3, 2), date(2026, 3, 2))
    assert ids(store, HistoryFilter(**base, since=since, until=until)) == [
        f"transfer:{mixed['t_old']}"]  # fmt: skip
    by_account = ids(store, HistoryFilter(**base, account_id="DE-GYM-0000077"))
    assert by_account == [f"recurring:{mixed['o_new']}", f"recurring:{mixed['o_tie']}"]
    # amounts in the currency's unit; balance checks have none, so an amount bound drops them
    between = ids(store, HistoryFilter(**base, amount_min=Decimal("25"), amount_max=Decimal("40")))
    assert between == [f"recurring:{mixed['o_new']}", f"recurring:{mixed['o_tie']}",
                       f"transfer:{mixed['t_tie1']}"]  # fmt: skip
    assert ids(store, HistoryFilter(**base, amount_min=Decimal("999.99"))) == [
        f"transfer:{mixed['t_tie2']}"]  # fmt: skip
    assert ids(store, HistoryFilter(**base, amount_min=Decimal("999.991"))) == []
    assert ids(store, HistoryFilter(**base, currency="JPY")) == []
    # the reminder carries its transfer's amount and accounts
    assert f"reminder:{mixed['r_tie']}" in ids(
        store, HistoryFilter(**base, amount_max=Decimal("10"))
    )


def test_yen_amounts_compare_in_whole_units(store: SqlStore) -> None:
    cid = h.customer(store.engine, "kenji", timezone="Asia/Tokyo")
    yen = h.transfer(store.engine, cid, T0, amount_minor=5000, currency="JPY")
    h.transfer(store.engine, cid, T0, amount_minor=5000, currency="EUR")  # 50.00 EUR
    got = ids(store, HistoryFilter(customer_id=cid, amount_min=Decimal("1000")))
    assert got == [f"transfer:{yen}"]
    (entry,) = history(store.engine, HistoryFilter(customer_id=cid, currency="JPY")).entries
    assert entry.amount == Decimal("5000") and entry.currency == "JPY"


def test_times_in_the_customers_zone_with_offset(store: SqlStore) -> None:
    cid = h.customer(store.engine, "nyc", timezone="America/New_York")
    h.transfer(store.engine, cid, datetime(2026, 3, 6, 14, 0, tzinfo=UTC))  # EST, -05:00
    h.transfer(store.engine, cid, datetime(2026, 3, 9, 13, 0, tzinfo=UTC))  # EDT, -04:00
    got = history(store.engine, HistoryFilter(customer_id=cid)).entries
    assert [e.scheduled_at.isoformat() for e in got] == [
        "2026-03-09T09:00:00-04:00", "2026-03-06T09:00:00-05:00"]  # fmt: skip
    assert got[0].finished_at is not None and got[0].finished_at.utcoffset() == timedelta(hours=-4)


def test_failures_carry_the_catalogues_reason_and_action(
    store: SqlStore, mixed: dict[str, int]
) -> None:
    by_id = {
        e.id: e for e in history(store.engine, HistoryFilter(customer_id=mixed["cid"])).entries
    }
    failed = by_id[f"transfer:{mixed['t_tie2']}"]
    assert failed.failure_code == "INSUFFICIENT_FUNDS" and failed.attempts == 2
    assert failed.failure_reason == "The account did not have enough available funds."
    assert failed.suggested_action and failed.suggested_action.startswith("Add funds")
    assert failed.started_at is not None and failed.finished_at is not None
    assert failed.finished_at - failed.started_at == timedelta(hours=6, seconds=1)
    check = by_id[f"balance_check:{mixed['b_tie']}"]
    assert check.status == "error" and check.failure_code == "TIMEOUT" and check.amount is None
    assert check.run_id == 7
    ok = by_id[f"transfer:{mixed['t_tie1']}"]
    assert ok.failure_code is None and ok.failure_reason is None and ok.suggested_action is None
    sent = by_id[f"reminder:{mixed['r_tie']}"]
    assert sent.status == "sent" and sent.occurrence == "1d before, email"
    assert sent.finished_at is not None and sent.description == "rent"


def test_accounts_are_masked_everywhere(store: SqlStore, mixed: dict[str, int]) -> None:
    flt = HistoryFilter(customer_id=mixed["cid"])
    found = history(store.engine, flt).entries
    assert {e.counterparty for e in found} - {None} == {"****0042", "****0077"}
    assert {e.from_account for e in found} - {None} == {"****0001"}
    text = "".join(csv_chunks(entries(store.engine, flt))) + repr(found)
    for number in ("DE-OWN-000001", "DE-PAYEE-00042", "DE-GYM-0000077"):
        assert number not in text


def test_csv_parses_back_with_header_decimals_and_neutralised_formulas(store: SqlStore) -> None:
    cid = h.customer(store.engine, "eve", timezone="Europe/Paris")
    memos = ["=HYPERLINK(\"http://x\")", "+1+1", "-2", "@SUM(A1)", "\tx", "\rcarriage",
             'quote " and, comma', "résumé ünïcode", "plain"]  # fmt: skip
    for k, memo in enumerate(memos):
        h.transfer(store.engine, cid, T0 + timedelta(hours=k), memo=memo, amount_minor=100_050)
    raw = "".join(csv_chunks(entries(store.engine, HistoryFilter(customer_id=cid))))
    assert raw.endswith("\r\n") and raw.count("\r\n") >= len(memos) + 1
    rows = list(csv.reader(io.StringIO(raw, newline="")))
    assert tuple(rows[0]) == CSV_COLUMNS
    body = [dict(zip(CSV_COLUMNS, r, strict=True)) for r in rows[1:]]
    assert [r["description"] for r in body] == [neutralise(m) for m in reversed(memos)]
    assert [r["description"] for r in body][-6:] == [
        "'\rcarriage", "'\tx", "'@SUM(A1)", "'-2", "'+1+1", "'=HYPERLINK(\"http://x\")"]  # fmt: skip
    assert {r["amount"] for r in body} == {"1000.50"} and {r["currency"] for r in body} == {"EUR"}
    assert body[-1]["scheduled_at"] == "2026-03-02T10:00:00+01:00"
    assert not any(cell.startswith(("=", "+", "-", "@")) for r in rows[1:] for cell in r)


def test_empty_history_and_unknown_customer(store: SqlStore) -> None:
    cid = h.customer(store.engine, "new")
    flt = HistoryFilter(customer_id=cid)
    assert history(store.engine, flt).entries == () and count(store.engine, flt) == 0
    assert list(csv.reader(io.StringIO("".join(csv_chunks(entries(store.engine, flt)))))) == [
        list(CSV_COLUMNS)]  # fmt: skip
    with pytest.raises(NotFound):
        history(store.engine, HistoryFilter(customer_id=cid + 1000))
    with pytest.raises(NotFound):
        list(entries(store.engine, HistoryFilter(customer_id=cid + 1000)))


@pytest.mark.parametrize(
    ("bad", "cursor"),
    [
        ({"kinds": ("wire",)}, None),
        ({"kinds": ()}, None),
        ({"statuses": ("lost",)}, None),
        ({"statuses": ("passed",), "kinds": ("transfer",)}, None),
        ({"since": T0, "until": T0}, None),
        ({"amount_min": Decimal("-1")}, None),
        ({"amount_min": Decimal("5"), "amount_max": Decimal("4")}, None),
        ({"amount_max": Decimal("NaN")}, None),
        ({"currency": "XXX"}, None),
        ({}, "not-a-cursor"),
        ({}, "WyIyMDI2LTAxLTAxVDAwOjAwOjAwIiwwLDFd"),  # a naive instant
    ],
)
def test_bad_input_is_refused(store: SqlStore, bad: dict[str, object], cursor: str | None) -> None:
    cid = h.customer(store.engine, "zed")
    with pytest.raises(InvalidRequest):
        history(store.engine, HistoryFilter(customer_id=cid, **bad), cursor=cursor)  # type: ignore[arg-type]


def test_retention_prunes_old_finished_history_and_audits_it(store: SqlStore) -> None:
    cid = h.customer(store.engine, "old")
    eight_years = T0 - timedelta(days=8 * 365)
    old_done = h.transfer(store.engine, cid, eight_years, attempts=2, status="failed",
                          error_code="ACCOUNT_CLOSED")  # fmt: skip
    old_pending = h.transfer(store.engine, cid, eight_years, status="scheduled", attempts=0)
    recent = h.transfer(store.engine, cid, T0)
    pay = h.payment(store.engine, cid)
    old_occ = h.occurrence(store.engine, pay, cid, eight_years)
    h.reminder(store.engine, cid, recent, eight_years)
    h.check(store.engine, cid, eight_years)
    with store.engine.connect() as conn:
        events_before = conn.execute(select(func.count()).select_from(audit_events)).scalar_one()
    clock = ManualClock(T0)
    report = prune_history(store.engine, T0 - timedelta(days=2557), clock, batch=1)
    assert report.deleted == {"transfer": 1, "recurring_occurrence": 1, "reminder": 1,
                              "balance_check_result": 1}  # fmt: skip
    left = ids(store, HistoryFilter(customer_id=cid))
    assert left == [f"transfer:{recent}", f"transfer:{old_pending}"]
    assert f"recurring:{old_occ}" not in left
    with store.engine.connect() as conn:
        attempts = conn.execute(
            select(func.count()).select_from(payment_attempts).where(
                payment_attempts.c.ref_id == old_done, payment_attempts.c.kind == "transfer")
        ).scalar_one()  # fmt: skip
        assert attempts == 0
        assert conn.execute(select(scheduled_transfers.c.id).where(
            scheduled_transfers.c.id == old_done)).first() is None  # fmt: skip
        events = conn.execute(
            select(
                audit_events.c.action, audit_events.c.object_id, audit_events.c.details
            ).order_by(audit_events.c.id)
        ).all()[events_before:]
    assert [(e.action, e.object_id) for e in events] == [
        ("retention.prune", "transfer"), ("retention.prune", "recurring_occurrence"),
        ("retention.prune", "reminder"), ("retention.prune", "balance_check_result")]  # fmt: skip
    assert '"deleted":1' in events[0].details.replace(" ", "")
    again = prune_history(store.engine, T0 - timedelta(days=2557), clock)
    assert set(again.deleted.values()) == {0}


# -- the PDF statement, read back as a person reads it -----------------------------------------

needs_poppler = pytest.mark.skipif(
    shutil.which("pdftotext") is None or shutil.which("pdftoppm") is None,
    reason="poppler-utils (pdftotext, pdftoppm) is not installed; .ci/run installs it",
)


def pdf_text(pdf: bytes, tmp_path: Path) -> tuple[str, list[Path]]:
    path = tmp_path / "statement.pdf"
    path.write_bytes(pdf)
    subprocess.run(["pdftoppm", "-png", "-r", "40", str(path), str(tmp_path / "page")], check=True)
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], check=True,
                          capture_output=True, text=True).stdout  # fmt: skip
    return text, sorted(tmp_path.glob("page*.png"))


@needs_poppler
def test_pdf_statement_shows_rows_totals_and_page_numbers(store: SqlStore, tmp_path: Path) -> None:
    cid = h.customer(
        store.engine, "zoe-1", name="Zoë Ångström-Müller Łukasz", timezone="Europe/Berlin"
    )
    for k in range(70):  # enough for three pages
        h.transfer(store.engine, cid, T0 + timedelta(hours=k), amount_minor=1000 + k,
                   memo=f"invoice {k:03d}")  # fmt: skip
    h.transfer(store.engine, cid, T0 - timedelta(days=1), amount_minor=5_000, status="failed",
               error_code="INSUFFICIENT_FUNDS", memo="café rent", attempts=2)  # fmt: skip
    h.transfer(store.engine, cid, T0 - timedelta(days=2), amount_minor=250_000, currency="GBP",
               memo="pounds")  # fmt: skip
    h.check(store.engine, cid, T0 - timedelta(days=3), result="FAIL")
    who = customer_info(store.engine, cid)
    generated = datetime(2026, 4, 1, 8, 30, tzinfo=UTC).astimezone(h_zone("Europe/Berlin"))
    pdf = render_statement(
        Statement(who, date(2026, 2, 1), date(2026, 3, 31), generated),
        entries(store.engine, HistoryFilter(customer_id=cid)),
        StatementStyle("Bank Ödön & Söhne", DEJAVU_SANS),
    )
    text, pngs = pdf_text(pdf, tmp_path)
    pages = len(pngs)
    assert pages >= 3 and all(p.stat().st_size > 1000 for p in pngs)
    for n in range(1, pages + 1):
        assert f"page {n} of {pages}" in text
    # every page repeats the heading and the column headings
    assert text.count("Bank Ödön & Söhne") == pages
    assert text.count("Zoë Ångström-Müller Łukasz") == pages
    assert text.count("Counterparty") >= pages - 1
    assert "Period: 2026-02-01 to 2026-03-31" in text
    assert "Generated: 2026-04-01 10:30 CEST (UTC+0200)" in text
    assert "invoice 000" in text and "invoice 069" in text and "café rent" in text
    assert "INSUFFICIENT_FUNDS: The account did not have enough available funds." in text
    assert "2026-03-02 10:00 +0100" in text  # the first invoice, in Berlin time
    # totals per currency and status, and per status
    flat = " ".join(text.split())
    eur_executed = sum(Decimal(1000 + k) for k in range(70)) / 100
    assert f"EUR executed 70 {eur_executed:,f} EUR" in flat
    assert "EUR failed 1 50.00 EUR" in flat and "GBP executed 1 2,500.00 GBP" in flat
    assert "executed 71" in flat and "below minimum 1" in flat and "Totals (73 entries)" in flat


@needs_poppler
def test_pdf_of_an_empty_history(store: SqlStore, tmp_path: Path) -> None:
    cid = h.customer(store.engine, "nobody", name="Nobody")
    who = customer_info(store.engine, cid)
    pdf = render_statement(
        Statement(who, None, None, T0), [], StatementStyle("duly bank", DEJAVU_SANS)
    )
    text, pngs = pdf_text(pdf, tmp_path)
    assert len(pngs) == 1 and "page 1 of 1" in text
    assert "No operations in this period." in text and "Totals (0 entries)" in text
    assert "Period: all records" in text


def h_zone(name: str):  # type: ignore[no-untyped-def]
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)
