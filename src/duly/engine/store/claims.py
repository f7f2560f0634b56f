"""Claiming runs: candidates in due order, the per-job and per-key limits, and the leases taken.

PostgreSQL locks candidate rows ``FOR UPDATE SKIP LOCKED`` and serialises the limits with
transaction advisory locks; SQLite has one writer (``BEGIN IMMEDIATE``), so nothing else is needed.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    union_all,
    update,
)

from duly.engine.states import RunStatus
from duly.engine.store.base import ClaimedRun, ClaimParams
from duly.engine.store.dialect import any_of, lock_id, pg_execute
from duly.engine.store.events import run_claimed
from duly.engine.store.plumbing import SqlBase
from duly.engine.store.rows import (
    CLAIMABLE_VALUES,
    IS_CLAIMABLE,
    RUN_FIELDS,
    aware,
    pg_run_row,
    run_row,
)
from duly.engine.store.schema import job_executions, runs

# PostgreSQL: take the leases and add the attempt records in one statement. The columns
# are those of RunRow, in its order (see pg_run_row).
_PG_TAKE_LEASES = (
    "WITH taken AS (UPDATE runs SET status = 'running', attempt = attempt + 1,"
    " fencing_token = fencing_token + 1, lease_owner = :node, lease_expires_at = :expires,"
    " started_at = coalesce(started_at, :now), updated_at = :now"
    # No status guard: the rows were selected claimable FOR UPDATE by this transaction, so
    # they still are; and a guard on status leads the planner to the partial indexes of
    # claimable runs (thousands of entries) instead of the primary key.
    " WHERE id = ANY(CAST(:ids AS bigint[]))"
    f" RETURNING {', '.join(RUN_FIELDS)}),"
    " attempts AS (INSERT INTO job_executions"
    " (job_id, job_name, attempt, fencing_token, node, started_at, status)"
    " SELECT id, job_name, attempt, fencing_token, :node, :now, 'running' FROM taken)"
    f" SELECT {', '.join(RUN_FIELDS)} FROM taken"
)


# PostgreSQL, the common case in one autocommit statement (one round trip): the first
# ``limit`` claimable runs (``pool``), of which runs of slot-taking jobs only up to
# ``slots`` in claim order (``cand``: runs of inline jobs share one slot), taken only if none
# of them is of a limited job or has a serial key (``ok``); otherwise nothing is taken and
# the claim goes the general way (SqlStore._claim_candidates and _filter_by_limits, under
# advisory locks). One row is always returned: ``ok`` and the run's columns (NULL when
# nothing was claimable). One queue: the claim index then yields the runs in claim order
# (``queue = ANY(…)`` sorted every claimable run). Rows of ``pool`` not in ``cand`` are
# free again when the statement (or its transaction) ends.
_PG_CLAIM_TAKE = (
    " cand AS (SELECT id, job_name, serial_key FROM (SELECT id, job_name, serial_key,"
    " count(*) FILTER (WHERE NOT job_name = ANY(CAST(:inline AS text[])))"
    " OVER (ORDER BY priority DESC, not_before, id) AS slots FROM pool) AS p"
    " WHERE job_name = ANY(CAST(:inline AS text[])) OR slots <= :slots),"
    " free AS (SELECT NOT EXISTS (SELECT 1 FROM cand WHERE serial_key IS NOT NULL"
    " OR job_name = ANY(CAST(:limited AS text[]))) AS ok),"
    " taken AS (UPDATE runs SET status = 'running', attempt = attempt + 1,"
    " fencing_token = fencing_token + 1, lease_owner = :node, lease_expires_at = :expires,"
    " started_at = coalesce(started_at, :now), updated_at = :now"
    " FROM cand, free WHERE free.ok AND runs.id = cand.id"
    f" RETURNING {', '.join(f'runs.{name}' for name in RUN_FIELDS)}),"
    " attempts AS (INSERT INTO job_executions"
    " (job_id, job_name, attempt, fencing_token, node, started_at, status)"
    " SELECT id, job_name, attempt, fencing_token, :node, :now, 'running' FROM taken)"
    f" SELECT free.ok, {', '.join(f'taken.{name}' for name in RUN_FIELDS)}"
    " FROM free LEFT JOIN taken ON true"
)


_PG_CLAIM_FAST = (
    "WITH pool AS (SELECT id, job_name, serial_key, priority, not_before FROM runs"
    " WHERE runs.status IN ('queued', 'retrying') AND queue = :queue AND not_before <= :now"
    " ORDER BY priority DESC, not_before, id LIMIT :limit FOR UPDATE SKIP LOCKED)," + _PG_CLAIM_TAKE
)


# The same for a worker that asks for some jobs only (a node with batch jobs claims them
# apart from the rest): the first ``limit`` of each job from ix_runs_claim_job, then the
# first ``limit`` of those. A filter ``job_name = ANY(…)`` over ix_runs_claim read every
# queued run of other jobs (12–20 ms a claim with 50,000 queued), or sorted every run of
# those jobs, as the planner's statistics happened to be; one ordered index range per job
# reads at most ``limit`` rows each, whatever the statistics. Rows locked by a job's range
# but not taken are free again when the statement ends.
_PG_CLAIM_FAST_JOBS = (
    "WITH pool AS (SELECT c.id, c.job_name, c.serial_key, c.priority, c.not_before"
    " FROM unnest(CAST(:jobs AS text[])) AS j(name) CROSS JOIN LATERAL"
    " (SELECT id, job_name, serial_key, priority, not_before FROM runs"
    " WHERE runs.status IN ('queued', 'retrying') AND queue = :queue AND job_name = j.name"
    " AND not_before <= :now ORDER BY priority DESC, not_before, id LIMIT :limit"
    " FOR UPDATE SKIP LOCKED) AS c"
    " ORDER BY c.priority DESC, c.not_before, c.id LIMIT :limit)," + _PG_CLAIM_TAKE
)


#: Look-ahead windows one claim reads at most, past runs held back by limits.
CLAIM_WINDOWS = 8


def _window(limit: int) -> int:
    """Candidates read per window: further than the limit so runs held back by a limit do
    not starve the rest, bounded so a big batch claim does not lock four times its size."""
    return limit + min(limit * 3, 64)


class _HeldBack:
    """What earlier look-ahead windows of one claim passed over, for the next to skip."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.jobs: set[str] = set()
        self.keys: set[str] = set()

    def add(self, candidates: list[Any], chosen: set[int], params: ClaimParams) -> int:
        """Note a window's candidates; return how many were held back by a limit."""
        rejected = [c for c in candidates if c.id not in chosen]
        self.ids += [c.id for c in candidates]
        self.keys |= {c.serial_key for c in rejected if c.serial_key}
        self.jobs |= {
            c.job_name for c in rejected if not c.serial_key and c.job_name in params.job_limits
        }
        return len(rejected)

    def where(self) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        if self.ids:
            out.append(runs.c.id.not_in(self.ids))
        if self.jobs:
            out.append(runs.c.job_name.not_in(sorted(self.jobs)))
        if self.keys:
            out.append(
                or_(runs.c.serial_key.is_(None), runs.c.serial_key.not_in(sorted(self.keys)))
            )
        return out


class ClaimQueries(SqlBase):
    """Claiming runs under their limits."""

    def run_claim(self, params: ClaimParams) -> list[ClaimedRun]:
        """Take up to ``params.limit`` claimable runs under a new lease each.

        Respects per-job limits across nodes and runs serial keys one at a time, in order.
        """
        if params.limit <= 0:
            return []
        if self.is_postgres and len(params.queues) == 1:
            fast = self._claim_fast(params)
            if fast is not None:
                return fast
        with self._write() as conn:
            claimed: list[ClaimedRun] = []
            held = _HeldBack()
            # Runs held back by a limit (a busy serial key, a job at its limit) can fill a
            # whole look-ahead window: the next window skips every run of those keys and
            # jobs, so each job with free capacity makes progress however long the queue in
            # front of it. Leases are taken per window, so later limit checks count them.
            for _ in range(CLAIM_WINDOWS):
                want = self._still_wanted(params, claimed)
                if want is None:
                    break
                candidates = self._claim_candidates(conn, want, held)
                if not candidates:
                    break
                chosen = self._filter_by_limits(conn, candidates, want)
                if chosen:
                    claimed += self._take_leases(conn, chosen, want)
                rejected = held.add(candidates, set(chosen), params)
                full = len(candidates) >= _window(want.limit)
                if len(claimed) >= params.limit or not full or not rejected:
                    break
            self._audit(conn, [run_claimed(c.run) for c in claimed], params.now)
            return claimed

    @staticmethod
    def _still_wanted(params: ClaimParams, claimed: list[ClaimedRun]) -> ClaimParams | None:
        """What is left to claim after ``claimed``; ``None`` if nothing.

        Once the slots are taken, only runs of inline jobs are looked for.
        """
        slots = params.slots - sum(c.run.job_name not in params.inline_jobs for c in claimed)
        want = replace(params, limit=params.limit - len(claimed), slot_limit=max(slots, 0))
        if slots > 0:
            return want
        names = params.inline_jobs if params.job_names is None else (
            params.job_names & params.inline_jobs)
        return replace(want, job_names=names) if names else None

    def _claim_fast(self, params: ClaimParams) -> list[ClaimedRun] | None:
        """PostgreSQL: claim in one statement; ``None`` if a limit or serial key is involved."""
        with self._one_statement() as conn:
            values: dict[str, Any] = {
                "queue": params.queues[0],
                "now": params.now,
                "limit": params.limit,
                "slots": params.slots,
                "inline": sorted(params.inline_jobs),
                "limited": sorted(params.job_limits),
                "node": params.node,
                "expires": params.now + timedelta(seconds=params.lease_seconds),
            }
            sql = _PG_CLAIM_FAST
            if params.job_names is not None:
                sql, values["jobs"] = _PG_CLAIM_FAST_JOBS, sorted(params.job_names)
            rows = pg_execute(conn, sql, values).all()
            if not rows[0][0]:
                return None
            taken = [pg_run_row(row[1:]) for row in rows if row[1] is not None]
            taken.sort(key=lambda r: (-r.priority, r.not_before, r.id))
            self._audit(conn, [run_claimed(r) for r in taken], params.now)
        return [ClaimedRun(r) for r in taken]

    def _claim_candidates(
        self, conn: Connection, params: ClaimParams, held: _HeldBack
    ) -> list[Any]:
        limit = _window(params.limit)
        unseen = held.where()
        if params.job_names is None:
            stmt = self._candidates_query(
                limit, params.now, runs.c.queue.in_(list(params.queues)), *unseen
            )
            return list(conn.execute(stmt).all())
        # Some jobs only: one ordered range of ix_runs_claim_job per queue and job, then the
        # first of those (see _PG_CLAIM_FAST_JOBS for why not ``job_name IN (…)``).
        ranges = [
            select(*self._candidates_query(limit, params.now, runs.c.queue == queue,
                                           runs.c.job_name == job, *unseen)
                   .subquery().c)
            for queue in params.queues
            for job in sorted(params.job_names)
        ]  # fmt: skip
        if not ranges:
            return []
        found = union_all(*ranges).subquery()
        return list(conn.execute(
            select(found.c.id, found.c.job_name, found.c.serial_key, found.c.scheduled_for)
            .order_by(found.c.priority.desc(), found.c.not_before, found.c.id)
            .limit(limit)
        ).all())  # fmt: skip

    def _candidates_query(
        self, limit: int, now: datetime, *where: ColumnElement[bool]
    ) -> Select[Any]:
        """The first ``limit`` claimable runs due now matching ``where``, in claim order."""
        stmt = (
            select(runs.c.id, runs.c.job_name, runs.c.serial_key, runs.c.scheduled_for,
                   runs.c.priority, runs.c.not_before)
            .where(IS_CLAIMABLE, runs.c.not_before <= now, *where)
            .order_by(runs.c.priority.desc(), runs.c.not_before, runs.c.id)
            .limit(limit)
        )  # fmt: skip
        return stmt.with_for_update(skip_locked=True) if self.is_postgres else stmt

    def _filter_by_limits(
        self, conn: Connection, candidates: list[Any], params: ClaimParams
    ) -> list[int]:
        limited_jobs = sorted({c.job_name for c in candidates if c.job_name in params.job_limits})
        serial_keys = sorted({c.serial_key for c in candidates if c.serial_key})
        if self.is_postgres:
            jobs_taken, keys_taken = _lock_limits(conn, limited_jobs, serial_keys)
            candidates = [
                c
                for c in candidates
                if (c.job_name not in params.job_limits or c.job_name in jobs_taken)
                and (not c.serial_key or c.serial_key in keys_taken)
            ]
            limited_jobs = sorted(jobs_taken)
            serial_keys = sorted(keys_taken)
        running: dict[str, int] = {}
        if limited_jobs:
            running = dict(
                conn.execute(
                    select(runs.c.job_name, func.count())
                    .where(
                        runs.c.job_name.in_(limited_jobs), runs.c.status == RunStatus.RUNNING.value
                    )
                    .group_by(runs.c.job_name)
                ).all()
            )
        busy_serial: set[str] = set()
        first_of_key: dict[str, datetime | None] = {}
        if serial_keys:
            busy_serial = set(
                conn.execute(
                    select(runs.c.serial_key).where(
                        runs.c.serial_key.in_(serial_keys), runs.c.status == RunStatus.RUNNING.value
                    )
                ).scalars()
            )
            # A run waiting to retry holds its place: later runs of the key wait for it.
            waiting = conn.execute(
                select(runs.c.serial_key, func.min(runs.c.scheduled_for))
                .where(runs.c.serial_key.in_(serial_keys), runs.c.status.in_(CLAIMABLE_VALUES))
                .group_by(runs.c.serial_key)
            ).all()
            first_of_key = {k: aware(t) for k, t in waiting}
        chosen: list[int] = []
        slots = params.slots
        for cand in candidates:
            if len(chosen) >= params.limit:
                break
            takes_slot = cand.job_name not in params.inline_jobs
            if takes_slot and slots <= 0:
                continue
            limit = params.job_limits.get(cand.job_name)
            if limit is not None and running.get(cand.job_name, 0) >= limit:
                continue
            if cand.serial_key:
                if cand.serial_key in busy_serial:
                    continue
                if aware(cand.scheduled_for) != first_of_key.get(cand.serial_key):
                    continue
                busy_serial.add(cand.serial_key)
            if cand.job_name in params.job_limits:
                running[cand.job_name] = running.get(cand.job_name, 0) + 1
            slots -= takes_slot
            chosen.append(cand.id)
        return chosen

    def _take_leases(
        self, conn: Connection, ids: list[int], params: ClaimParams
    ) -> list[ClaimedRun]:
        expires = params.now + timedelta(seconds=params.lease_seconds)
        order = {run_id: i for i, run_id in enumerate(ids)}
        if self.is_postgres:
            taken = pg_execute(conn, _PG_TAKE_LEASES, {
                "ids": ids, "node": params.node, "expires": expires, "now": params.now,
            }).all()  # fmt: skip
            return [
                ClaimedRun(r) for r in sorted(map(pg_run_row, taken), key=lambda r: order[r.id])
            ]
        rows = conn.execute(
            update(runs)
            .where(
                any_of(runs.c.id, ids, postgres=self.is_postgres),
                runs.c.status.in_(CLAIMABLE_VALUES),
            )
            .values(
                status=RunStatus.RUNNING.value,
                attempt=runs.c.attempt + 1,
                fencing_token=runs.c.fencing_token + 1,
                lease_owner=params.node,
                lease_expires_at=expires,
                started_at=func.coalesce(runs.c.started_at, params.now),
                updated_at=params.now,
            )
            .returning(*runs.c)
        ).all()
        claimed = sorted((run_row(r) for r in rows), key=lambda r: order[r.id])
        if not claimed:
            return []
        # One attempt record per claimed run, copied from the rows just updated (one statement).
        taken = [r.id for r in claimed]
        conn.execute(
            insert(job_executions).from_select(
                ["job_id", "job_name", "attempt", "fencing_token", "node", "started_at", "status"],
                select(
                    runs.c.id,
                    runs.c.job_name,
                    runs.c.attempt,
                    runs.c.fencing_token,
                    literal(params.node, job_executions.c.node.type),
                    literal(params.now, job_executions.c.started_at.type),
                    literal(RunStatus.RUNNING.value, job_executions.c.status.type),
                ).where(runs.c.id.in_(taken)),
            )
        )
        return [ClaimedRun(r) for r in claimed]


_PG_TRY_LOCKS = (
    "SELECT k.key FROM unnest(CAST(:keys AS text[]), CAST(:ids AS bigint[])) AS k(key, id)"
    " WHERE pg_try_advisory_xact_lock(k.id)"
)


def _lock_limits(conn: Connection, jobs: list[str], keys: list[str]) -> tuple[set[str], set[str]]:
    """PostgreSQL: take the advisory locks of limited jobs and serial keys that are free.

    Never waits: a lock held by another claimer, or by a peer frozen or cut off in the
    middle of its claim, only holds back that job's or that key's runs for this pass, while
    every other run is claimed. Waiting would stall each node's claims behind one stopped
    peer for as long as it stays stopped.
    """
    names = [f"job:{j}" for j in jobs] + [f"serial:{k}" for k in keys]
    if not names:
        return set(), set()
    got = set(
        conn.execute(
            text(_PG_TRY_LOCKS), {"keys": names, "ids": [lock_id(n) for n in names]}
        ).scalars()
    )
    return (
        {j for j in jobs if f"job:{j}" in got},
        {k for k in keys if f"serial:{k}" in got},
    )
