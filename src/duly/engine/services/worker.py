"""The worker loop: claims runs under a lease, executes jobs, writes outcomes.

* claims in batches up to free capacity (per-node limit), respecting per-job limits,
  queues and priorities (the store enforces limits across nodes); a slot is taken while a
  job executes, not while its outcome waits to be written (a bounded backlog);
* runs an ``inline`` job (sync, returns at once: ``duly.noop``) on the event loop, all
  claimed runs of it in one task, without a thread hand-off;
* heartbeats extend the leases of in-flight runs and pick up cancel requests;
* an attempt is stopped at its job's timeout (async: cancelled; sync: abandoned in its
  thread, its effects rolled back when it returns) and counted ``JOB_TIMEOUT``; an
  abandoned thread holds its slot and its place under the job's limit until it ends;
* a node told its lease is gone stops the job (``ctx.cancelled``, ``ctx.check_lease()``);
  if it claims the same run again, the new attempt waits for the lost one to end;
* database errors never end the loop: claims back off, heartbeats beat again soon,
  outcomes are retried until written or the lease is provably lost;
* a failure is retried with the job's backoff while attempts remain and the error is
  retryable; after the last, the run is ``failed`` and an alert is raised;
* on stop: no new claims; in-flight runs get ``shutdown_grace_seconds`` to finish, then are
  cancelled and handed back to the queue without losing an attempt, each once its code
  has stopped (its lease kept until then).

Running an attempt's code under its timeout, with the abandoned threads, is in
:mod:`~duly.engine.services.attempts`; how its result becomes an outcome in
:mod:`~duly.engine.services.outcomes`; the batched outcome writes in
:mod:`~duly.engine.services.completions`. The rest stays in this
one module, though long: claiming, starting, finishing and draining share the in-flight table
and the slot counters, which must change together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from duly.clock import WaitTrackingClock
from duly.engine.context import JobContext
from duly.engine.errors import LeaseLost, UnknownJob
from duly.engine.registry import JobDefinition
from duly.engine.services.attempts import JobRunner
from duly.engine.services.base import Env, Service, backoff_seconds
from duly.engine.services.completions import CompletionWriter, log_written
from duly.engine.services.outcomes import (
    Outcome,
    complete_params,
    decide,
    outcome_from,
)
from duly.engine.states import RunStatus
from duly.engine.store.base import ClaimedRun, ClaimParams, CompleteParams, NewAlert, RunRow
from duly.engine.store.plumbing import SqlEffects

__all__ = ["CLAIM_GROWTH", "Outcome", "WorkerService"]

#: How many times ``claim_batch`` one claim may grow to while inline runs keep a backlog.
CLAIM_GROWTH = 16


@dataclass
class _InFlight:
    run: RunRow
    ctx: JobContext
    task: asyncio.Task[None]
    #: earlier attempts of the same run, still alive here, that this one waits for
    earlier: tuple[_InFlight, ...] = ()


class WorkerService(Service):
    """Runs jobs."""

    name = "worker"

    def __init__(self, env: Env) -> None:
        super().__init__(env)
        self.wakeup = env.listen("runs")
        self.in_flight: dict[int, _InFlight] = {}
        #: attempts stopped by a shutdown whose code still runs: leases kept, not handed back
        self.handing_back: dict[int, _InFlight] = {}
        self.completed = 0
        self.last_claimed = 0
        self._heartbeat_clock = WaitTrackingClock(env.clock)
        opts = env.options
        self._claim_threshold = max(1, min(opts.claim_batch, opts.concurrency) // 4)
        self._writer = CompletionWriter(env, self.log)
        self._no_claim_running = asyncio.Event()  # set while no claim query is in flight
        self._no_claim_running.set()
        self._runner = JobRunner(env.clock, self.log, opts.concurrency,
                                 on_thread_ended=self.wakeup.set,
                                 claims_settled=self._no_claim_running.wait)  # fmt: skip
        self._db_failures = 0  # consecutive failed claim passes, for the backoff
        self._batch_jobs = {j.name: j for j in env.registry if j.batch is not None}
        self._batch_cap = opts.max_batch_size
        self._batch_slot_cap = max(1, opts.concurrency // 2)
        self._single_jobs = frozenset(j.name for j in env.registry if j.batch is None)
        self._inline_jobs = {j.name: j for j in env.registry if j.inline}
        self._inline_names = frozenset(self._inline_jobs)
        #: Runs one claim may take: ``claim_batch``, doubled after each full claim up to
        #: :data:`CLAIM_GROWTH` times it while runs of inline jobs keep a backlog (they take
        #: one slot for all), back to ``claim_batch`` once a claim comes back short.
        self._claim_limit = opts.claim_batch
        #: When the next run of a batch job falls due, as of the last look; ``None``: unknown.
        self._batch_due_at: datetime | None = None
        self._busy = 0  # slots whose job is executing (a run, or a batch of runs)
        self._batch_busy = 0  # of which batches of batch jobs
        self._writing = 0  # runs whose job returned and whose outcome is being written
        # Runs waiting for their outcome to be written hold no slot, but a node whose writes
        # fall behind stops claiming rather than piling them up.
        self._writing_cap = 2 * max(opts.concurrency, opts.claim_batch)

    @property
    def slots_in_use(self) -> int:
        """Concurrency slots taken: one per executing run, batch of runs, or task of inline runs.

        A run whose job has returned frees its slot while its outcome is written (it stays
        in :attr:`in_flight`, its lease extended, until written).
        """
        return self._busy

    @property
    def batch_slots_in_use(self) -> int:
        """Slots taken by executing batches of batch jobs."""
        return self._batch_busy

    @property
    def heartbeat_idle(self) -> bool:
        """Whether the heartbeat loop is waiting for its next beat (not beating now)."""
        return self._heartbeat_clock.waiting

    # -- main loop ------------------------------------------------------------------

    async def run(self) -> None:
        """Claim and execute until stopped, then drain.

        Database errors do not end it: a failed claim pass is retried with a backoff, the
        heartbeat keeps beating, outcomes are written once the database answers again. If it
        ends anyway (a bug), the node restarts it, and it starts over with a new thread pool.
        """
        self._runner.open()
        heartbeat = asyncio.create_task(self._heartbeat_loop(), name="duly-heartbeat")
        completer = asyncio.create_task(self._writer.run(), name="duly-completer")
        try:
            await self._claim_loop()
        finally:
            await self._drain()
            heartbeat.cancel()
            completer.cancel()
            await asyncio.gather(heartbeat, completer, return_exceptions=True)
            self._runner.close()

    async def _claim_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                await self._claim_pass()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: claim again later
                self._db_failures += 1
                delay = backoff_seconds(self._db_failures)
                self.log.warning("worker.claim_failed", error=_error_text(exc),
                                 failures=self._db_failures, retry_in_s=delay)  # fmt: skip
                self._mark_pass()
                wake = self.env.clock.now() + timedelta(seconds=delay)
                await self.env.clock.sleep_until(wake, self.stopping)
            else:
                self._db_failures = 0

    async def _claim_pass(self) -> None:
        """Claim what capacity allows and start it; then wait for a wake-up or the next due run."""
        opts = self.env.options
        self.wakeup.clear()
        self._begin_pass()
        free = opts.concurrency - self._busy - self.abandoned_threads
        # A busy node claims in batches: one transaction for many runs instead of one
        # per freed slot. An idle node claims at once, for low latency.
        may_claim = (
            free > 0
            and (not self._busy or free >= self._claim_threshold)
            and self._writing < max(self._writing_cap, 2 * self._claim_limit)
        )
        claimed: list[ClaimedRun] = []
        params = self._claim_params(free)
        full = False
        if (may_claim and self._batch_jobs and self.batch_slots_in_use < self._batch_slot_cap
                and self._batch_runs_may_be_due()):  # fmt: skip
            # Batch jobs first (up to a whole batch for one slot), in at most half the
            # slots: a flood of transfers never keeps other jobs waiting.
            batch_params = self._batch_claim_params(params)
            claimed = await self._claim(batch_params)
            full = len(claimed) >= batch_params.limit
            free -= self._start_batches(claimed)
            params = self._claim_params(free)  # afresh: a thread may have been abandoned since
        if may_claim and free > 0:
            single = await self._claim(params)
            self._start_singles(single)
            self._adapt_claim_limit(len(single) >= params.limit)
            full = full or len(single) >= params.limit
            claimed += single
        self.last_claimed = len(claimed)
        if claimed:
            self._log_claimed(claimed, params.now)
        self._mark_pass()
        if claimed and full:
            await asyncio.sleep(0)  # let the new tasks start before claiming more
            return
        wake = await self._next_wake(free if may_claim else 0, params.now)
        if not await self.env.clock.sleep_until(wake, self.wakeup):
            self._batch_due_at = None  # woken: runs of batch jobs may have been added

    def _batch_runs_may_be_due(self) -> bool:
        """Whether a claim pass should ask for runs of batch jobs.

        After sleeping until a known run fell due (no wake-up came), runs of batch jobs
        are asked for only if one of them was due by then: the run's claim is then one
        statement, not two. Any wake-up makes it unknown again.
        """
        due = self._batch_due_at
        return due is None or due <= self.env.clock.now()

    async def _claim(self, params: ClaimParams) -> list[ClaimedRun]:
        self._no_claim_running.clear()
        try:
            return await self.env.db(self.env.store.run_claim, params)
        finally:
            self._no_claim_running.set()

    def _adapt_claim_limit(self, full: bool) -> None:
        opts = self.env.options
        grown = min(self._claim_limit * 2, opts.claim_batch * CLAIM_GROWTH)
        self._claim_limit = grown if full else opts.claim_batch

    def _claim_params(self, free: int) -> ClaimParams:
        opts = self.env.options
        slots = min(free, opts.claim_batch)
        return ClaimParams(
            node=opts.node_name,
            queues=opts.queues,
            # Runs of inline jobs share one slot: with any registered, a claim may take
            # more runs than there are free slots, those of other jobs at most ``slots``.
            limit=max(slots, self._claim_limit) if self._inline_names else slots,
            slot_limit=slots,
            inline_jobs=self._inline_names,
            now=self.env.clock.now(),
            lease_seconds=opts.lease_seconds,
            # A job's abandoned threads still run it: they count against its limit.
            job_limits={
                j.name: j.max_concurrency - self._runner.abandoned[j.name]
                for j in self.env.registry
                if j.max_concurrency is not None
            },
            # runs of batch jobs are claimed apart, as batches (see _batch_claim_params)
            job_names=self._single_jobs - self._runner.saturated(self.env.registry),
        )

    def _batch_claim_params(self, params: ClaimParams) -> ClaimParams:
        size = max(self._batch_size(j) for j in self._batch_jobs.values())
        names = frozenset(self._batch_jobs) - self._runner.saturated(self.env.registry)
        return replace(params, limit=size, job_names=names)

    def _batch_size(self, job: JobDefinition) -> int:
        cap = self._batch_cap
        return job.batch_size if cap is None else max(1, min(job.batch_size, cap))

    def _start_batches(self, claimed: list[ClaimedRun]) -> int:
        """Start claimed runs of batch jobs, a task per job's batch; return the slots taken."""
        by_job: dict[str, list[ClaimedRun]] = {}
        for item in claimed:
            by_job.setdefault(item.run.job_name, []).append(item)
        slots = 0
        for name, items in by_job.items():
            size = self._batch_size(self._batch_jobs[name])
            for start in range(0, len(items), size):
                self._start_batch(self._batch_jobs[name], items[start : start + size])
                slots += 1
        return slots

    def _start_singles(self, claimed: list[ClaimedRun]) -> None:
        """Start claimed runs: a task each, or one task for all runs of inline jobs."""
        inline: list[tuple[RunRow, JobContext, JobDefinition]] = []
        clock: WaitTrackingClock | None = None
        for item in claimed:
            run = item.run
            job = self._inline_jobs.get(run.job_name)
            if job is None:
                self._start(item)
                continue
            clock = clock or WaitTrackingClock(self.env.clock)
            inline.append((run, self._context(run, self.env.store.effects_begin(), clock), job))
        if inline:
            self._busy += 1  # one after the other on the loop: one slot for all
            earlier = self._supersede([run for run, _, _ in inline])
            task = asyncio.create_task(
                self._execute_inline(inline, earlier),
                name=f"duly-inline-{inline[0][0].id}",
            )
            for run, ctx, _ in inline:
                self.in_flight[run.id] = _InFlight(run, ctx, task, earlier)

    def _log_claimed(self, claimed: list[ClaimedRun], claimed_at: datetime) -> None:
        """One line per claim: how many runs of which jobs, and how late the latest first try."""
        jobs: dict[str, int] = {}
        late = 0.0
        for item in claimed:
            run = item.run
            jobs[run.job_name] = jobs.get(run.job_name, 0) + 1
            if run.attempt <= 1:
                late = max(late, (claimed_at - run.scheduled_for).total_seconds())
        self.log.info("runs.claimed", count=len(claimed), jobs=jobs,
                      max_lateness_ms=int(late * 1000))  # fmt: skip

    async def _next_wake(self, free: int, claimed_at: datetime) -> datetime:
        now = self.env.clock.now()
        idle = now + timedelta(seconds=self.env.options.max_idle_seconds)
        self._batch_due_at = None
        if free <= 0:
            return idle
        nxt, batch_due = await self.env.db(
            self.env.store.run_next_claimable_for, self.env.options.queues, self._batch_jobs
        )
        # A run already due when we claimed and still not claimed is held back by a limit:
        # wait for a wake-up or idle. One that fell due since is claimed at once.
        if nxt is None or nxt <= claimed_at or nxt >= idle:
            return idle
        # Waking for ``nxt``, the pass knows whether a batch job's run is due by then.
        self._batch_due_at = batch_due or nxt + timedelta(days=1)
        return nxt

    def _context(
        self, run: RunRow, effects: SqlEffects, clock: WaitTrackingClock | None = None
    ) -> JobContext:
        return JobContext(
            run_id=run.id,
            job_name=run.job_name,
            scheduled_for=run.scheduled_for,
            attempt=run.attempt,
            max_attempts=run.max_attempts,
            idempotency_key=run.idempotency_key,
            args=dict(run.args or {}),
            clock=clock or WaitTrackingClock(self.env.clock),
            fencing_token=run.fencing_token,
            node=self.env.options.node_name,
            _store=self.env.store,
            _effects=effects,
        )

    def _start(self, item: ClaimedRun) -> None:
        run = item.run
        ctx = self._context(run, self.env.store.effects_begin())
        self._busy += 1
        earlier = self._supersede([run])
        task = asyncio.create_task(self._execute(run, ctx, earlier), name=f"duly-run-{run.id}")
        self.in_flight[run.id] = _InFlight(run, ctx, task, earlier)

    def _supersede(self, runs: list[RunRow]) -> tuple[_InFlight, ...]:
        """Earlier attempts of ``runs`` still alive on this node, told to stop.

        This node claimed the run again, so that attempt's lease ran out (the node was
        paused, or the database away): its outcome cannot count any more. The new attempt
        waits for it to end, so one run never executes twice at once on one node, and its
        cleanup never removes the new attempt from :attr:`in_flight`.
        """
        stopped: list[_InFlight] = []
        for run in runs:
            earlier = self.in_flight.get(run.id)
            if earlier is None or earlier.task.done():
                continue
            self.log.warning("run.claimed_beside_lost_attempt", run_id=run.id, job=run.job_name,
                             lost_attempt=earlier.run.attempt, attempt=run.attempt,
                             action="stopping the lost attempt; the new one waits for it")  # fmt: skip
            earlier.ctx._lease_lost = True
            earlier.ctx._cancel.set()
            stopped.append(earlier)
        return tuple(stopped)

    @staticmethod
    async def _wait_for(earlier: tuple[_InFlight, ...]) -> None:
        if earlier:
            await asyncio.wait({flight.task for flight in earlier})

    def _forget(self, run_id: int, ctx: JobContext) -> None:
        """Remove an attempt from :attr:`in_flight`, unless a newer attempt took its place."""
        flight = self.in_flight.get(run_id)
        if flight is not None and flight.ctx is ctx:
            del self.in_flight[run_id]

    def _start_batch(self, job: JobDefinition, items: list[ClaimedRun]) -> None:
        effects = self.env.store.effects_begin()  # shared: the batch commits as one
        clock = WaitTrackingClock(self.env.clock)  # one thread: waiting is the batch's state
        flights = [(item.run, self._context(item.run, effects, clock)) for item in items]
        self._busy += 1
        self._batch_busy += 1
        earlier = self._supersede([run for run, _ in flights])
        task = asyncio.create_task(
            self._execute_batch(job, flights, effects, earlier),
            name=f"duly-batch-{items[0].run.id}",
        )
        for run, ctx in flights:
            self.in_flight[run.id] = _InFlight(run, ctx, task, earlier)

    # -- one attempt ----------------------------------------------------------------

    def _started(self, run: RunRow, started: datetime) -> None:
        self.log.debug(
            "run.started",
            run_id=run.id,
            job=run.job_name,
            attempt=run.attempt,
            scheduled_for=run.scheduled_for.isoformat(),
            lateness_ms=int((started - run.scheduled_for).total_seconds() * 1000),
        )
        self._hook(self.env.options.on_run_started, run, started)

    async def _execute(self, run: RunRow, ctx: JobContext, earlier: tuple[_InFlight, ...]) -> None:
        executing = True
        try:
            await self._wait_for(earlier)
            started = self.env.clock.now()
            self._started(run, started)
            job: JobDefinition | None = None
            try:
                job = self.env.registry.get(run.job_name)
            except UnknownJob as exc:
                outcome = Outcome(
                    RunStatus.FAILED, code="UNKNOWN_JOB", message=str(exc), retryable=False
                )
            else:
                outcome = await self._runner.attempt(job, ctx)
                await ctx._progress_flushed()
            executing = False
            self._returned(1)
            await self._finish([(run, ctx, job, outcome, started)])
        except asyncio.CancelledError:
            raise
        except Exception:  # the loop must survive anything
            self.log.exception("run.finish_failed", run_id=run.id)
        finally:
            if executing:
                self._returned(1)
            self._written(1)
            self._forget(run.id, ctx)
            self.completed += 1
            self.wakeup.set()

    def _returned(self, runs: int, *, batch: bool = False, slots: int | None = None) -> None:
        """A job (or a batch) returned: its slot is free, its outcome is to be written.

        ``slots``: those it held, if not one per run (a batch: one).
        """
        self._busy -= slots if slots is not None else 1 if batch else runs
        self._batch_busy -= 1 if batch else 0
        self._writing += runs
        self.wakeup.set()

    def _written(self, runs: int) -> None:
        self._writing -= runs

    async def _execute_inline(
        self,
        flights: list[tuple[RunRow, JobContext, JobDefinition]],
        earlier: tuple[_InFlight, ...],
    ) -> None:
        """Run claimed runs of inline jobs one after the other on the loop; write them together."""
        done: list[tuple[RunRow, JobContext, JobDefinition | None, Outcome, datetime]] = []
        executing = True
        try:
            await self._wait_for(earlier)
            for run, ctx, job in flights:
                started = self.env.clock.now()
                self._started(run, started)
                try:
                    value: Any = job.func(ctx)
                except Exception as exc:
                    outcome = outcome_from(None, exc, ctx)
                else:
                    outcome = outcome_from(value, None, ctx)
                done.append((run, ctx, job, outcome, started))
            executing = False
            self._returned(len(done), batch=False, slots=1)
            await self._finish(done)
        except asyncio.CancelledError:
            raise
        except Exception:  # the loop must survive anything
            self.log.exception("run.finish_failed", run_ids=[run.id for run, _, _ in flights])
        finally:
            if executing:
                self._returned(len(done), batch=False, slots=1)
            self._written(len(done))
            for run, ctx, _ in flights:
                self._forget(run.id, ctx)
            self.completed += len(flights)
            self.wakeup.set()

    @property
    def abandoned_threads(self) -> int:
        """Threads of timed-out sync attempts still running: they hold slots until they end."""
        return self._runner.abandoned_threads

    async def _execute_batch(
        self,
        job: JobDefinition,
        flights: list[tuple[RunRow, JobContext]],
        effects: SqlEffects,
        earlier: tuple[_InFlight, ...],
    ) -> None:
        executing = True
        try:
            await self._wait_for(earlier)
            started = self.env.clock.now()
            for run, _ in flights:
                self._started(run, started)
            outcomes = await self._runner.attempt_batch(job, [ctx for _, ctx in flights], effects)
            executing = False
            self._returned(len(flights), batch=True)
            await self._finish_batch(job, flights, outcomes, effects, started)
        except asyncio.CancelledError:
            raise
        except Exception:  # the loop must survive anything
            self.log.exception("batch.finish_failed", job=job.name, runs=len(flights))
        finally:
            if executing:
                self._returned(len(flights), batch=True)
            self._written(len(flights))
            for run, ctx in flights:
                self._forget(run.id, ctx)
            self.completed += len(flights)
            self.wakeup.set()

    async def _finish_batch(
        self,
        job: JobDefinition,
        flights: list[tuple[RunRow, JobContext]],
        outcomes: list[Outcome],
        effects: SqlEffects,
        started: datetime,
    ) -> None:
        now = self.env.clock.now()
        decided = [decide(run, job, o, now) for (run, _), o in zip(flights, outcomes, strict=True)]
        params = [
            complete_params(run, outcome, status, not_before, now, started)
            for (run, _), outcome, (status, not_before) in zip(
                flights, outcomes, decided, strict=True
            )
        ]
        abandoned = any(o.abandoned for o in outcomes)
        kept = (
            effects.opened
            and not abandoned
            and any(status is RunStatus.SUCCEEDED for status, _ in decided)
        )
        if kept:
            try:
                written = await self.env.db(self.env.store.run_complete_batch, params, effects)
            except Exception as exc:
                for run, _ in flights:
                    await self._effects_not_committed(run, effects, exc)
                return
            if not all(written):  # a lease was lost: nothing was kept; hand the rest back
                await self._hand_back_batch(flights, written)
                return
        else:
            if not abandoned:
                await self.env.db(effects.rollback)
            written = list(await asyncio.gather(*(self._writer.write_one(p) for p in params)))
        for (run, _), outcome, p, ok in zip(flights, outcomes, params, written, strict=True):
            if ok:
                self._completed(run, outcome, p, started)
            else:
                self._lease_lost(run, p.status)
        log_written(self.log, "batch.completed", params, written, job=job.name)

    async def _hand_back_batch(
        self, flights: list[tuple[RunRow, JobContext]], held: list[bool]
    ) -> None:
        for (run, _), still_mine in zip(flights, held, strict=True):
            if still_mine:
                await self.env.db(self.env.store.run_hand_back, run.id, run.fencing_token,
                                  run.attempt, self.env.clock.now())  # fmt: skip
                self.log.warning("run.handed_back", run_id=run.id, job=run.job_name,
                                 reason="another run of its batch lost its lease")  # fmt: skip
            else:
                self._lease_lost(run, RunStatus.RUNNING)

    async def _finish(
        self,
        done: list[tuple[RunRow, JobContext, JobDefinition | None, Outcome, datetime]],
    ) -> None:
        """Write the outcomes of attempts that ended: with their effects one by one, the
        others together with whatever else is waiting to be written."""
        now = self.env.clock.now()
        queued: list[tuple[RunRow, Outcome, CompleteParams, datetime]] = []
        for run, ctx, job, outcome, started in done:
            effects = ctx._effects
            status, not_before = decide(run, job, outcome, now)
            params = complete_params(run, outcome, status, not_before, now, started)
            if effects is not None and effects.opened:
                if status is RunStatus.SUCCEEDED:
                    try:
                        await self.env.db(self.env.store.run_complete, params, effects)
                    except LeaseLost:
                        self._lease_lost(run, status)
                    except Exception as exc:
                        await self._effects_not_committed(run, effects, exc)
                    else:
                        self._completed(run, outcome, params, started)
                    continue
                if not outcome.abandoned:
                    await self.env.db(effects.rollback)
            queued.append((run, outcome, params, started))
        if not queued:
            return
        written = await self._writer.write([params for _, _, params, _ in queued])
        for (run, outcome, params, started), ok in zip(queued, written, strict=True):
            if ok:
                self._completed(run, outcome, params, started)
            else:
                self._lease_lost(run, params.status)

    async def _effects_not_committed(
        self, run: RunRow, effects: SqlEffects, exc: Exception
    ) -> None:
        """The completion with the job's effects failed (the database went away): nothing of
        the attempt was kept, so the run goes back to the queue now, without losing an
        attempt, rather than waiting for its lease to run out. The hand-back is fenced: if the
        commit did go through before the error, it changes nothing."""
        self.log.warning("run.complete_failed", run_id=run.id, job=run.job_name,
                         error=_error_text(exc), action="handing the run back")  # fmt: skip
        await self.env.db(effects.rollback)
        handed = await self._retrying(
            "run.hand_back", self.env.store.run_hand_back,
            run.id, run.fencing_token, run.attempt, self.env.clock.now(),
        )  # fmt: skip
        if handed:
            self.log.warning("run.handed_back", run_id=run.id, job=run.job_name,
                             reason="its outcome could not be written")  # fmt: skip

    async def _retrying(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Call ``fn`` on the database until it answers (a bounded backoff between tries)."""
        failures = 0
        while True:
            try:
                return await self.env.db(fn, *args)
            except (asyncio.CancelledError, LeaseLost):
                raise
            except Exception as exc:
                failures += 1
                delay = backoff_seconds(failures)
                self.log.warning("worker.write_failed", what=what, error=_error_text(exc),
                                 failures=failures, retry_in_s=delay)  # fmt: skip
                await self.env.clock.sleep(delay)

    def _lease_lost(self, run: RunRow, status: RunStatus) -> None:
        self.log.warning("run.lease_lost", run_id=run.id, job=run.job_name,
                         attempt=run.attempt, outcome=status.value)  # fmt: skip

    def _completed(
        self, run: RunRow, outcome: Outcome, params: CompleteParams, started: datetime
    ) -> None:
        """Log a written outcome, tell the observers, and alert on a final failure."""
        status, now, not_before = params.status, params.now, params.not_before
        # Per run at debug for a success (the writes are summed up per batch at info);
        # anything else is what an operator looks for, one line each.
        (self.log.debug if status is RunStatus.SUCCEEDED else self.log.info)(
            "run.completed",
            run_id=run.id,
            job=run.job_name,
            attempt=run.attempt,
            status=status.value,
            error_code=outcome.code,
            duration_ms=int((now - started).total_seconds() * 1000),
            retry_at=not_before.isoformat() if not_before is not None else None,
        )
        self._hook(self.env.options.on_run_finished, run, status.value, now)
        if status is RunStatus.FAILED:
            self.env.alerts.raise_alert(
                NewAlert(
                    dedupe_key=f"run.failed:{run.job_name}:{run.id}",
                    rule="run.failed",
                    severity="high",
                    title=f"{run.job_name} run {run.id} failed after {run.attempt} attempt(s): "
                    f"{outcome.code}",
                    now=now,
                    details={
                        "error_code": outcome.code,
                        "error_message": outcome.message,
                        "attempts": run.attempt,
                        "scheduled_for": run.scheduled_for.isoformat(),
                    },
                    run_id=run.id,
                    job_name=run.job_name,
                )
            )

    def _hook(self, hook: Callable[..., None] | None, *args: Any) -> None:
        """Call an observer hook of the options (metrics); its failure never affects a run."""
        if hook is None:
            return
        try:
            hook(*args)
        except Exception:
            self.log.exception("run.hook_failed")

    # -- leases -----------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        opts = self.env.options
        failures = 0
        while True:
            # After a failed beat, beat again soon: the leases run out while the database is away.
            wait = opts.heartbeat_seconds if not failures else min(opts.heartbeat_seconds, 1.0)
            await self._heartbeat_clock.sleep(wait)
            try:
                await self.heartbeat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self.log.warning("worker.heartbeat_failed", error=_error_text(exc),
                                 failures=failures, in_flight=len(self.in_flight))  # fmt: skip
            else:
                failures = 0

    async def heartbeat(self) -> None:
        """Extend the leases of in-flight runs; pass on operators' cancel requests."""
        opts = self.env.options
        now = self.env.clock.now()
        await self.env.db(self.env.store.node_heartbeat, opts.node_name, now)
        ids = [*self.in_flight, *self.handing_back]
        if not ids:
            return
        expires = now + timedelta(seconds=opts.lease_seconds)
        flights = {**self.handing_back, **self.in_flight}
        leases = {i: flights[i].run.fencing_token for i in ids if i in flights}
        renewal = await self.env.db(
            self.env.store.lease_extend, opts.node_name, leases, expires, now
        )
        for run_id in renewal.cancel:
            flight = self.in_flight.get(run_id)
            if flight is not None and not flight.ctx.cancelled:
                self.log.info("run.cancel_requested", run_id=run_id)
                flight.ctx._cancel.set()
        for run_id in renewal.lost:
            flight = self.in_flight.get(run_id)
            if flight is not None and not flight.ctx.lease_lost:
                # Another node may be running it now: stop ours, its outcome will not count.
                self.log.warning("run.lease_lost_while_running", run_id=run_id,
                                 job=flight.run.job_name, attempt=flight.run.attempt,
                                 action="stopping the job")  # fmt: skip
                flight.ctx._lease_lost = True
                flight.ctx._cancel.set()

    # -- shutdown ---------------------------------------------------------------------

    async def _drain(self) -> None:
        if not self.in_flight:
            return
        grace = timedelta(seconds=self.env.options.shutdown_grace_seconds)
        self.log.info(
            "worker.draining", in_flight=len(self.in_flight), grace_s=grace.total_seconds()
        )
        tasks = list({id(f.task): f.task for f in self.in_flight.values()}.values())
        deadline = asyncio.ensure_future(self.env.clock.sleep_until(self.env.clock.now() + grace))
        try:
            await asyncio.wait({*tasks, deadline}, return_when=asyncio.FIRST_COMPLETED)
            while any(not t.done() for t in tasks) and not deadline.done():
                await asyncio.wait(
                    {*[t for t in tasks if not t.done()], deadline},
                    return_when=asyncio.FIRST_COMPLETED,
                )
        finally:
            deadline.cancel()
        left = list(self.in_flight.values())
        # Their leases are kept (the heartbeat beats until the drain ends) until their code
        # has stopped: a run handed back while its code still runs would run twice at once.
        self.handing_back = {flight.run.id: flight for flight in left}
        for flight in left:
            flight.ctx._cancel.set()
            flight.task.cancel()
        await asyncio.gather(*{id(f.task): f.task for f in left}.values(), return_exceptions=True)
        await self._until_code_stopped(left)
        for flight in left:
            await self._retrying(
                "run.hand_back",
                self.env.store.run_hand_back,
                flight.run.id,
                flight.run.fencing_token,
                flight.run.attempt,
                self.env.clock.now(),
            )
            self.log.warning("run.handed_back", run_id=flight.run.id, job=flight.run.job_name)
        self.handing_back = {}

    async def _until_code_stopped(self, flights: list[_InFlight]) -> None:
        """Wait until the code of each attempt stopped: a sync job's thread has returned, an
        async job that ignored its cancellation has ended. Python cannot stop them; a job
        that never looks at ``ctx.cancelled`` keeps the node here until it ends (or the
        process is killed, and its leases run out)."""
        while running := [f for f in flights if f.ctx._code is not None and not f.ctx._code.done()]:
            self.log.warning("worker.waiting_for_code_to_stop", run_ids=[f.run.id for f in running],
                             action="keeping their leases; handing them back once stopped")  # fmt: skip
            tick = asyncio.ensure_future(self.env.clock.sleep(10))
            codes = {asyncio.wrap_future(f.ctx._code) for f in running}
            try:
                await asyncio.wait({*codes, tick}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                tick.cancel()


def _error_text(exc: BaseException) -> str:
    """One line about a database error, for the log (no statement parameters)."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]

