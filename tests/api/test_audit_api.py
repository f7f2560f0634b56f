"""``/audit`` over HTTP, on both stores: events by page and filter, verification, who acted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from apitest import error_of
from audittest import unguarded
from conftest import WaitFor
from duly.audit import AuditEntry, AuditLog, acting_as, record, system_actor
from duly.audit.signing import generate_key_pair
from duly.auth.roles import Role
from duly.auth.service import TokenService
from duly.clock import Clock, ManualClock
from duly.config import AuditSettings, Settings
from duly.engine.store.base import NewRun
from duly.engine.store.sql import SqlStore

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
URL = "/api/v1/audit"


@pytest.fixture
def api_clock() -> Clock:
    return ManualClock(NOW)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit.pem"
    generate_key_pair(path)
    return path


@pytest.fixture
def api_settings(db_url: str, key_file: Path) -> Settings:
    return Settings(database_url=db_url, audit=AuditSettings(signing_key_file=key_file,
                                                             create_key=False))  # fmt: skip


@pytest.fixture
def audit(store: SqlStore, api_clock: Clock, api_settings: Settings) -> AuditLog:
    return AuditLog(store.engine, api_clock, api_settings.audit)


def sealed(audit: AuditLog, wait_for: WaitFor) -> None:
    """Every recorded event sealed (PostgreSQL seals below the cluster's oldest open transaction)."""
    wait_for(lambda: audit.seal() >= 0 and audit.status().unsealed == 0, 30, "the sealer")


@pytest.fixture
def events(store: SqlStore, audit: AuditLog, wait_for: WaitFor, auth) -> None:
    """The readers' two tokens (events 1 and 2, at 09:00), then six events an hour apart:
    runs fired and claimed by node-a, a schedule paused and a run fired by node-b."""
    auth(Role.AUDITOR)
    auth(Role.ADMIN)
    with acting_as(system_actor("node-a")):
        for n in range(4):
            write(store, AuditEntry("run.fire" if n % 2 == 0 else "run.claim", "run", n // 2 + 1,
                                    {"n": n}), NOW + timedelta(hours=n))  # fmt: skip
    with acting_as(system_actor("node-b")):
        write(store, AuditEntry("schedule.pause", "schedule", "report.daily",
                                {"paused": {"before": False, "after": True}}),
              NOW + timedelta(hours=4))  # fmt: skip
        write(store, AuditEntry("run.fire", "run", 3, {"n": 5}), NOW + timedelta(hours=5))
    sealed(audit, wait_for)
    assert audit.checkpoint(force=True) is not None


def write(store: SqlStore, entry: AuditEntry, at: datetime) -> None:
    with store.engine.begin() as conn:
        record(conn, [entry], at)


async def pages(
    http: httpx.AsyncClient, headers: dict[str, str], **params: Any
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await http.get(URL, params=query, headers=headers)
        assert response.status_code == 200, response.text
        items += response.json()["items"]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return items


@pytest.mark.usefixtures("events")
async def test_events_newest_first_across_pages(http: httpx.AsyncClient, auth) -> None:
    items = await pages(http, auth(Role.AUDITOR), limit=4)

    assert [e["seq"] for e in items] == [8, 7, 6, 5, 4, 3, 2, 1]
    assert {e["action"] for e in items[-2:]} == {"token.create"}
    paused = items[1]
    assert (paused["actor"], paused["actor_name"], paused["actor_role"]) == (
        "system:node-b",
        "node-b",
        "system",
    )
    assert (paused["action"], paused["object_type"], paused["object_id"]) == (
        "schedule.pause",
        "schedule",
        "report.daily",
    )
    assert paused["details"] == {"paused": {"before": False, "after": True}}
    assert paused["at"] == "2026-03-02T13:00:00Z" and len(paused["hash"]) == 64
    assert items[0]["prev_hash"] == paused["hash"]


@pytest.mark.usefixtures("events")
async def test_filters_combine(http: httpx.AsyncClient, auth) -> None:
    headers = auth(Role.ADMIN)

    async def seqs(**params: Any) -> list[int]:
        return [e["seq"] for e in await pages(http, headers, **params)]

    assert await seqs(actor="system:node-a", action="run.fire") == [5, 3]
    assert await seqs(object_type="run", object_id="3") == [8]
    assert await seqs(since="2026-03-02T10:00:00Z", until="2026-03-02T12:00:00+00:00") == [5, 4]
    assert await seqs(actor="token:nobody") == []
    response = await http.get(URL, params={"since": "2026-03-02T12:00:00Z",
                                           "until": "2026-03-02T10:00:00Z"}, headers=headers)  # fmt: skip
    assert response.status_code == 422
    response = await http.get(URL, params={"limit": 501}, headers=headers)
    assert response.status_code == 422
    response = await http.get(URL, params={"cursor": "bm9wZQ"}, headers=headers)
    assert response.status_code == 422 and error_of(response)["code"] == "INVALID_CURSOR"


@pytest.mark.usefixtures("events")
async def test_verify_answers_the_report(http: httpx.AsyncClient, auth, store: SqlStore) -> None:
    response = await http.get(f"{URL}/verify", headers=auth(Role.AUDITOR))
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["ok"] is True and report["problem"] is None
    assert (report["events"], report["first_seq"], report["last_seq"]) == (8, 1, 8)
    assert (report["checkpoints"], report["last_checkpoint"], report["unsigned_tail"]) == (1, 8, 0)
    assert report["signatures_checked"] is True
    partial = await http.get(f"{URL}/verify", params={"from_seq": 4}, headers=auth(Role.ADMIN))
    assert partial.status_code == 200 and partial.json()["first_seq"] == 4

    with unguarded(store) as conn:
        conn.execute(text("UPDATE audit_events SET actor = 'system:elsewhere' WHERE seq = 2"))
    response = await http.get(f"{URL}/verify", headers=auth(Role.AUDITOR))

    assert response.status_code == 200
    assert response.json()["ok"] is False
    assert response.json()["problem"]["seq"] == 2
    assert "changed after it was sealed" in response.json()["problem"]["reason"]


@pytest.fixture
def keyless(key_file: Path) -> Path:
    """The configured key pair removed after the app was built."""
    key_file.unlink()
    key_file.with_suffix(".pub").unlink()
    return key_file


async def test_verify_without_a_key_is_409(http: httpx.AsyncClient, auth, keyless: Path) -> None:
    response = await http.get(f"{URL}/verify", headers=auth(Role.AUDITOR))

    assert response.status_code == 409 and error_of(response)["code"] == "AUDIT_KEY_MISSING"
    assert str(keyless.parent) not in response.text


@pytest.mark.parametrize("role", [Role.OPERATOR, Role.CHANNEL])
async def test_only_auditors_and_admins_read_the_trail(
    http: httpx.AsyncClient, auth, role: Role
) -> None:
    for path in (URL, f"{URL}/verify"):
        response = await http.get(path, headers=auth(role))
        assert response.status_code == 403 and error_of(response)["code"] == "FORBIDDEN"


async def test_an_api_change_is_recorded_as_the_token_in_its_request(
    http: httpx.AsyncClient,
    auth,
    store: SqlStore,
    audit: AuditLog,
    api_clock: Clock,
    wait_for: WaitFor,
) -> None:
    store.audit = record
    headers = auth(Role.OPERATOR, "ops-bot")
    token = next(t for t in TokenService(store.engine, api_clock).list() if t.name == "ops-bot")
    body = {"name": "report.daily", "job": "duly.noop", "spec": "weekdays:07:30",
            "timezone": "Europe/London"}  # fmt: skip
    created = await http.post("/api/v1/schedules", json=body, headers=headers)
    assert created.status_code == 201, created.text
    before = {e["id"] for e in await pages(http, auth(Role.AUDITOR))}

    paused = await http.post("/api/v1/schedules/report.daily/pause",
                             headers={**headers, "X-Request-ID": "req-pause-1"})  # fmt: skip

    assert paused.status_code == 200, paused.text
    assert paused.headers["x-request-id"] == "req-pause-1"
    sealed(audit, wait_for)
    written = [e for e in await pages(http, auth(Role.AUDITOR)) if e["id"] not in before]
    assert [e["action"] for e in written] == ["schedule.pause"]
    event = written[0]
    assert (event["actor"], event["actor_name"], event["actor_role"]) == (
        f"token:{token.id}",
        "ops-bot",
        "operator",
    )
    assert event["request_id"] == "req-pause-1"
    assert (event["object_type"], event["object_id"]) == ("schedule", "report.daily")


async def test_a_run_s_events_include_the_batch_events_that_list_it(
    http: httpx.AsyncClient, auth, store: SqlStore
) -> None:
    store.audit = record
    (alone, _) = store.run_enqueue(
        NewRun(job_name="duly.noop", scheduled_for=NOW, idempotency_key="alone"), NOW
    )
    ids = store.run_enqueue_many(
        [
            NewRun(job_name="duly.noop", scheduled_for=NOW, idempotency_key=f"k{i}")
            for i in range(3)
        ],
        NOW,
    )
    headers = auth(Role.AUDITOR)

    async def of_run(run_id: int) -> list[tuple[str, str | None, int | None]]:
        items = await pages(http, headers, object_type="run", object_id=str(run_id))
        return [(e["action"], e["object_id"], e["details"].get("count")) for e in items]

    assert await of_run(alone.id) == [("run.fire", str(alone.id), None)]
    for run_id in ids.values():
        assert await of_run(run_id) == [("run.fire", None, 3)]
    (batch,) = await pages(http, headers, object_type="run", object_id=str(ids["k1"]))
    assert sorted(item["id"] for item in batch["details"]["runs"]) == sorted(ids.values())
