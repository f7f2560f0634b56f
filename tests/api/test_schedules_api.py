"""Schedules over HTTP: create, edit, pause, resume, delete, preview; kept across restarts."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from apitest import error_of
from duly.auth.roles import Role
from duly.clock import Clock, ManualClock
from duly.config import Settings
from duly.engine.store.sql import SqlStore
from duly.runtime import System, engine_options, job_registry

MONDAY_9 = datetime(2026, 3, 2, 9, tzinfo=UTC)


@pytest.fixture
def api_clock() -> Clock:
    return ManualClock(MONDAY_9)


def weekday_report(**extra: object) -> dict[str, object]:
    return {"name": "report.daily", "job": "duly.noop", "spec": "weekdays:07:30",
            "timezone": "Europe/London", "calendar": "GB-ENG", "adjust": "following",
            "misfire": "skip", "overlap": "skip"} | extra  # fmt: skip


async def test_create_a_weekday_schedule_in_a_zone(http: httpx.AsyncClient, auth) -> None:
    response = await http.post("/api/v1/schedules", json=weekday_report(), headers=auth(Role.OPERATOR))
    body = response.json()
    assert response.status_code == 201
    assert response.headers["location"] == "/api/v1/schedules/report.daily"
    assert body["source"] == "api"
    assert body["next_fire_at"] == "2026-03-03T07:30:00Z"  # Tuesday 07:30 London (GMT)
    assert (body["misfire"], body["overlap"], body["calendar"]) == ("skip", "skip", "GB-ENG")


async def test_a_schedule_previews_its_next_fires_in_its_zone(http: httpx.AsyncClient, auth) -> None:
    await http.post("/api/v1/schedules", json=weekday_report(), headers=auth(Role.OPERATOR))
    response = await http.get("/api/v1/schedules/report.daily/preview?count=20",
                              headers=auth(Role.AUDITOR))  # fmt: skip
    fires = response.json()["fires"]
    assert len(fires) == 20
    assert "2026-03-30T07:30:00+01:00" in fires  # after the clocks go forward: still 07:30 local
    assert not any(f.startswith(("2026-04-03", "2026-04-06")) for f in fires)  # Easter


async def test_a_spec_previews_before_any_schedule_exists(http: httpx.AsyncClient, auth) -> None:
    response = await http.get(
        "/api/v1/schedules/preview",
        params={"spec": "daily:02:30", "tz": "Europe/Berlin", "after": "2026-03-28T12:00:00+00:00",
                "count": 3},
        headers=auth(Role.OPERATOR),
    )
    assert response.json()["fires"] == [
        "2026-03-29T03:30:00+02:00",  # 02:30 does not exist that night: shifted by the gap
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"spec": "daily:25:00"}, "INVALID_SPEC"),
        ({"spec": "every:sometimes"}, "INVALID_SPEC"),
        ({"timezone": "Mars/Olympus"}, "INVALID_SPEC"),
        ({"calendar": "XX-NOWHERE"}, "INVALID_SPEC"),
        ({"adjust": "sideways"}, "VALIDATION_ERROR"),
        ({"misfire": "maybe"}, "VALIDATION_ERROR"),
        ({"job": "no.such.job"}, "UNKNOWN_JOB"),
        ({"name": "has spaces"}, "VALIDATION_ERROR"),
        ({"start_at": "2026-03-02T09:00:00"}, "VALIDATION_ERROR"),
        ({"args": "not-an-object"}, "VALIDATION_ERROR"),
        ({"unknown_field": 1}, "VALIDATION_ERROR"),
    ],
)
async def test_bad_schedules_are_422_and_nothing_is_written(
    http: httpx.AsyncClient, auth, store: SqlStore, change: dict[str, object], code: str
) -> None:
    response = await http.post("/api/v1/schedules", json=weekday_report(**change),
                               headers=auth(Role.OPERATOR))  # fmt: skip
    assert response.status_code == 422, response.text
    assert error_of(response)["code"] == code
    assert store.schedule_list() == []


async def test_a_taken_name_is_409(http: httpx.AsyncClient, auth) -> None:
    await http.post("/api/v1/schedules", json=weekday_report(), headers=auth(Role.OPERATOR))
    again = await http.post("/api/v1/schedules", json=weekday_report(spec="daily:08:00"),
                            headers=auth(Role.OPERATOR))  # fmt: skip
    assert (again.status_code, error_of(again)["code"]) == (409, "ALREADY_EXISTS")


async def test_an_idempotent_create_replays(http: httpx.AsyncClient, auth) -> None:
    headers = {**auth(Role.OPERATOR), "Idempotency-Key": "sched-1"}
    first = await http.post("/api/v1/schedules", json=weekday_report(), headers=headers)
    again = await http.post("/api/v1/schedules", json=weekday_report(), headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"


async def test_edit_pause_resume_delete(http: httpx.AsyncClient, auth, store: SqlStore,
                                        api_clock: ManualClock) -> None:  # fmt: skip
    headers = auth(Role.OPERATOR)
    await http.post("/api/v1/schedules", json=weekday_report(), headers=headers)
    edited = await http.patch("/api/v1/schedules/report.daily",
                              json={"spec": "daily:06:00", "timezone": "America/New_York"},
                              headers=headers)  # fmt: skip
    paused = await http.post("/api/v1/schedules/report.daily/pause", headers=headers)
    resumed = await http.post("/api/v1/schedules/report.daily/resume", headers=headers)
    deleted = await http.delete("/api/v1/schedules/report.daily", headers=headers)
    gone = await http.get("/api/v1/schedules/report.daily", headers=headers)
    assert edited.json()["next_fire_at"] == "2026-03-02T11:00:00Z"  # 06:00 EST
    assert edited.json()["calendar"] == "GB-ENG"  # fields not sent are kept
    assert paused.json()["paused"] is True and resumed.json()["paused"] is False
    assert deleted.status_code == 204
    assert (gone.status_code, error_of(gone)["code"]) == (404, "NOT_FOUND")


@pytest.mark.parametrize("patch", [{"spec": None}, {"timezone": "Nowhere/Land"}, {"spec": "cron:61 * * * *"},
                                   {"name": "renamed"}])
async def test_a_bad_edit_is_422_and_changes_nothing(
    http: httpx.AsyncClient, auth, store: SqlStore, patch: dict[str, object]
) -> None:
    await http.post("/api/v1/schedules", json=weekday_report(), headers=auth(Role.OPERATOR))
    before = store.schedule_get("report.daily")
    response = await http.patch("/api/v1/schedules/report.daily", json=patch, headers=auth(Role.OPERATOR))
    assert response.status_code == 422, response.text
    assert store.schedule_get("report.daily") == before


async def test_api_edits_and_pauses_survive_a_restart_that_syncs_the_file(
    http: httpx.AsyncClient, auth, store: SqlStore, db_url: str, api_clock: ManualClock
) -> None:
    settings = Settings(database_url=db_url, schedules=[
        {"name": "from.file", "job": "duly.noop", "spec": "daily:05:00"},
        {"name": "paused.here", "job": "duly.noop", "spec": "daily:06:00"},
    ])  # fmt: skip

    def start_node() -> None:
        System(settings, store, job_registry(settings), api_clock, engine_options(settings)).sync_schedules()

    start_node()
    listed = (await http.get("/api/v1/schedules?limit=500", headers=auth(Role.AUDITOR))).json()["items"]
    sources = {s["name"]: s["source"] for s in listed}
    await http.patch("/api/v1/schedules/from.file", json={"spec": "daily:05:45"}, headers=auth(Role.OPERATOR))
    await http.post("/api/v1/schedules/paused.here/pause", headers=auth(Role.OPERATOR))
    start_node()
    assert sources["from.file"] == "config" and sources["duly.prune"] == "system"
    edited = store.schedule_get("from.file")
    assert edited is not None and (edited.spec, edited.source) == ("daily:05:45", "api")
    paused = store.schedule_get("paused.here")
    assert paused is not None and paused.paused


async def test_schedules_page_by_name(http: httpx.AsyncClient, auth) -> None:
    for i in range(5):
        await http.post("/api/v1/schedules", json=weekday_report(name=f"s{i}"), headers=auth(Role.OPERATOR))
    names, cursor = [], None
    while True:
        page = (await http.get("/api/v1/schedules", params={"limit": 2, **({"cursor": cursor} if cursor else {})},
                               headers=auth(Role.AUDITOR))).json()  # fmt: skip
        names += [s["name"] for s in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert names == [f"s{i}" for i in range(5)]
