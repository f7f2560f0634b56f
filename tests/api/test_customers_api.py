"""``/customers`` and ``/accounts`` over HTTP, on each store: create, read, page, erase,
open and close — the roles that may, the input refused (4xx, nothing written), and no
balance in any answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from apitest import error_of
from duly.api.pagination import encode_cursor
from duly.banking.customers import Customers, NewAccount
from duly.banking.ledger import LedgerBank
from duly.clock import SystemClock
from duly.engine.store.sql import SqlStore

API = "/api/v1"
Auth = Callable[..., dict[str, str]]

PREMIUM: dict[str, Any] = {
    "external_id": "cust-ann",
    "name": "Ann Example",
    "email": "ann@example.com",
    "phone": "+447700900123",
    "timezone": "Europe/London",
    "locale": "en-GB",
    "tier": "premium",
    "min_balance": "5000.00",
    "min_balance_currency": "GBP",
    "notification_prefs": {"channels": ["email", "sms"], "reminder_offsets": ["2d", "2h"]},
}

ACCOUNT_FIELDS = {"id", "masked", "customer_id", "currency", "overdraft_limit", "status",
                  "created_at", "closed_at"}  # fmt: skip


async def add(http: httpx.AsyncClient, auth: Auth, external_id: str, **kw: Any) -> dict[str, Any]:
    answer = await http.post(f"{API}/customers", json={"external_id": external_id, **kw},
                             headers=auth("operator"))  # fmt: skip
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


async def open_account(
    http: httpx.AsyncClient, auth: Auth, number: str, customer_id: int, **kw: Any
) -> httpx.Response:
    body = {"id": number, "customer_id": customer_id, "currency": "GBP", **kw}
    return await http.post(f"{API}/accounts", json=body, headers=auth("admin"))


def customer_count(store: SqlStore) -> int:
    return len(Customers(store.engine, SystemClock()).find(limit=1000))


def account_ids(store: SqlStore) -> list[str]:
    return [a.id for a in Customers(store.engine, SystemClock()).find_accounts(limit=1000)]


# -- customers --------------------------------------------------------------------------


async def test_create_and_read_a_customer(http: httpx.AsyncClient, auth: Auth) -> None:
    created = await http.post(f"{API}/customers", json=PREMIUM, headers=auth("operator"))
    assert created.status_code == 201, created.text
    body = created.json()
    assert created.headers["location"] == f"{API}/customers/{body['id']}"
    assert body["min_balance"] == "5000.00" and body["min_balance_currency"] == "GBP"
    assert body["notification_prefs"] == {"channels": ["email", "sms"],
                                          "reminder_offsets": ["2d", "2h"]}  # fmt: skip
    assert body["name"] == "Ann Example" and body["pii_erased_at"] is None
    for role in ("admin", "operator", "auditor", "channel"):
        got = await http.get(f"{API}/customers/{body['id']}", headers=auth(role))
        assert got.status_code == 200 and got.json() == body


async def test_list_by_tier_external_id_and_page(http: httpx.AsyncClient, auth: Auth) -> None:
    for i in range(5):
        await add(http, auth, f"c-{i}", tier="premium" if i % 2 else "standard")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await http.get(f"{API}/customers", params=params, headers=auth("auditor"))).json()
        seen += [c["external_id"] for c in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"c-{i}" for i in range(5)] and pages == 3
    premium = await http.get(f"{API}/customers", params={"tier": "premium"}, headers=auth("admin"))
    assert [c["external_id"] for c in premium.json()["items"]] == ["c-1", "c-3"]
    one = await http.get(f"{API}/customers", params={"external_id": "c-2"}, headers=auth("admin"))
    assert [c["external_id"] for c in one.json()["items"]] == ["c-2"]
    none = await http.get(f"{API}/customers", params={"external_id": "c-2", "tier": "premium"},
                          headers=auth("admin"))  # fmt: skip
    assert none.json() == {"items": [], "next_cursor": None}


async def test_an_idempotency_key_answers_the_first_response_again(
    http: httpx.AsyncClient, auth: Auth, store: SqlStore
) -> None:
    headers = {**auth("operator"), "Idempotency-Key": "add-ann"}
    first = await http.post(f"{API}/customers", json=PREMIUM, headers=headers)
    again = await http.post(f"{API}/customers", json=PREMIUM, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    other = await http.post(f"{API}/customers", json={**PREMIUM, "name": "Someone Else"},
                            headers=headers)  # fmt: skip
    assert other.status_code == 422 and error_of(other)["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert customer_count(store) == 1


async def test_an_external_id_is_taken_once(
    http: httpx.AsyncClient, auth: Auth, store: SqlStore
) -> None:
    first = await http.post(f"{API}/customers", json=PREMIUM, headers=auth("admin"))
    # the same request again (a retry without a key) finds the same customer
    same = await http.post(f"{API}/customers", json=PREMIUM, headers=auth("admin"))
    assert same.status_code == 201 and same.json()["id"] == first.json()["id"]
    clash = await http.post(f"{API}/customers", json={**PREMIUM, "tier": "standard",
                                                      "min_balance": None,
                                                      "min_balance_currency": None},
                            headers=auth("admin"))  # fmt: skip
    assert clash.status_code == 409 and error_of(clash)["code"] == "ALREADY_EXISTS"
    assert customer_count(store) == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"surname": "Example"}, "surname"),
        ({"tier": "gold"}, "tier"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"timezone": ""}, "timezone"),
        ({"min_balance": "10.001"}, "decimals"),
        ({"min_balance": "-5.00"}, "min_balance"),
        ({"min_balance": 5000.5}, "min_balance"),
        ({"min_balance_currency": "XXX"}, "currency"),
        ({"min_balance_currency": None}, "together"),
        ({"tier": "standard"}, "premium"),
        ({"phone": "07700 900123"}, "phone"),
        ({"email": "not-an-address"}, "email"),
        ({"locale": "zz-Nowhere"}, "locale"),
        ({"locale": "../../etc"}, "locale"),
        ({"name": "Ann\x00"}, "name"),
        ({"external_id": ""}, "external_id"),
        ({"external_id": "x" * 101}, "external_id"),
        ({"notification_prefs": {"channels": ["fax"]}}, "channels"),
        ({"notification_prefs": {"reminder_offsets": ["0d"]}}, "reminder_offsets"),
        ({"notification_prefs": {"colour": "blue"}}, "colour"),
        ({"notification_prefs": []}, "notification_prefs"),
    ],
)
async def test_bad_customers_are_refused(
    http: httpx.AsyncClient, auth: Auth, store: SqlStore, change: dict[str, Any], field: str
) -> None:
    answer = await http.post(f"{API}/customers", json={**PREMIUM, **change},
                             headers=auth("admin"))  # fmt: skip
    assert answer.status_code == 422, answer.text
    err = error_of(answer)
    assert field in err["message"] or field in str(err["details"]), err
    assert customer_count(store) == 0


async def test_bodies_that_are_not_json_objects_are_refused(
    http: httpx.AsyncClient, auth: Auth, store: SqlStore
) -> None:
    for content in (b"[]", b"not json", b'"text"'):
        answer = await http.post(f"{API}/customers", content=content,
                                 headers={**auth("admin"), "content-type": "application/json"})  # fmt: skip
        assert answer.status_code == 422 and error_of(answer)["code"] == "VALIDATION_ERROR"
    assert customer_count(store) == 0


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/customers", None),
        ("POST", "/customers", PREMIUM),
        ("POST", "/customers/1/erase", None),
        ("GET", "/accounts", None),
        ("POST", "/accounts", {"id": "GB-1", "customer_id": 1, "currency": "GBP"}),
        ("POST", "/accounts/GB-1/close", None),
    ],
)
async def test_the_channel_may_not_list_add_open_close_or_erase(
    http: httpx.AsyncClient, auth: Auth, method: str, path: str, body: Any
) -> None:
    answer = await http.request(method, f"{API}{path}", json=body, headers=auth("channel"))
    assert answer.status_code == 403 and error_of(answer)["code"] == "FORBIDDEN"


@pytest.mark.parametrize(
    ("role", "method", "path", "body"),
    [
        ("auditor", "POST", "/customers", PREMIUM),
        ("auditor", "POST", "/accounts", {"id": "GB-1", "customer_id": 1, "currency": "GBP"}),
        ("auditor", "POST", "/accounts/GB-1/close", None),
        ("auditor", "POST", "/customers/1/erase", None),
        ("operator", "POST", "/customers/1/erase", None),
    ],
)
async def test_only_the_allowed_roles_change_things(
    http: httpx.AsyncClient, auth: Auth, store: SqlStore, role: str, method: str, path: str,
    body: Any,
) -> None:  # fmt: skip
    await add(http, auth, "ann", name="Ann")
    answer = await http.request(method, f"{API}{path}", json=body, headers=auth(role))
    assert answer.status_code == 403, answer.text
    assert customer_count(store) == 1 and account_ids(store) == []
    assert (await http.get(f"{API}/customers/1", headers=auth("admin"))).json()["name"] == "Ann"


async def test_requests_without_a_token_are_refused(http: httpx.AsyncClient) -> None:
    answer = await http.get(f"{API}/customers/1")
    assert answer.status_code == 401 and error_of(answer)["code"] == "UNAUTHENTICATED"


async def test_erasing_personal_data_keeps_the_rest(
    http: httpx.AsyncClient, auth: Auth, store: SqlStore
) -> None:
    ann = await add(http, auth, "ann", name="Ann", email="ann@example.com", phone="+15555550100")
    assert (await open_account(http, auth, "GB-ANN-1", ann["id"])).status_code == 201
    erased = await http.post(f"{API}/customers/{ann['id']}/erase", headers=auth("admin"))
    assert erased.status_code == 200, erased.text
    body = erased.json()
    assert body["name"] is body["email"] is body["phone"] is None
    assert body["pii_erased_at"] is not None and body["external_id"] == "ann"
    again = await http.post(f"{API}/customers/{ann['id']}/erase", headers=auth("admin"))
    assert again.json()["pii_erased_at"] == body["pii_erased_at"]  # the first erasure's time
    accounts = await http.get(f"{API}/customers/{ann['id']}/accounts", headers=auth("channel"))
    assert [a["id"] for a in accounts.json()["items"]] == ["GB-ANN-1"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/customers/999", 404),
        ("/customers/999/accounts", 404),
        ("/customers/0", 422),
        ("/customers/-1", 422),
        ("/customers/abc", 422),
        (f"/customers/{2**63}", 422),
        ("/customers?cursor=not-a-cursor", 422),
        (f"/customers?cursor={encode_cursor(2**64)}", 422),  # past any id
        ("/customers?limit=0", 422),
        ("/customers?limit=501", 422),
        ("/customers?tier=gold", 422),
        ("/customers?external_id=%00", 422),
        ("/accounts/NOPE-0000", 404),
        ("/accounts/BANK-FUNDING-GBP", 404),  # the bank's own: not a customer account
        ("/accounts/%00", 422),
        (f"/accounts?cursor={encode_cursor(chr(0))}", 422),
        (f"/accounts?cursor={encode_cursor('x' * 65)}", 422),
    ],
)
async def test_absent_or_malformed_references(
    http: httpx.AsyncClient, auth: Auth, store: SqlStore, path: str, status: int
) -> None:
    ann = await add(http, auth, "ann")  # and a deposit, so that BANK-FUNDING-GBP exists
    assert (await open_account(http, auth, "GB-ANN-1", ann["id"],
                               opening_deposit="1.00")).status_code == 201  # fmt: skip
    answer = await http.get(f"{API}{path}", headers=auth("admin"))
    assert answer.status_code == status, answer.text
    error_of(answer)


# -- accounts ---------------------------------------------------------------------------


async def test_open_an_account_with_a_deposit_and_no_balance_shown(
    http: httpx.AsyncClient, auth: Auth, store: SqlStore
) -> None:
    ann = await add(http, auth, "ann")
    opened = await open_account(http, auth, "GB00ANN0000000001234", ann["id"],
                                overdraft_limit="250.00", opening_deposit="1500.00")  # fmt: skip
    assert opened.status_code == 201, opened.text
    body = opened.json()
    assert set(body) == ACCOUNT_FIELDS
    assert body["masked"] == "****1234" and body["overdraft_limit"] == "250.00"
    assert body["status"] == "open" and body["customer_id"] == ann["id"]
    assert opened.headers["location"] == f"{API}/accounts/GB00ANN0000000001234"
    balance = LedgerBank(store.engine, SystemClock()).get_balance("GB00ANN0000000001234")
    assert balance.posted_minor == 150_000
    for role in ("admin", "operator", "auditor", "channel"):
        got = await http.get(f"{API}/accounts/GB00ANN0000000001234", headers=auth(role))
        assert got.status_code == 200 and got.json() == body
    assert "balance" not in opened.text and "posted" not in opened.text


async def test_opening_is_idempotent_and_an_account_number_is_taken_once(
    http: httpx.AsyncClient, auth: Auth, store: SqlStore
) -> None:
    ann = await add(http, auth, "ann")
    body = {"id": "GB-ANN-1", "customer_id": ann["id"], "currency": "GBP",
            "opening_deposit": "10.00"}  # fmt: skip
    headers = {**auth("operator"), "Idempotency-Key": "open-1"}
    first = await http.post(f"{API}/accounts", json=body, headers=headers)
    again = await http.post(f"{API}/accounts", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    other = await http.post(f"{API}/accounts", json={**body, "currency": "EUR"}, headers=headers)
    assert other.status_code == 422 and error_of(other)["code"] == "IDEMPOTENCY_KEY_REUSED"
    clash = await http.post(f"{API}/accounts", json={**body, "currency": "EUR"},
                            headers=auth("operator"))  # fmt: skip
    assert clash.status_code == 409 and error_of(clash)["code"] == "ALREADY_EXISTS"
    assert account_ids(store) == ["GB-ANN-1"]
    balance = LedgerBank(store.engine, SystemClock()).get_balance("GB-ANN-1")
    assert balance.posted_minor == 1_000  # deposited once


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"customer_id": 999}, "customer"),
        ({"customer_id": 0}, "customer_id"),
        ({"customer_id": "one"}, "customer_id"),
        ({"currency": "XXX"}, "currency"),
        ({"currency": "gbp"}, "currency"),
        ({"overdraft_limit": "1.234"}, "decimals"),
        ({"overdraft_limit": "-1"}, "overdraft_limit"),
        ({"opening_deposit": "0.001"}, "decimals"),
        ({"opening_deposit": -5}, "opening_deposit"),
        ({"opening_deposit": 10.5}, "opening_deposit"),
        ({"id": "GB/1"}, "id"),
        ({"id": ""}, "id"),
        ({"id": "x" * 65}, "id"),
        ({"balance": "100.00"}, "balance"),
    ],
)
async def test_bad_accounts_are_refused(
    http: httpx.AsyncClient, auth: Auth, store: SqlStore, change: dict[str, Any], field: str
) -> None:
    ann = await add(http, auth, "ann")
    body = {"id": "GB-ANN-1", "customer_id": ann["id"], "currency": "GBP", **change}
    answer = await http.post(f"{API}/accounts", json=body, headers=auth("admin"))
    assert answer.status_code == 422, answer.text
    err = error_of(answer)
    assert field in err["message"] or field in str(err["details"]), err
    assert account_ids(store) == []
    with pytest.raises(Exception, match="no account"):
        LedgerBank(store.engine, SystemClock()).get_balance("GB-ANN-1")


async def test_accounts_by_page_and_by_customer(
    http: httpx.AsyncClient, auth: Auth, store: SqlStore
) -> None:
    ann = await add(http, auth, "ann")
    bob = await add(http, auth, "bob")
    for number in ("GB-A-3", "GB-A-1", "GB-A-2"):
        assert (await open_account(http, auth, number, ann["id"])).status_code == 201
    assert (await open_account(http, auth, "GB-B-1", bob["id"])).status_code == 201
    Customers(store.engine, SystemClock()).open_account(NewAccount("GB-BANK", "GBP", None))
    first = await http.get(f"{API}/customers/{ann['id']}/accounts", params={"limit": 2},
                           headers=auth("channel"))  # fmt: skip
    page = first.json()
    assert [a["id"] for a in page["items"]] == ["GB-A-1", "GB-A-2"] and page["next_cursor"]
    rest = await http.get(f"{API}/customers/{ann['id']}/accounts",
                          params={"limit": 2, "cursor": page["next_cursor"]},
                          headers=auth("channel"))  # fmt: skip
    assert [a["id"] for a in rest.json()["items"]] == ["GB-A-3"]
    assert rest.json()["next_cursor"] is None
    every = await http.get(f"{API}/accounts", headers=auth("auditor"))
    assert [a["id"] for a in every.json()["items"]] == ["GB-A-1", "GB-A-2", "GB-A-3", "GB-B-1"]
    bobs = await http.get(f"{API}/accounts", params={"customer_id": bob["id"]},
                          headers=auth("auditor"))  # fmt: skip
    assert [a["id"] for a in bobs.json()["items"]] == ["GB-B-1"]
    assert all(set(a) == ACCOUNT_FIELDS for a in every.json()["items"])


async def test_close_an_account(http: httpx.AsyncClient, auth: Auth, store: SqlStore) -> None:
    ann = await add(http, auth, "ann")
    await open_account(http, auth, "GB-ANN-1", ann["id"])
    closed = await http.post(f"{API}/accounts/GB-ANN-1/close", headers=auth("operator"))
    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == "closed" and closed.json()["closed_at"] is not None
    again = await http.post(f"{API}/accounts/GB-ANN-1/close", headers=auth("operator"))
    assert again.status_code == 409 and "already closed" in error_of(again)["message"]
    missing = await http.post(f"{API}/accounts/GB-NONE-1/close", headers=auth("operator"))
    assert missing.status_code == 404 and "****NE-1" in error_of(missing)["message"]
    Customers(store.engine, SystemClock()).open_account(NewAccount("GB-BANK-9", "GBP", None))
    internal = await http.post(f"{API}/accounts/GB-BANK-9/close", headers=auth("admin"))
    assert internal.status_code == 404
    row = Customers(store.engine, SystemClock()).account("GB-BANK-9")
    assert row is not None and row.status == "open"
