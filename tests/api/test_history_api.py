"""``/customers/{id}/history`` (+ ``.csv``, ``.pdf``) over HTTP, on each store: filters, pages,
the customer's zone, channel tokens bound to their customers, and input refused (4xx,
nothing changed)."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

import historytest as h
from apitest import error_of
from duly.auth.roles import Role
from duly.auth.service import TokenService
from duly.clock import SystemClock
from duly.engine.store.sql import SqlStore
from duly.operations.history.export import CSV_COLUMNS
from duly.operations.history.service import STATUSES
from duly.operations.transfers.models import scheduled_transfers

API = "/api/v1"
T0 = h.T0


@pytest.fixture
def ann(store: SqlStore) -> dict[str, int]:
    """Ann (Lisbon) with five transfers, one failed with a formula for a memo; Bob beside her."""
    cid = h.customer(store.engine, "ann", name="Ann Conceição", timezone="Europe/Lisbon")
    made = {"cid": cid, "bob": h.customer(store.engine, "bob")}
    for k in range(4):
        made[f"t{k}"] = h.transfer(store.engine, cid, T0 + timedelta(days=k),
                                   amount_minor=1000 * (k + 1), memo=f"bill {k}")  # fmt: skip
    made["failed"] = h.transfer(store.engine, cid, T0 + timedelta(days=10), status="failed",
                                error_code="ACCOUNT_CLOSED", memo="=cmd|' /C calc'!A0")  # fmt: skip
    h.transfer(store.engine, made["bob"], T0)
    return made


def bound(store: SqlStore, *customers: int, name: str = "web") -> dict[str, str]:
    created = TokenService(store.engine, SystemClock()).create(
        name, Role.CHANNEL, created_by="tests", customers=customers
    )
    return {"Authorization": f"Bearer {created.text}"}


def transfers_count(store: SqlStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(scheduled_transfers)).scalar_one())


async def test_pages_filters_and_the_customers_zone(
    http: httpx.AsyncClient, auth, ann: dict[str, int]
) -> None:
    url = f"{API}/customers/{ann['cid']}/history"
    first = await http.get(url, params={"limit": 2}, headers=auth("auditor"))
    assert first.status_code == 200, first.text
    body = first.json()
    assert [i["id"] for i in body["items"]] == [
        f"transfer:{ann['failed']}",
        f"transfer:{ann['t3']}",
    ]
    failed = body["items"][0]
    assert failed["scheduled_at"] == "2026-03-12T09:00:00+00:00"  # Lisbon is on UTC in March
    assert failed["failure_code"] == "ACCOUNT_CLOSED" and failed["suggested_action"]
    assert failed["counterparty"] == "****0042" and failed["amount"] == "10.00"
    assert failed["links"] == {"run": None}
    seen = [i["id"] for i in body["items"]]
    cursor = body["next_cursor"]
    while cursor:
        more = (await http.get(url, params={"limit": 2, "cursor": cursor},
                               headers=auth("auditor"))).json()  # fmt: skip
        seen += [i["id"] for i in more["items"]]
        cursor = more["next_cursor"]
    assert len(seen) == 5 == len(set(seen))
    narrowed = await http.get(url, headers=auth("operator"), params={
        "kind": "transfer", "status": "executed", "from_date": "2026-03-03",
        "to_date": "2026-03-04", "amount_min": "20.00", "amount_max": "30", "currency": "EUR",
        "account": "DE-PAYEE-00042"})  # fmt: skip
    assert [i["id"] for i in narrowed.json()["items"]] == [
        f"transfer:{ann['t2']}",
        f"transfer:{ann['t1']}",
    ]


async def test_summer_times_carry_the_offset(
    http: httpx.AsyncClient, auth, store: SqlStore
) -> None:
    cid = h.customer(store.engine, "lis", timezone="Europe/Lisbon")
    h.transfer(store.engine, cid, T0 + timedelta(days=120))
    items = (await http.get(f"{API}/customers/{cid}/history", headers=auth("admin"))).json()[
        "items"
    ]
    assert items[0]["scheduled_at"] == "2026-06-30T10:00:00+01:00"
    assert items[0]["finished_at"] == "2026-06-30T10:00:02+01:00"


async def test_channel_tokens_see_only_their_customers(
    http: httpx.AsyncClient, auth, store: SqlStore, ann: dict[str, int]
) -> None:
    mine = bound(store, ann["cid"])
    ok = await http.get(f"{API}/customers/{ann['cid']}/history", headers=mine)
    assert ok.status_code == 200 and len(ok.json()["items"]) == 5
    for suffix in ("history", "history.csv", "history.pdf"):
        other = await http.get(f"{API}/customers/{ann['bob']}/{suffix}", headers=mine)
        assert other.status_code == 403, (suffix, other.text)
        assert "does not act for customer" in error_of(other)["message"]
        unbound = await http.get(f"{API}/customers/{ann['cid']}/{suffix}", headers=auth("channel"))
        assert unbound.status_code == 403
        missing = await http.get(f"{API}/customers/987654/{suffix}", headers=mine)
        assert missing.status_code == 404
    both = bound(store, ann["cid"], ann["bob"], name="web-both")
    assert (
        await http.get(f"{API}/customers/{ann['bob']}/history", headers=both)
    ).status_code == 200


async def test_unknown_and_empty(http: httpx.AsyncClient, auth, store: SqlStore) -> None:
    for role in ("admin", "operator", "auditor"):
        answer = await http.get(f"{API}/customers/987654/history", headers=auth(role))
        assert answer.status_code == 404 and error_of(answer)["code"] == "NOT_FOUND"
    cid = h.customer(store.engine, "empty")
    page = await http.get(f"{API}/customers/{cid}/history", headers=auth("admin"))
    assert page.json() == {"items": [], "next_cursor": None}
    text = (await http.get(f"{API}/customers/{cid}/history.csv", headers=auth("admin"))).text
    assert list(csv.reader(io.StringIO(text))) == [list(CSV_COLUMNS)]


async def test_csv_is_rfc4180_utf8_and_neutralised(
    http: httpx.AsyncClient, auth, ann: dict[str, int]
) -> None:
    answer = await http.get(f"{API}/customers/{ann['cid']}/history.csv", headers=auth("operator"))
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv; charset=utf-8")
    assert f"history-customer-{ann['cid']}.csv" in answer.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(answer.content.decode("utf-8"), newline="")))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 6
    first = dict(zip(CSV_COLUMNS, rows[1], strict=True))
    assert first["description"] == "'=cmd|' /C calc'!A0" and first["amount"] == "10.00"
    assert [r[CSV_COLUMNS.index("amount")] for r in rows[2:]] == [
        "40.00",
        "30.00",
        "20.00",
        "10.00",
    ]


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils not installed")
async def test_pdf_statement(
    http: httpx.AsyncClient, auth, ann: dict[str, int], tmp_path: Path
) -> None:
    answer = await http.get(f"{API}/customers/{ann['cid']}/history.pdf",
                            params={"from_date": "2026-03-01", "to_date": "2026-03-31"},
                            headers=auth("auditor"))  # fmt: skip
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/pdf"
    assert answer.content.startswith(b"%PDF")
    path = tmp_path / "s.pdf"
    path.write_bytes(answer.content)
    text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True,  # noqa: ASYNC221
                          check=True).stdout  # fmt: skip
    assert "Ann Conceição" in text and "duly bank" in text and "page 1 of 1" in text
    assert "2026-03-01 to 2026-03-31" in text and "bill 3" in text


def test_every_status_can_be_asked_for() -> None:
    from typing import get_args

    from duly.api.routers.history import Status

    assert set(get_args(Status)) == {s for kind in STATUSES.values() for s in kind}


@pytest.mark.parametrize(
    "params",
    [
        {"kind": "wire"},
        {"status": "lost"},
        {"status": "passed", "kind": "transfer"},
        {"from_date": "2026-03-05", "to_date": "2026-03-01"},
        {"from_date": "yesterday"},
        {"amount_min": "-1"},
        {"amount_min": "1e3"},
        {"amount_min": "5", "amount_max": "4"},
        {"currency": "eur"},
        {"currency": "XXX"},
        {"cursor": "garbage"},
        {"limit": "0"},
        {"limit": "1001"},
        {"account": "a\x00b"},
    ],
)
async def test_bad_input_is_4xx_and_changes_nothing(
    http: httpx.AsyncClient, auth, store: SqlStore, ann: dict[str, int], params: dict[str, str]
) -> None:
    before = transfers_count(store)
    for suffix in ("history", "history.csv", "history.pdf"):
        if suffix != "history" and set(params) & {"cursor", "limit"}:
            continue
        answer = await http.get(f"{API}/customers/{ann['cid']}/{suffix}", params=params,
                                headers=auth("admin"))  # fmt: skip
        assert 400 <= answer.status_code < 500, (suffix, params, answer.text)
        error_of(answer)
    assert transfers_count(store) == before


async def test_tokens_bind_channel_customers_only(
    http: httpx.AsyncClient, auth, ann: dict[str, int]
) -> None:
    made = await http.post(f"{API}/tokens", headers=auth("admin"),
                           json={"name": "web-1", "role": "channel", "customers": [ann["cid"]]})  # fmt: skip
    assert made.status_code == 201 and made.json()["customers"] == [ann["cid"]]
    token = {"Authorization": f"Bearer {made.json()['token']}"}
    assert (
        await http.get(f"{API}/customers/{ann['cid']}/history", headers=token)
    ).status_code == 200
    staff = await http.post(f"{API}/tokens", headers=auth("admin"),
                            json={"name": "ops-1", "role": "operator", "customers": [ann["cid"]]})  # fmt: skip
    assert staff.status_code == 422
    nobody = await http.post(f"{API}/tokens", headers=auth("admin"),
                             json={"name": "web-2", "role": "channel", "customers": [987654]})  # fmt: skip
    assert nobody.status_code == 422 and "987654" in error_of(nobody)["message"]
    listed = (await http.get(f"{API}/tokens", headers=auth("admin"))).json()["items"]
    assert {t["name"] for t in listed} >= {"web-1"} and "web-2" not in {t["name"] for t in listed}
