"""Scheduled transfers: one-off money movements at a local date and time.

``scheduled → executing → executed | failed | cancelled``. A transfer can be cancelled or
rescheduled while it is ``scheduled``; once an attempt has started it cannot.

* **Create** is idempotent by the caller's ``request_key`` (the API's ``Idempotency-Key``):
  the same key with the same body returns the same transfer, with another body it raises
  :class:`~duly.operations.errors.IdempotencyConflict` and changes nothing.
* The transfer's own ``transfer_key`` is the bank's idempotency key; it never changes,
  whatever happens to the runs. Attempt 1 of version 1 runs under an engine run whose
  idempotency key *is* the ``transfer_key``; a reschedule bumps the version, cancels the old
  run and enqueues ``<transfer_key>:v<version>:a1``; retries are ``…:a<n>``.
* The execution date is the local date moved by the business-day convention against the
  rail's calendar; the instant is the local time on that date in the customer's timezone.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from duly.audit import AuditEntry, changes, record
from duly.banking.money import MoneyError, check_currency, to_minor
from duly.banking.schema import accounts, customers
from duly.engine.client import EngineClient
from duly.engine.store.base import NewRun
from duly.operations.auditing import money_terms, safe_key
from duly.operations.banks import BankDirectory, default_banks
from duly.operations.errors import IdempotencyConflict, InvalidRequest, NotFound, StateConflict
from duly.operations.execution.outcomes import set_state
from duly.operations.execution.runs import cancel_run, ensure_run
from duly.operations.localtime import execution_date, execution_instant, parse_time_of_day, zone
from duly.operations.outbox import emit, outbox
from duly.operations.transfers.execution import TRANSFERS, load_target, transfer_target
from duly.operations.transfers.models import (
    TRANSFER_JOB,
    NewTransfer,
    TransferRow,
    scheduled_transfers,
    transfer_row,
)
from duly.timing.business_days import parse_convention
from duly.timing.errors import SpecError

__all__ = ["ScheduledTransfers"]

_T = scheduled_transfers


# -- the service ----------------------------------------------------------------------


class ScheduledTransfers:
    """Create, read, cancel and reschedule scheduled transfers.

    :param client: the engine (its store, clock and a registry with ``transfers.execute``).
    """

    def __init__(self, client: EngineClient, banks: BankDirectory = default_banks) -> None:
        self.client = client
        self.store = client.store
        self.engine = client.store.engine
        self.clock = client.clock
        self.banks = banks

    def create(self, new: NewTransfer) -> tuple[TransferRow, bool]:
        """Schedule ``new``; returns the transfer and whether this call created it.

        :raises InvalidRequest: a field is wrong, or the execution time has passed.
        :raises IdempotencyConflict: ``request_key`` was used with a different body.
        """
        body = self._normalise(new)
        digest = _digest(body)
        now = self.clock.now()
        exec_date = execution_date(body["local_date_"], body["convention"], body["calendar"])
        execute_at = execution_instant(exec_date, body["local_time"], body["timezone"])
        insert = pg_insert if self.store.is_postgres else sqlite_insert
        # One transaction reads the key, checks the accounts, writes the transfer and its
        # event; the run follows in the store's own transaction (ensure_run).
        with self.engine.begin() as conn:
            existing = conn.execute(
                select(_T).where(_T.c.request_key == new.request_key)
            ).one_or_none()
            if existing is None:
                if execute_at < now:
                    raise InvalidRequest(
                        f"the execution time {execute_at.isoformat()} has passed; choose a later "
                        "date or time"
                    )
                customer_id = self._owner(conn, new, body)
                created = conn.execute(
                    insert(_T)
                    .values(
                        request_key=new.request_key,
                        request_hash=digest,
                        transfer_key=f"st-{uuid.uuid4().hex}",
                        customer_id=customer_id,
                        bank=body["bank"],
                        from_account=body["from_account"],
                        to_account=body["to_account"],
                        amount_minor=body["amount_minor"],
                        currency=body["currency"],
                        memo=body["memo"],
                        local_date=body["local_date_"],
                        local_time=body["local_time"],
                        timezone=body["timezone"],
                        convention=body["convention"],
                        calendar=body["calendar"],
                        execution_date=exec_date,
                        execute_at=execute_at,
                        next_attempt_at=execute_at,
                        status="scheduled",
                        max_attempts=new.policy.max_attempts,
                        retry_every_seconds=int(new.policy.retry_every.total_seconds()),
                        retry_window_seconds=int(new.policy.retry_window.total_seconds()),
                        created_at=now,
                        updated_at=now,
                    )
                    .on_conflict_do_nothing()
                    .returning(*_T.c)
                ).one_or_none()
                if created is not None:
                    emit(
                        conn,
                        event_type="transfer.scheduled",
                        aggregate="transfer",
                        aggregate_id=created.id,
                        dedupe_key=f"transfer:{created.id}:scheduled",
                        payload={
                            "status": "scheduled",
                            "customer_id": customer_id,
                            "execute_at": execute_at.isoformat(),
                            "execution_date": exec_date.isoformat(),
                        },
                        now=now,
                    )
                    entry = _created_entry(int(created.id), {**body, "request_key": new.request_key,
                                           "customer_id": customer_id, "execution_date": exec_date,
                                           "execute_at": execute_at})  # fmt: skip
                    record(conn, [entry], now)
        if existing is not None:
            return self._replay(existing, digest), False
        if created is None:  # a concurrent request with the same key won
            raced = self._by_request(new.request_key)
            assert raced is not None
            return self._replay(raced, digest), False
        transfer_id = int(created.id)
        # The row just written is what ensure_run would read back first.
        ensure_run(self.client, TRANSFERS, transfer_id, target=transfer_target(created))
        row = self.get(transfer_id)
        assert row is not None
        return row, True

    def create_many(self, news: Sequence[NewTransfer]) -> list[tuple[int, bool]]:
        """Schedule many transfers at once: ``(transfer id, created)`` per request, in order.

        Each request is validated as by :meth:`create` (and replayed the same way); the new
        ones, their ``transfer.scheduled`` events and their runs are written in chunks, a
        few statements per chunk instead of a few transactions per transfer (bulk imports,
        benchmarks). All requests are checked before anything is written.

        :raises InvalidRequest: a request is wrong (its position is in the message), or a
            request key appears twice; nothing is written.
        :raises IdempotencyConflict: a request key was used with another body; nothing is written.
        """
        bodies: list[dict[str, Any]] = []
        seen: set[str] = set()
        for i, new in enumerate(news):
            try:
                bodies.append(self._normalise(new))
            except InvalidRequest as exc:
                raise InvalidRequest(f"request {i}: {exc}") from None
            if new.request_key in seen:
                raise InvalidRequest(f"request {i}: the key {new.request_key!r} appears twice")
            seen.add(new.request_key)
        digests = [_digest(b) for b in bodies]
        now = self.clock.now()
        insert = pg_insert if self.store.is_postgres else sqlite_insert
        out: dict[str, tuple[int, bool]] = {}
        fresh: list[int] = []
        with self.engine.begin() as conn:
            for chunk in _chunks(list(range(len(news))), 500):
                keys = [news[i].request_key for i in chunk]
                prior = {
                    r.request_key: r
                    for r in conn.execute(select(_T).where(_T.c.request_key.in_(keys))).all()
                }
                ids = {a for i in chunk for a in (news[i].from_account, news[i].to_account)}
                known = {
                    r.id: r for r in conn.execute(select(accounts).where(accounts.c.id.in_(ids)))
                }
                values: list[dict[str, Any]] = []
                for i in chunk:
                    new, body = news[i], bodies[i]
                    row = prior.get(new.request_key)
                    if row is not None:
                        self._replay(row, digests[i])
                        out[new.request_key] = (int(row.id), False)
                        continue
                    try:
                        customer_id = self._owner(conn, new, body, known)
                        exec_date = execution_date(
                            body["local_date_"], body["convention"], body["calendar"]
                        )
                    except InvalidRequest as exc:
                        raise InvalidRequest(f"request {i}: {exc}") from None
                    execute_at = execution_instant(exec_date, body["local_time"], body["timezone"])
                    if execute_at < now:
                        raise InvalidRequest(
                            f"request {i}: the execution time {execute_at.isoformat()} has passed"
                        )
                    values.append(
                        {
                            "request_key": new.request_key,
                            "request_hash": digests[i],
                            "transfer_key": f"st-{uuid.uuid4().hex}",
                            "customer_id": customer_id,
                            "bank": body["bank"],
                            "from_account": body["from_account"],
                            "to_account": body["to_account"],
                            "amount_minor": body["amount_minor"],
                            "currency": body["currency"],
                            "memo": body["memo"],
                            "local_date": body["local_date_"],
                            "local_time": body["local_time"],
                            "timezone": body["timezone"],
                            "convention": body["convention"],
                            "calendar": body["calendar"],
                            "execution_date": exec_date,
                            "execute_at": execute_at,
                            "next_attempt_at": execute_at,
                            "status": "scheduled",
                            "max_attempts": new.policy.max_attempts,
                            "retry_every_seconds": int(new.policy.retry_every.total_seconds()),
                            "retry_window_seconds": int(new.policy.retry_window.total_seconds()),
                            "created_at": now,
                            "updated_at": now,
                        }
                    )
                if not values:
                    continue
                inserted = conn.execute(
                    insert(_T).values(values).returning(_T.c.id, _T.c.request_key, _T.c.customer_id,
                                                        _T.c.execute_at, _T.c.execution_date)
                ).all()  # fmt: skip
                conn.execute(
                    insert(outbox).values([
                        {"event_type": "transfer.scheduled", "aggregate": "transfer",
                         "aggregate_id": str(r.id), "dedupe_key": f"transfer:{r.id}:scheduled",
                         "payload": {"status": "scheduled", "customer_id": r.customer_id,
                                     "execute_at": _aware(r.execute_at).isoformat(),
                                     "execution_date": r.execution_date.isoformat()},
                         "created_at": now}
                        for r in inserted
                    ]).on_conflict_do_nothing()
                )  # fmt: skip
                by_key = {v["request_key"]: v for v in values}
                record(conn, [_created_entry(int(r.id), by_key[r.request_key]) for r in inserted],
                       now)  # fmt: skip
                for r in inserted:
                    out[r.request_key] = (int(r.id), True)
                    fresh.append(int(r.id))
        self._enqueue_many(fresh)
        return [out[n.request_key] for n in news]

    def _enqueue_many(self, ids: list[int]) -> None:
        """Enqueue attempt 1's run of each new transfer in ``ids`` (as :func:`ensure_run` does)."""
        if not ids:
            return
        job = self.client.registry.get(TRANSFER_JOB)
        for chunk in _chunks(ids, 2000):
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(_T.c.id, _T.c.transfer_key, _T.c.next_attempt_at).where(
                        _T.c.id.in_(chunk)
                    )
                ).all()
            run_ids = self.store.run_enqueue_many(
                [
                    NewRun(
                        job_name=job.name,
                        scheduled_for=_aware(r.next_attempt_at),
                        idempotency_key=r.transfer_key,
                        args={"ref_id": int(r.id), "attempt": 1, "version": 1},
                        queue=job.queue,
                        priority=job.priority,
                        max_attempts=job.retry.max_attempts,
                        window_seconds=job.window.total_seconds() if job.window else None,
                        origin=TRANSFERS.name,
                    )
                    for r in rows
                ],
                self.clock.now(),
            )
            with self.engine.begin() as conn:
                conn.execute(
                    update(_T)
                    .where(_T.c.id == bindparam("ref"), _T.c.run_attempt < 1, _T.c.attempts == 0)
                    .values(run_attempt=1, run_id=bindparam("run")),
                    [{"ref": int(r.id), "run": run_ids[r.transfer_key]} for r in rows],
                )

    def get(self, transfer_id: int) -> TransferRow | None:
        """The transfer ``transfer_id``, if any."""
        with self._single_statement() as conn:
            row = conn.execute(select(_T).where(_T.c.id == transfer_id)).one_or_none()
        return transfer_row(row) if row is not None else None

    def find(
        self,
        *,
        customer_id: int | None = None,
        status: str | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[TransferRow]:
        """Transfers by id, optionally one customer's or in one status."""
        conds = [_T.c.id > after_id]
        if customer_id is not None:
            conds.append(_T.c.customer_id == customer_id)
        if status is not None:
            conds.append(_T.c.status == status)
        with self.engine.connect() as conn:
            rows = conn.execute(select(_T).where(*conds).order_by(_T.c.id).limit(limit)).all()
        return [transfer_row(r) for r in rows]

    def cancel(self, transfer_id: int) -> TransferRow:
        """Cancel a transfer that has not started.

        :raises NotFound: no such transfer.
        :raises StateConflict: it is executing or finished.
        """
        now = self.clock.now()
        with self.engine.begin() as conn:
            target = load_target(conn, transfer_id, True)
            if target is None:
                raise NotFound(f"no transfer {transfer_id}")
            if target.status != "scheduled" or target.attempts:
                raise StateConflict(
                    f"transfer {transfer_id} is {target.status}; it can no longer be cancelled"
                )
            set_state(conn, TRANSFERS, target, "cancelled", now, event="cancelled", dedupe="cancelled",
                      cancelled_at=now, next_attempt_at=None)  # fmt: skip
            details = {"status": {"before": target.status, "after": "cancelled"},
                       "execute_at": _aware(target.execute_at), "version": target.version,
                       **money_terms(target.from_account, target.to_account,
                                     target.amount_minor, target.currency)}  # fmt: skip
            record(conn, [AuditEntry("transfer.cancel", "transfer", transfer_id, details)], now)
        cancel_run(self.store, target.run_id, now)
        row = self.get(transfer_id)
        assert row is not None
        return row

    def reschedule(
        self,
        transfer_id: int,
        local_date: date,
        local_time: str | None = None,
        *,
        convention: str | None = None,
        calendar: str | None = None,
    ) -> TransferRow:
        """Move a transfer that has not started to another local date (and time).

        The transfer keeps its ``transfer_key``; its old run is cancelled and a new one
        (next version) is enqueued.

        :raises NotFound: no such transfer.
        :raises StateConflict: it is executing or finished.
        :raises InvalidRequest: the new time is invalid or has passed.
        """
        now = self.clock.now()
        with self.engine.begin() as conn:
            target = load_target(conn, transfer_id, True)
            if target is None:
                raise NotFound(f"no transfer {transfer_id}")
            row = conn.execute(select(_T).where(_T.c.id == transfer_id)).one()
            if row.status != "scheduled" or row.attempts:
                raise StateConflict(
                    f"transfer {transfer_id} is {row.status}; it can no longer be rescheduled"
                )
            new_time = local_time or row.local_time
            new_convention = convention or row.convention
            new_calendar = calendar if calendar is not None else row.calendar
            try:
                parse_time_of_day(new_time)
                new_convention = parse_convention(new_convention).value
                exec_date = execution_date(local_date, new_convention, new_calendar)
            except (ValueError, SpecError) as exc:
                raise InvalidRequest(str(exc)) from None
            execute_at = execution_instant(exec_date, new_time, row.timezone)
            if execute_at < now:
                raise InvalidRequest(f"the execution time {execute_at.isoformat()} has passed")
            version = int(row.version) + 1
            set_state(conn, TRANSFERS, target, "scheduled", now, event="rescheduled",
                      dedupe=f"rescheduled:v{version}",
                      payload={"version": version, "previous_execute_at": row.execute_at.isoformat(),
                               "execute_at": execute_at.isoformat()},
                      version=version, local_date=local_date, local_time=new_time,
                      convention=new_convention, calendar=new_calendar, execution_date=exec_date,
                      execute_at=execute_at, next_attempt_at=execute_at, run_attempt=0,
                      run_id=None)  # fmt: skip
            before = {
                "local_date": row.local_date,
                "local_time": row.local_time,
                "convention": row.convention,
                "calendar": row.calendar,
                "execution_date": row.execution_date,
                "execute_at": _aware(row.execute_at),
                "version": int(row.version),
            }
            after = {
                "local_date": local_date,
                "local_time": new_time,
                "convention": new_convention,
                "calendar": new_calendar,
                "execution_date": exec_date,
                "execute_at": execute_at,
                "version": version,
            }
            entry = AuditEntry(
                "transfer.reschedule", "transfer", transfer_id, changes(before, after)
            )
            record(conn, [entry], now)
        cancel_run(self.store, row.run_id, now)
        ensure_run(self.client, TRANSFERS, transfer_id)
        out = self.get(transfer_id)
        assert out is not None
        return out

    # -- helpers --------------------------------------------------------------------

    def _single_statement(self) -> Connection:
        """A connection for one read: no ``BEGIN``/``ROLLBACK`` round trips around it."""
        return self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def _by_request(self, request_key: str) -> Any:
        with self._single_statement() as conn:
            return conn.execute(select(_T).where(_T.c.request_key == request_key)).one_or_none()

    def _replay(self, row: Any, digest: str) -> TransferRow:
        if row.request_hash != digest:
            raise IdempotencyConflict(
                f"idempotency key {row.request_key!r} was used for a different transfer; nothing changed"
            )
        return transfer_row(row)

    def _normalise(self, new: NewTransfer) -> dict[str, Any]:
        """The request's fields, validated and in one canonical form (hashed for idempotency)."""
        if not new.request_key or len(new.request_key) > 255:
            raise InvalidRequest("the idempotency key must be 1–255 characters")
        try:
            currency = check_currency(new.currency)
            amount_minor = to_minor(new.amount, currency)
            time_of_day = parse_time_of_day(new.local_time).strftime("%H:%M")
            convention = parse_convention(new.convention).value
            execution_date(new.local_date, convention, new.calendar)  # validates the calendar
        except (MoneyError, ValueError, SpecError) as exc:
            raise InvalidRequest(str(exc)) from None
        if amount_minor <= 0:
            raise InvalidRequest("the amount must be greater than zero")
        if new.from_account == new.to_account:
            raise InvalidRequest("the two accounts are the same")
        if new.memo is not None and len(new.memo) > 140:
            raise InvalidRequest("the memo is at most 140 characters")
        if not self.banks.has(new.bank):
            raise InvalidRequest(f"unknown bank {new.bank!r}")
        timezone = new.timezone or self._customer_timezone(new)
        try:
            zone(timezone)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        policy = new.policy
        return {
            "from_account": new.from_account,
            "to_account": new.to_account,
            "amount_minor": amount_minor,
            "currency": currency,
            "local_date": new.local_date.isoformat(),
            "local_date_": new.local_date,
            "local_time": time_of_day,
            "timezone": timezone,
            "convention": convention,
            "calendar": new.calendar,
            "memo": new.memo,
            "customer_id": new.customer_id,
            "bank": new.bank,
            "policy": [
                policy.max_attempts,
                int(policy.retry_every.total_seconds()),
                int(policy.retry_window.total_seconds()),
            ],
        }

    def _customer_timezone(self, new: NewTransfer) -> str:
        with self.engine.connect() as conn:
            customer_id = new.customer_id
            if customer_id is None:
                customer_id = conn.execute(
                    select(accounts.c.customer_id).where(accounts.c.id == new.from_account)
                ).scalar()
            if customer_id is None:
                return "UTC"
            tz = conn.execute(
                select(customers.c.timezone).where(customers.c.id == customer_id)
            ).scalar()
        return str(tz) if tz else "UTC"

    def _owner(
        self,
        conn: Connection,
        new: NewTransfer,
        body: dict[str, Any],
        known: dict[str, Any] | None = None,
    ) -> int | None:
        """The customer the transfer belongs to; checks the ledger's accounts.

        ``known``: account rows already read (by :meth:`create_many`), by id.
        """
        if body["bank"] != "ledger":
            return new.customer_id
        if known is not None:
            rows = known
        else:
            rows = {
                r.id: r
                for r in conn.execute(
                    select(accounts).where(accounts.c.id.in_([new.from_account, new.to_account]))
                ).all()
            }
        for account_id in (new.from_account, new.to_account):
            row = rows.get(account_id)
            if row is None:
                raise InvalidRequest(f"no account ending {account_id[-4:]}")
            if row.status != "open":
                raise InvalidRequest(f"account ending {account_id[-4:]} is closed")
            if row.currency != body["currency"]:
                raise InvalidRequest(f"account ending {account_id[-4:]} holds {row.currency}")
        owner = rows[new.from_account].customer_id
        if new.customer_id is not None and owner is not None and owner != new.customer_id:
            raise InvalidRequest("the debit account does not belong to this customer")
        return new.customer_id if new.customer_id is not None else owner


def _created_entry(transfer_id: int, values: dict[str, Any]) -> AuditEntry:
    """The audit event of a new transfer, from its column values (or its normalised body).

    The idempotency key is kept, its account numbers masked, so an auditor can match the
    event to the request that made it.
    """
    accounts_of = (values["from_account"], values["to_account"])
    details = {
        **money_terms(*accounts_of, values["amount_minor"], values["currency"]),
        "customer_id": values["customer_id"],
        "bank": values["bank"],
        "local_date": values.get("local_date_", values["local_date"]),
        "local_time": values["local_time"],
        "timezone": values["timezone"],
        "convention": values["convention"],
        "calendar": values["calendar"],
        "memo": values["memo"],
        "execution_date": values["execution_date"],
        "execute_at": values["execute_at"],
        "request_key": safe_key(values["request_key"], *accounts_of),
    }
    return AuditEntry("transfer.create", "transfer", transfer_id, details)


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _aware(value: datetime) -> datetime:
    """An instant read back from SQLite (naive, UTC) or PostgreSQL (aware)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _digest(body: dict[str, Any]) -> str:
    canonical = {k: v for k, v in body.items() if not k.endswith("_")}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()
