"""ACH returns of executed transfers, and their reinitiation under Nacha's limits.

A debit that settled can come back days later with a return code (finance-rules.md §4,
checklist 21). :meth:`AchReturns.record` takes that report for an ``executed`` transfer:

1. the return is stored (``payment_returns``, one per transfer; the same report again
   changes nothing, another code for the same transfer is refused);
2. with the built-in ledger the posting is reversed (the money goes back; the original
   posting stays, corrections are reversing transfers); an external bank reports returns
   it has already booked;
3. :func:`~duly.operations.policy.ach_reinitiation` decides, counting the reinitiations
   already made of the *original* presentment: ``R01``/``R09`` at most 2 within 180 days of
   the original settlement, ``R08`` only with a new authorisation, never ``R07`` or any
   other code;
4. a reinitiation is a new scheduled transfer with the same accounts, amount, currency,
   bank, memo and policy, on the next business day after the return at the original local
   time (so the customer's reminders and the usual execution apply), linked to the chain;
5. a refusal writes one customer notification (template ``payment_failed``, reason the
   return code) — all in one transaction with the return's ``transfer.returned`` event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, func, insert, select, update

from duly.audit import AuditEntry, record
from duly.banking.errors import BankingError
from duly.banking.ledger import LedgerBank
from duly.banking.money import from_minor
from duly.operations.auditing import money_terms, safe_key
from duly.operations.errors import IdempotencyConflict, InvalidRequest, NotFound
from duly.operations.localtime import zone
from duly.operations.outbox import emit
from duly.operations.policy import FailurePolicy, ach_reinitiation
from duly.operations.transfers.models import NewTransfer, payment_returns, scheduled_transfers
from duly.operations.transfers.service import ScheduledTransfers

__all__ = ["AchReturns", "ReturnDecision"]

log = structlog.get_logger("duly.operations")

_T = scheduled_transfers
_R = payment_returns

#: Why a code is not presented again, for people.
_REFUSALS = {
    "R07": "authorisation revoked: never reinitiated",
    "R08": "stop payment: only with a new authorisation",
}


@dataclass(frozen=True, slots=True)
class ReturnDecision:
    """What became of a returned transfer."""

    return_id: int
    transfer_id: int
    original_id: int
    code: str
    reinitiated: bool
    reason: str
    reinitiation_id: int | None
    reinitiations_made: int

    def to_json(self) -> dict[str, Any]:
        """The decision as JSON (CLI, API)."""
        return {
            "return_id": self.return_id,
            "transfer_id": self.transfer_id,
            "original_id": self.original_id,
            "code": self.code,
            "decision": "reinitiated" if self.reinitiated else "refused",
            "reason": self.reason,
            "reinitiation_id": self.reinitiation_id,
            "reinitiations_made": self.reinitiations_made,
        }


class AchReturns:
    """Record ACH returns and reinitiate within the rules.

    :param transfers: the scheduled-transfer service (engine client, banks, clock).
    """

    def __init__(self, transfers: ScheduledTransfers) -> None:
        self.transfers = transfers
        self.engine = transfers.engine
        self.clock = transfers.clock

    def record(
        self,
        transfer_id: int,
        code: str,
        *,
        returned_at: datetime | None = None,
        new_authorization: bool = False,
    ) -> ReturnDecision:
        """Record that executed transfer ``transfer_id`` came back with ``code``; decide.

        :raises NotFound: no such transfer.
        :raises InvalidRequest: the transfer is not executed, or the code is not ``Rnn``.
        :raises IdempotencyConflict: it was already returned with another code.
        """
        code = code.strip().upper()
        if len(code) != 3 or code[0] != "R" or not code[1:].isdigit():
            raise InvalidRequest(f"an ACH return code is R followed by two digits, not {code!r}")
        at = returned_at or self.clock.now()
        with self.engine.begin() as conn:
            row = self._locked(conn, transfer_id)
            done = conn.execute(select(_R).where(_R.c.transfer_id == transfer_id)).one_or_none()
            if done is not None:
                if done.code != code:
                    raise IdempotencyConflict(
                        f"transfer {transfer_id} was already returned with {done.code}, not {code}"
                    )
                pending = done.decision == "reinitiated" and done.reinitiation_id is None
                if not pending:
                    return _decision(done, self._made(conn, int(done.original_id)))
        if done is not None:  # decided before, the reinitiation not made yet (a crash)
            return self._finish_reinitiation(row, int(done.id), int(done.original_id), at)
        with self.engine.begin() as conn:
            row = self._locked(conn, transfer_id)
            if row.status != "executed" or row.executed_at is None:
                raise InvalidRequest(
                    f"transfer {transfer_id} is {row.status}; only an executed transfer can be returned"
                )
            original_id = self._original_of(conn, transfer_id)
            original = self._locked(conn, original_id)
            made = self._made(conn, original_id)
            allowed = ach_reinitiation(code, reinitiations_made=made,
                                       original_settlement=original.executed_at, now=at,
                                       new_authorization=new_authorization)  # fmt: skip
            reason = self._reason(code, allowed, made, original.executed_at, at)
            reversal = self._reverse(conn, row)
            return_id = conn.execute(
                insert(_R).values(
                    transfer_id=transfer_id, original_id=original_id, code=code,
                    returned_at=at, decision="reinitiated" if allowed else "refused",
                    reason=reason, reversal_key=reversal, created_at=self.clock.now(),
                ).returning(_R.c.id)
            ).scalar_one()  # fmt: skip
            self._events(conn, row, code, allowed, reason, at)
            record(conn, [_returned_entry(row, int(return_id), code, allowed, reason, reversal, at)],
                   self.clock.now())  # fmt: skip
        log.info("ach.returned", transfer_id=transfer_id, code=code, reinitiated=allowed)
        if allowed:  # its own transaction: a new scheduled transfer, idempotent by its key
            return self._finish_reinitiation(row, int(return_id), original_id, at)
        return ReturnDecision(int(return_id), transfer_id, original_id, code, False, reason,
                              None, made)  # fmt: skip

    def _finish_reinitiation(
        self, row: Any, return_id: int, original_id: int, at: datetime
    ) -> ReturnDecision:
        with self.engine.connect() as conn:
            presentment = self._made(conn, original_id) + 1
        new_id = self._reinitiate(row, original_id, presentment, at)
        with self.engine.begin() as conn:
            conn.execute(update(_R).where(_R.c.id == return_id).values(reinitiation_id=new_id))
            done = conn.execute(select(_R).where(_R.c.id == return_id)).one()
            return _decision(done, self._made(conn, original_id))

    def chain(self, transfer_id: int) -> list[dict[str, Any]]:
        """The returns of ``transfer_id``'s chain (original and reinitiations), oldest first."""
        with self.engine.connect() as conn:
            original_id = self._original_of(conn, transfer_id)
            rows = conn.execute(
                select(_R).where(_R.c.original_id == original_id).order_by(_R.c.id)
            ).all()
            made = self._made(conn, original_id)
        return [_decision(r, made).to_json() for r in rows]

    # -- steps ----------------------------------------------------------------------

    def _locked(self, conn: Connection, transfer_id: int) -> Any:
        stmt = select(_T).where(_T.c.id == transfer_id)
        if conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        row = conn.execute(stmt).one_or_none()
        if row is None:
            raise NotFound(f"no scheduled transfer {transfer_id}")
        return row

    def _original_of(self, conn: Connection, transfer_id: int) -> int:
        """The first presentment: follow reinitiations back (each was made by a return)."""
        found = conn.execute(
            select(_R.c.original_id).where(_R.c.reinitiation_id == transfer_id)
        ).scalar_one_or_none()
        return int(found) if found is not None else transfer_id

    def _made(self, conn: Connection, original_id: int) -> int:
        """Reinitiations of the chain so far (decided; made or about to be)."""
        return int(
            conn.execute(
                select(func.count()).where(
                    _R.c.original_id == original_id, _R.c.decision == "reinitiated"
                )
            ).scalar_one()
        )

    def _reason(self, code: str, allowed: bool, made: int, settled: datetime, at: datetime) -> str:
        if allowed:
            return f"{code}: presentment {made + 2} of at most 3"
        if code in _REFUSALS:
            return f"{code}: {_REFUSALS[code]}"
        if code not in ("R01", "R09"):
            return f"{code}: not reinitiated automatically; a new entry once the cause is fixed"
        if made >= 2:
            return f"{code}: already reinitiated {made} times (at most 2)"
        return f"{code}: more than 180 days after the original settlement ({settled.date()})"

    def _reverse(self, conn: Connection, row: Any) -> str | None:
        """With the built-in ledger, book the money back (a reversing transfer)."""
        bank = self.transfers.banks.get(row.bank, self.engine, self.clock)
        if not isinstance(bank, LedgerBank):
            return None
        key = f"{row.transfer_key}:return"
        try:
            bank.reverse(row.transfer_key, key, conn=conn)
        except BankingError as exc:
            raise InvalidRequest(f"the ledger cannot book the return: {exc.message}") from exc
        return key

    def _reinitiate(self, row: Any, original_id: int, presentment: int, at: datetime) -> int:
        """A new scheduled transfer presenting the debit again on the next business day."""
        latest = max(at, self.clock.now())  # a late report still reinitiates ahead
        local_day = latest.astimezone(zone(row.timezone)).date() + timedelta(days=1)
        new, _ = self.transfers.create(
            NewTransfer(
                request_key=f"ach-reinit:{original_id}:{presentment}",
                from_account=row.from_account,
                to_account=row.to_account,
                amount=str(from_minor(int(row.amount_minor), row.currency)),
                currency=row.currency,
                local_date=local_day,
                local_time=row.local_time,
                timezone=row.timezone,
                convention="following",
                calendar=row.calendar,
                memo=row.memo,
                customer_id=row.customer_id,
                bank=row.bank,
                policy=FailurePolicy.from_seconds(
                    row.max_attempts, row.retry_every_seconds, row.retry_window_seconds
                ),
            )
        )
        return new.id

    def _events(
        self,
        conn: Connection,
        row: Any,
        code: str,
        allowed: bool,
        reason: str,
        at: datetime,
    ) -> None:
        emit(conn, event_type="transfer.returned", aggregate="transfer", aggregate_id=row.id,
             dedupe_key=f"transfer:{row.id}:returned",
             payload={"status": "returned", "reference": row.transfer_key, "code": code,
                      "reinitiated": allowed, "reason": reason},
             now=at)  # fmt: skip
        if allowed:
            return
        emit(
            conn,
            event_type="customer.notification",
            aggregate="transfer",
            aggregate_id=row.id,
            dedupe_key=f"notify:transfer:{row.id}:returned",
            payload={
                "template": "payment_failed",
                "customer_id": row.customer_id,
                "reference": row.transfer_key,
                "amount": str(from_minor(int(row.amount_minor), row.currency)),
                "currency": row.currency,
                "memo": row.memo,
                "scheduled_for": row.execute_at.isoformat(),
                "attempts": int(row.attempts),
                "reason_code": f"ACH_{code}",
                "reason_class": "terminal",
                "suggested_action": reason,
            },
            now=at,
        )


def _returned_entry(
    row: Any,
    return_id: int,
    code: str,
    allowed: bool,
    reason: str,
    reversal: str | None,
    at: datetime,
) -> AuditEntry:
    """The audit event of a return: the money that came back and what was decided."""
    accounts_of = (row.from_account, row.to_account)
    details = {
        **money_terms(*accounts_of, int(row.amount_minor), row.currency),
        "return_id": return_id,
        "code": code,
        "decision": "reinitiated" if allowed else "refused",
        "reason": reason,
        "returned_at": at,
        "reversal": None if reversal is None else safe_key(reversal, *accounts_of),
    }
    return AuditEntry("transfer.return", "transfer", int(row.id), details)


def _decision(row: Any, made: int) -> ReturnDecision:
    return ReturnDecision(
        return_id=int(row.id),
        transfer_id=int(row.transfer_id),
        original_id=int(row.original_id),
        code=row.code,
        reinitiated=row.decision == "reinitiated",
        reason=row.reason,
        reinitiation_id=row.reinitiation_id,
        reinitiations_made=made,
    )
