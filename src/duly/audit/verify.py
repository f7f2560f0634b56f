"""Verifying a chain: recompute every hash, check every checkpoint's signature. Pure.

The same verifier runs over the database (:mod:`duly.audit.service`) and over an export
file on a machine without one (:mod:`duly.audit.export`). It stops at the first problem and
names its sequence number and the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from duly.audit.canonical import GENESIS, ChainHead, Checkpoint, EventRecord, event_hash
from duly.audit.signing import VerifyKey

__all__ = ["Problem", "VerifyReport", "verify_chain"]


@dataclass(frozen=True, slots=True)
class Problem:
    """The first thing wrong: at sequence number ``seq``, because ``reason``."""

    seq: int
    reason: str


@dataclass(slots=True)
class VerifyReport:
    """What a verification found."""

    events: int = 0
    """Events checked."""
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str | None = None
    checkpoints: int = 0
    """Checkpoints whose signature and hash were checked."""
    last_checkpoint: int | None = None
    signatures_checked: bool = True
    unsigned_tail: int = 0
    """Events after the last checkpoint: protected by the head only until the next one."""
    unsealed: int = 0
    """Events recorded but not yet sealed (PostgreSQL's sealer lag)."""
    problem: Problem | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None

    def as_json(self) -> dict[str, Any]:
        """The report as plain JSON (``GET /api/v1/audit/verify``, ``--json``)."""
        return {
            "ok": self.ok,
            "events": self.events,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "last_hash": self.last_hash,
            "checkpoints": self.checkpoints,
            "last_checkpoint": self.last_checkpoint,
            "signatures_checked": self.signatures_checked,
            "unsigned_tail": self.unsigned_tail,
            "unsealed": self.unsealed,
            "problem": None
            if self.problem is None
            else {"seq": self.problem.seq, "reason": self.problem.reason},
            "notes": list(self.notes),
        }


def _signature_problem(cp: Checkpoint, key: VerifyKey | None) -> str | None:
    if key is None:
        return None
    if cp.key_id != key.key_id:
        return (
            f"checkpoint {cp.seq} was signed by key {cp.key_id}, not by the given key {key.key_id}"
        )
    if not key.verifies(cp.seq, cp.hash, cp.at, cp.signature):
        return f"checkpoint {cp.seq} has an invalid signature"
    return None


def _anchor(
    first: int,
    anchor: ChainHead | None,
    by_seq: dict[int, Checkpoint],
    report: VerifyReport,
    key: VerifyKey | None,
) -> tuple[str, Problem | None]:
    """The hash the first event must follow."""
    if first == 1:
        return GENESIS, None
    cp = by_seq.get(first - 1)
    if cp is not None:
        bad = _signature_problem(cp, key)
        if bad is not None:
            return cp.hash, Problem(cp.seq, bad)
        report.checkpoints += 1
        report.notes.append(
            f"starts after checkpoint {cp.seq} (earlier events pruned or not exported)"
        )
        return cp.hash, None
    if anchor is not None and anchor.seq == first - 1:
        report.notes.append(f"starts at {first}, trusting the hash of event {anchor.seq} as given")
        return anchor.hash, None
    return GENESIS, Problem(
        first, f"the chain starts at {first} with no checkpoint at {first - 1} to anchor it"
    )


def verify_chain(
    events: Iterable[EventRecord],
    checkpoints: Sequence[Checkpoint],
    key: VerifyKey | None,
    *,
    anchor: ChainHead | None = None,
    head: ChainHead | None = None,
    start: int | None = None,
) -> VerifyReport:
    """Check ``events`` (in ``seq`` order) against each other, ``checkpoints`` and ``head``.

    ``anchor`` is the hash to trust before the first event when it is not 1 and no checkpoint
    precedes it (``verify --from``). ``head`` is the head stored apart from the events: a
    chain ending before it lost its newest events; one going past it gained some.
    ``start`` is where the events were asked to begin (absent events there are reported).
    """
    report = VerifyReport(signatures_checked=key is not None)
    by_seq = {cp.seq: cp for cp in checkpoints}
    prev_hash: str | None = None
    expected = 0
    for event in events:
        seq = event.seq
        assert seq is not None
        if prev_hash is None:
            if start is not None and seq > start and (seq - 1) not in by_seq:
                report.problem = Problem(start, f"event {start} is missing")
                return report
            prev_hash, problem = _anchor(seq, anchor, by_seq, report, key)
            if problem is not None:
                report.problem = problem
                return report
            report.first_seq = seq
            expected = seq
        if seq != expected:
            reason = (
                f"event {expected} is missing"
                if seq > expected
                else f"event {seq} appears twice or out of order"
            )
            report.problem = Problem(expected if seq > expected else seq, reason)
            return report
        if event.prev_hash != prev_hash:
            report.problem = Problem(
                seq, f"event {seq} does not link to event {seq - 1} (prev_hash differs)"
            )
            return report
        digest = event_hash(event, seq, prev_hash)
        if digest != event.hash:
            report.problem = Problem(
                seq,
                f"event {seq} was changed after it was sealed (its hash does not match its contents)",
            )
            return report
        cp = by_seq.get(seq)
        if cp is not None:
            if cp.hash != digest:
                report.problem = Problem(
                    seq, f"checkpoint {seq} signed another hash than event {seq} has"
                )
                return report
            bad = _signature_problem(cp, key)
            if bad is not None:
                report.problem = Problem(seq, bad)
                return report
            report.checkpoints += 1
            report.last_checkpoint = seq
            report.unsigned_tail = 0
        else:
            report.unsigned_tail += 1
        report.events += 1
        report.last_seq, report.last_hash = seq, digest
        prev_hash, expected = digest, seq + 1
    _check_end(report, by_seq, head)
    return report


def _check_end(report: VerifyReport, by_seq: dict[int, Checkpoint], head: ChainHead | None) -> None:
    last = report.last_seq or 0
    if report.first_seq is None and by_seq:
        last = max(by_seq)
    beyond = sorted(seq for seq in by_seq if seq > last)
    if beyond and report.first_seq is not None:
        report.problem = Problem(
            last + 1,
            f"checkpoint {beyond[0]} covers events up to {beyond[0]}, but the chain ends at {last}",
        )
        return
    if head is None:
        return
    if report.first_seq is None and head.seq > last:
        report.problem = Problem(
            last + 1, f"no events, but the head stored apart says the chain reaches {head.seq}"
        )
    elif head.seq > last:
        report.problem = Problem(
            last + 1,
            f"events {last + 1}..{head.seq} are missing (the head stored apart says the chain reaches {head.seq})",
        )
    elif head.seq < last:
        report.problem = Problem(
            head.seq + 1,
            f"event {head.seq + 1} is beyond the head stored apart ({head.seq}): added outside the sealer",
        )
    elif report.last_hash is not None and head.hash != report.last_hash:
        report.problem = Problem(last, f"event {last} does not hash to the head stored apart")
