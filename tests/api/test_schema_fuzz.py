"""Schemathesis over the OpenAPI document: every operation, fuzzed with an admin token, on each store.

For each operation, up to three runs of generated requests (schemathesis 4's Hypothesis
strategies, derandomized, :data:`EXAMPLES` each):

- ``positive``: requests that fit the schema (mostly naming objects that do not exist);
- ``negative``: requests that break it, and requests without the token (the gate's 401);
- ``known``: requests that fit the schema whose path names objects that exist, seeded before
  the operation (a schedule, a queued run, a token, the ``duly.noop`` job), so that success
  bodies are checked against their schema too, not only the 404s.

Every response must be below 500, of a documented status, and fit the documented body
schema. Routes still placeholders have no operations, so nothing of theirs is run.

The operations are driven here rather than through ``@schema.parametrize()``: the app
exists per store (a fixture), and schemathesis's fixture loader sets ``Node._nodeid``,
which pytest 9.2 no longer has.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from duly.auth.roles import Role
from duly.auth.service import TokenService
from duly.clock import Clock
from duly.config import Settings
from duly.config.api import ApiSettings
from duly.engine.client import EngineClient
from duly.engine.store.base import NewSchedule
from duly.engine.store.sql import SqlStore
from duly.runtime import job_registry

EXAMPLES = 15
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
KNOWN_SCHEDULE = "fuzz.daily"

# No shrinking: a failure is reported with the first request that showed it (its curl line),
# and the run stays bounded; the examples are derandomized, so a failure repeats.
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.data_too_large, HealthCheck.large_base_example],
)  # fmt: skip

#: Fields set in ``known`` mode (``body`` or ``query``; None removes one) so that the request
#: can succeed: a random job name, spec or calendar never exists.
KNOWN_FIELDS: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
    ("POST", "/api/v1/schedules"): ("body", {"job": "duly.noop", "spec": "every:15m",
                                             "timezone": "Europe/London", "calendar": None}),
    ("GET", "/api/v1/schedules/preview"): ("query", {"spec": "weekdays:07:30",
                                                     "tz": "Europe/London", "calendar": None}),
}  # fmt: skip


@pytest.fixture
def api_settings(db_url: str) -> Settings:
    # No rate limit (hundreds of requests on one token); no waiting for runs (no node here,
    # and a `wait` of up to 3600 s is a valid request).
    limits = ApiSettings(rate_limit_per_second=1e9, rate_limit_burst=10**9, max_wait_seconds=0)
    return Settings(database_url=db_url, api=limits)


class Seeds:
    """Objects that exist, made fresh for each operation (the one before may have deleted them)."""

    def __init__(self, store: SqlStore, settings: Settings, clock: Clock) -> None:
        self.client = EngineClient(store, job_registry(settings), clock)
        self.tokens = TokenService(store.engine, clock)
        self.made = 0

    def path_parameters(self, path: str, names: list[str]) -> dict[str, Any] | None:
        """Values naming existing objects for every parameter of ``path``, or None."""
        makers: dict[tuple[str, str], Callable[[], Any]] = {
            ("/api/v1/jobs/", "name"): lambda: "duly.noop",
            ("/api/v1/schedules/", "name"): self.schedule,
            ("/api/v1/runs/", "run_id"): self.run,
            ("/api/v1/tokens/", "token_id"): self.token,
        }
        found = {}
        for name in names:
            maker = next((m for (prefix, n), m in makers.items()
                          if n == name and path.startswith(prefix)), None)  # fmt: skip
            if maker is None:
                return None
            found[name] = maker()
        return found

    def schedule(self) -> str:
        self.client.upsert_schedule(NewSchedule(name=KNOWN_SCHEDULE, job_name="duly.noop",
                                                spec="daily:07:30", source="api"))  # fmt: skip
        return KNOWN_SCHEDULE

    def run(self) -> int:
        run, _ = self.client.trigger("duly.noop")
        return run.id

    def token(self) -> str:
        self.made += 1
        created = self.tokens.create(f"fuzz-victim-{self.made}", Role.AUDITOR, created_by="tests")
        return created.row.id


def _modes(operation: dict[str, Any]) -> list[str]:
    # An operation with no parameter, body or security has nothing to break.
    breakable = any(k in operation for k in ("parameters", "requestBody", "security"))
    return ["positive", "negative", "known"] if breakable else ["positive"]


def _fuzz(
    strategy: Any,
    headers: dict[str, str],
    fields: tuple[str, dict[str, Any]] | None,
    seen: Callable[[int], None],
) -> None:
    """Send :data:`EXAMPLES` generated requests and check each response."""

    @FUZZ
    @given(case=strategy)
    def fuzz(case: Case) -> None:
        target = getattr(case, fields[0]) if fields else None
        if fields and isinstance(target, dict):
            for name, value in fields[1].items():
                if value is None:
                    target.pop(name, None)
                else:
                    target[name] = value
        response = case.call_and_validate(headers=headers, checks=CHECKS)
        seen(response.status_code)

    fuzz()


def test_every_operation_answers_what_it_documents(
    app: FastAPI, api_settings: Settings, store: SqlStore, api_clock: Clock, auth: Any,
    subtests: pytest.Subtests,
) -> None:  # fmt: skip
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    document = app.openapi()
    admin = auth(Role.ADMIN)
    seeds = Seeds(store, api_settings, api_clock)
    statuses: Counter[tuple[str, str, int]] = Counter()
    for result in schema.get_all_operations():
        op = result.ok()
        raw = document["paths"][op.path][op.method.lower()]
        params = [p["name"] for p in raw.get("parameters", []) if p["in"] == "path"]
        for mode in _modes(raw):
            with subtests.test(msg=f"{op.label} {mode}"):
                pinned: dict[str, Any] = {}
                if mode == "known":
                    found = seeds.path_parameters(op.path, params)
                    if found is None or not (found or (op.method.upper(), op.path) in KNOWN_FIELDS):
                        continue  # nothing known to name: the positive run covered it
                    pinned = found
                generation = GenerationMode.NEGATIVE if mode == "negative" else GenerationMode.POSITIVE
                strategy = op.as_strategy(generation_mode=generation, path_parameters=pinned or None)
                fields = KNOWN_FIELDS.get((op.method.upper(), op.path)) if mode == "known" else None
                _fuzz(strategy, admin, fields, lambda status, m=mode, label=op.label:
                      statuses.update([(label, m, status)]))  # fmt: skip

    print("\n".join(f"{label:45} {mode:9} {status}: {n}"
                    for (label, mode, status), n in sorted(statuses.items())))  # fmt: skip
    # The token was valid throughout: only negative requests (sent without it) may be 401.
    unauthenticated = {k for k in statuses if k[2] == 401 and k[1] != "negative"}
    assert not unauthenticated, unauthenticated
    # Naming existing objects reached the routes' success paths.
    known_reads = {k[0] for k in statuses if k[1] == "known" and k[0].startswith("GET")}
    succeeded = {k[0] for k in statuses if k[1] == "known" and 200 <= k[2] < 300}
    assert known_reads <= succeeded, known_reads - succeeded
