"""Each dashboard page's data and actions, on both stores, through the real app over httpx.

The app's clock is manual (2026-03-03 00:00 UTC), so periods and next fires are known. The
data is made through the services (the demo bank, the engine client) and, for the error log
and a finished balance check, written as the jobs write them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select, update

from duly.auth.roles import Role
from duly.banking.customers import Customers
from duly.clock import ManualClock
from duly.engine.client import EngineClient
from duly.engine.store.base import NewAlert, NewRun, NewSchedule
from duly.engine.store.schema import runs
from duly.engine.store.sql import SqlStore
from duly.operations import operations_registry
from duly.operations.balance_check.models import JOB_NAME, error_logs
from duly.operations.demo import seed_demo_bank
from duly.operations.recurring.service import RecurringPayments
from duly.operations.transfers.service import ScheduledTransfers
from duly.runtime import job_registry
from webtest import page, sign_in, text_of

NOW = datetime(2026, 3, 3, 0, 0, tzinfo=UTC)


@pytest.fixture
def api_clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def client(store: SqlStore, api_clock: ManualClock) -> EngineClient:
    return EngineClient(store, job_registry(), api_clock)


def log_error(
    store: SqlStore, customer: int | None, code: str, at: datetime, run_id: int | None = None
) -> int:
    with store.engine.begin() as conn:
        return int(conn.execute(
            insert(error_logs).values(
                run_id=run_id, job_name=JOB_NAME, customer_id=customer, business_date=at.date(),
                error_code=code, message=f"{code} from the bank", retry_count=3,
                stack_trace="Traceback: internals", logged_at=at,
            ).returning(error_logs.c.id)
        ).scalar_one())  # fmt: skip


def finished_check(store: SqlStore, night: str, summary: dict[str, Any]) -> int:
    """A succeeded run of the balance check with the summary the job writes."""
    run, _ = store.run_enqueue(NewRun(job_name=JOB_NAME, scheduled_for=NOW - timedelta(hours=2),
                                      idempotency_key=f"check:{night}", args={"business_date": night},
                                      queue="default"), NOW)  # fmt: skip
    with store.engine.begin() as conn:
        conn.execute(update(runs).where(runs.c.id == run.id).values(
            status="succeeded", result={"business_date": night, **summary}, finished_at=NOW))  # fmt: skip
    return run.id


@pytest.fixture
def bank(client: EngineClient, store: SqlStore, api_clock: ManualClock) -> dict[str, Any]:
    """The demo bank, a schedule, queued runs, an alert, errors and two checked nights."""
    money_client = EngineClient(store, operations_registry, api_clock)
    seed_demo_bank(money_client)
    client.upsert_schedule(NewSchedule(name="morning", job_name="duly.noop", spec="daily:09:00",
                                       timezone="Europe/London"))  # fmt: skip
    queued = [client.trigger("duly.noop")[0].id for _ in range(2)]
    alert, _ = store.alert_raise(NewAlert("test:1", "run.failed", "high", "A run failed", NOW))
    ada = Customers(store.engine, api_clock).by_external_id("demo-ada")
    assert ada is not None
    errors = [
        log_error(store, ada.id, "TIMEOUT", NOW - timedelta(hours=2), queued[0]),
        log_error(store, ada.id, "TIMEOUT", NOW - timedelta(hours=1)),
        log_error(store, None, "MISSING_DATA", NOW - timedelta(hours=3)),
        log_error(store, None, "API_ERROR", NOW - timedelta(days=3)),  # in 7 days, not in 24 h
    ]
    checks = [
        finished_check(store, "2026-03-01", {"customers": 7, "passed": 5, "failed": 1, "errors": 1,
                                             "errors_by_code": {"TIMEOUT": 1}, "duration_seconds": 95.5}),
        finished_check(store, "2026-03-02", {"customers": 7, "passed": 3, "failed": 2, "errors": 2,
                                             "errors_by_code": {"MISSING_DATA": 1, "NEGATIVE_BALANCE": 1},
                                             "duration_seconds": 9000.0}),
    ]  # fmt: skip
    return {"ada": ada, "queued": queued, "alert": alert.id, "errors": errors, "checks": checks,
            "money": money_client}  # fmt: skip


async def test_operations_shows_runs_queues_next_fires_and_alerts(
    ui: httpx.AsyncClient, auth, bank
) -> None:
    await sign_in(ui, auth(Role.AUDITOR))
    text = text_of(await page(ui, "/"))
    assert "queued 4" in text and "running 0" in text  # two here, the demo's transfer and rent
    assert "default duly.noop 2 2" in text  # queue, job, waiting, due now
    assert (
        "2026-03-03 09:00:00 UTC morning duly.noop" in text
    )  # the next fire (London = UTC in March)
    assert "A run failed" in text and "high" in text
    assert "<svg" in await page(ui, "/")


async def test_errors_by_code_per_hour_top_customers_and_drill_down(
    ui: httpx.AsyncClient, auth, bank
) -> None:
    await sign_in(ui, auth(Role.OPERATOR))
    text = text_of(await page(ui, "/errors"))
    assert "By error code (3 in the last 24h)" in text
    assert (
        "TIMEOUT 2 2" in text
        and "MISSING_DATA 1 1" in text
        and "API_ERROR" not in text.split("Per hour")[0]
    )
    assert f"customer {bank['ada'].id} 2" in text
    week = text_of(await page(ui, "/errors", window="7d"))
    assert "By error code (4 in the last 7d)" in week
    detail = text_of(await page(ui, f"/errors/{bank['errors'][0]}"))
    assert "Ada Lovelace" in detail and f"run {bank['queued'][0]}" in detail
    assert "Suggested action" in detail and "Traceback" not in detail


async def test_an_error_is_resolved_with_a_note_once(
    ui: httpx.AsyncClient, auth, bank, store: SqlStore
) -> None:
    csrf = await sign_in(ui, auth(Role.OPERATOR))
    error_id = bank["errors"][1]
    done = await ui.post(
        f"/ui/errors/{error_id}/resolve", data={"csrf": csrf, "notes": "bank restarted"}
    )
    assert (done.status_code, done.headers["location"]) == (
        303,
        f"/ui/errors/{error_id}?notice=error-resolved",
    )
    with store.engine.connect() as conn:
        row = conn.execute(select(error_logs).where(error_logs.c.id == error_id)).one()
    assert (
        row.resolved
        and row.resolution_notes == "bank restarted"
        and row.resolved_by.startswith("token:")
    )
    again = await ui.post(f"/ui/errors/{error_id}/resolve", data={"csrf": csrf, "notes": "twice"})
    assert again.status_code == 409
    blank = await ui.post(
        f"/ui/errors/{bank['errors'][0]}/resolve", data={"csrf": csrf, "notes": "  "}
    )
    assert blank.status_code == 422


async def test_schedules_list_create_preview_pause_and_trigger(
    ui: httpx.AsyncClient, auth, bank, store: SqlStore
) -> None:
    csrf = await sign_in(ui, auth(Role.ADMIN))
    text = text_of(await page(ui, "/schedules"))
    assert "morning duly.noop daily:09:00 Europe/London" in text and "never ran" in text
    preview = text_of(await page(ui, "/schedules/preview", kind="weekly", time="07:30",
                                 timezone="America/New_York", days=["mon", "thu"]))  # fmt: skip
    assert "Next fires of weekly:mon,thu@07:30" in preview
    assert (
        "Thu 2026-03-05 07:30 EST (UTC-0500)" in preview
        and "Mon 2026-03-09 07:30 EDT (UTC-0400)" in preview
    )
    bad = text_of(await page(ui, "/schedules/preview", kind="daily", time="25:00"))
    assert "HH:MM" in bad
    made = await ui.post("/ui/schedules", data={"csrf": csrf, "name": "report", "job": "duly.noop",
                                                "kind": "weekdays", "time": "18:00", "timezone": "UTC"})  # fmt: skip
    assert made.status_code == 303, made.text
    row = store.schedule_get("report")
    assert (
        row is not None
        and row.spec == "weekdays:18:00"
        and row.next_fire_at == NOW + timedelta(hours=18)
    )
    dup = await ui.post("/ui/schedules", data={"csrf": csrf, "name": "report", "job": "duly.noop",
                                               "kind": "daily", "time": "18:00", "timezone": "UTC"})  # fmt: skip
    assert dup.status_code == 409 and "exists" in dup.text
    zone = await ui.post("/ui/schedules", data={"csrf": csrf, "name": "x", "job": "duly.noop",
                                                "kind": "daily", "time": "18:00", "timezone": "Mars/Base"})  # fmt: skip
    assert zone.status_code == 422 and store.schedule_get("x") is None
    paused = await ui.post("/ui/schedules/morning/pause", data={"csrf": csrf})
    assert paused.status_code == 303 and store.schedule_get("morning").paused  # type: ignore[union-attr]
    fired = await ui.post("/ui/schedules/report/trigger", data={"csrf": csrf})
    assert fired.status_code == 303
    run_id = int(fired.headers["location"].split("/runs/")[1].split("?")[0])
    run_page = text_of(await page(ui, f"/runs/{run_id}"))
    assert "Run" in run_page and "queued" in run_page and "origin" in run_page.lower()
    missing = await ui.post("/ui/schedules/nope/pause", data={"csrf": csrf})
    assert missing.status_code == 404


async def test_run_detail_shows_attempts_and_what_it_belongs_to(
    ui: httpx.AsyncClient, auth, bank
) -> None:
    await sign_in(ui, auth(Role.AUDITOR))
    text = text_of(await page(ui, f"/runs/{bank['checks'][0]}"))
    assert "Status: succeeded" in text and "the nightly balance check" in text
    assert '"passed": 5' in text and "No attempt yet." in text
    assert (await ui.get("/ui/runs/999999")).status_code == 404
    assert (await ui.get("/ui/runs/abc")).status_code == 404
    assert (await ui.get(f"/ui/runs/{2**70}")).status_code == 404


async def test_the_last_nights_of_the_balance_check(ui: httpx.AsyncClient, auth, bank) -> None:
    await sign_in(ui, auth(Role.AUDITOR))
    text = text_of(await page(ui, "/balance-checks"))
    assert (
        "2026-03-02 run" in text
        and "7 3 2 2 MISSING_DATA 1, NEGATIVE_BALANCE 1 2 h 30 min over" in text
    )
    assert "2026-03-01 run" in text and "7 5 1 1 TIMEOUT 1 1 min 35 s within" in text
    assert text.index("2026-03-02 run") < text.index("2026-03-01 run")


async def test_transfers_and_payments_by_customer_cancel_and_pause(
    ui: httpx.AsyncClient, auth, bank, store: SqlStore
) -> None:
    csrf = await sign_in(ui, auth(Role.OPERATOR))
    listing = text_of(await page(ui, "/money"))
    assert "Ada Lovelace · demo-ada" in listing
    grace = text_of(await page(ui, "/money", customer="demo-grace"))
    assert "Grace Hopper" in grace and "USD 42.50" in grace and "Groceries" in grace
    assert "DEMO" not in grace  # account numbers are masked
    ada = text_of(await page(ui, "/money", customer=str(bank["ada"].id)))
    assert "GBP 950.00" in ada and "Rent" in ada
    assert "No customer matches" in text_of(await page(ui, "/money", customer="nobody"))
    money = bank["money"]
    transfer = ScheduledTransfers(money).find(limit=1)[0]
    detail = text_of(await page(ui, f"/transfers/{transfer.id}"))
    assert "scheduled" in detail and "USD 42.50" in detail
    cancelled = await ui.post(f"/ui/transfers/{transfer.id}/cancel", data={"csrf": csrf})
    assert cancelled.status_code == 303
    assert ScheduledTransfers(money).get(transfer.id).status == "cancelled"  # type: ignore[union-attr]
    again = await ui.post(f"/ui/transfers/{transfer.id}/cancel", data={"csrf": csrf})
    assert again.status_code == 409
    payment = RecurringPayments(money).find(limit=1)[0]
    assert "Next occurrences" in text_of(await page(ui, f"/recurring/{payment.id}"))
    paused = await ui.post(f"/ui/recurring/{payment.id}/pause", data={"csrf": csrf})
    assert paused.status_code == 303
    assert RecurringPayments(money).get(payment.id).status == "paused"  # type: ignore[union-attr]
    wrong = await ui.post(f"/ui/recurring/{payment.id}/explode", data={"csrf": csrf})
    assert wrong.status_code == 404


async def test_audit_shows_the_chain_and_verifies(ui: httpx.AsyncClient, auth, bank) -> None:
    await sign_in(ui, auth(Role.AUDITOR))
    text = text_of(await page(ui, "/audit"))
    assert "Sealed up to sequence" in text and "Verify the chain" in text
    verified = text_of(await page(ui, "/audit", verify="1"))
    assert "Verified" in verified
    assert re.search(r"the chain is intact up to sequence [0-9]+", verified)


async def test_an_auditor_sees_no_action_and_is_refused_when_posting(
    ui: httpx.AsyncClient, auth, bank, store: SqlStore
) -> None:
    csrf = await sign_in(ui, auth(Role.AUDITOR))
    for path in ("/", "/errors", f"/errors/{bank['errors'][0]}", "/schedules", f"/runs/{bank['queued'][0]}",
                 "/balance-checks", "/money?customer=demo-ada", "/audit"):  # fmt: skip
        html = await page(
            ui, path.split("?")[0], **dict([path.split("?")[1].split("=")]) if "?" in path else {}
        )
        posts = html.count('method="post"')
        assert posts == 1, (path, posts)  # only sign-out
        assert 'class="action' not in html, path
    for url in (f"/ui/errors/{bank['errors'][0]}/resolve", "/ui/schedules/morning/pause",
                f"/ui/alerts/{bank['alert']}/ack", f"/ui/runs/{bank['queued'][0]}/cancel"):  # fmt: skip
        refused = await ui.post(url, data={"csrf": csrf, "notes": "x"})
        assert refused.status_code == 403, url
    assert not store.schedule_get("morning").paused  # type: ignore[union-attr]
    assert store.alert_get(bank["alert"]).status == "open"  # type: ignore[union-attr]


async def test_alerts_are_acknowledged_then_resolved(
    ui: httpx.AsyncClient, auth, bank, store: SqlStore
) -> None:
    csrf = await sign_in(ui, auth(Role.OPERATOR))
    acked = await ui.post(f"/ui/alerts/{bank['alert']}/ack", data={"csrf": csrf})
    assert acked.status_code == 303
    row = store.alert_get(bank["alert"])
    assert (
        row is not None
        and row.status == "acked"
        and row.acked_by
        and row.acked_by.startswith("token:")
    )
    resolved = await ui.post(f"/ui/alerts/{bank['alert']}/resolve", data={"csrf": csrf})
    assert resolved.status_code == 303 and store.alert_get(bank["alert"]).status == "resolved"  # type: ignore[union-attr]
    assert "No open alert." in text_of(await page(ui, "/"))
