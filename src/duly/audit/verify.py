"""Verifying a chain: recompute every hash, check every checkpoint's signature. Pure.

The same verifier runs over the database (:mod:`duly.audit.service`) and over an export
file on a machine without one (:mod:`duly.audit.export`). It stops at the first problem and
names its sequence number and the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from duly.audit.canonical import GENESIS, ChainHead, Checkpoint, EventRecord, event_hash
from duly.audit.signing import VerifyKey

__all__ = ["PRUNE_ACTION", "Problem", "VerifyReport", "verify_chain"]

PRUNE_ACTION = "audit.prune"
"""The event pruning records after its cut (``details.through_seq``)."""


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
    missing_from = 1 if anchor is None else anchor.seq + 1
    if missing_from >= first:
        return GENESIS, Problem(
            first, f"the chain starts at {first} with no checkpoint at {first - 1} to anchor it"
        )
    return GENESIS, Problem(
        missing_from,
        f"events {missing_from}..{first - 1} are missing: the chain starts at {first} "
        f"with no checkpoint at {first - 1} to anchor it",
    )


def verify_chain(
    events: Iterable[EventRecord],
    checkpoints: Sequence[Checkpoint],
    key: VerifyKey | None,
    *,
    anchor: ChainHead | None = None,
    head: ChainHead | None = None,
    start: int | None = None,
    pending: int = 0,
) -> VerifyReport:
    """Check ``events`` (in ``seq`` order) against each other, ``checkpoints`` and ``head``.

    ``anchor`` is the hash to trust before the first event when it is not 1 and no checkpoint
    precedes it (``verify --from``). ``head`` is the head stored apart from the events: a
    chain ending before it lost its newest events; one going past it gained some. With a
    ``head`` the events are taken to be the whole chain from ``start``: one starting after a
    checkpoint instead of at 1 must hold the ``audit.prune`` event of that cut.
    ``start`` is where the events were asked to begin (absent events there are reported).
    ``pending`` is how many events are recorded but not sealed yet (the newest
    ``audit.prune`` may be among them).
    """
    report = VerifyReport(signatures_checked=key is not None, unsealed=pending)
    by_seq = {cp.seq: cp for cp in checkpoints}
    if len(by_seq) != len(checkpoints):
        twice = min(seq for seq in by_seq if sum(cp.seq == seq for cp in checkpoints) > 1)
        report.problem = Problem(twice, f"checkpoint {twice} appears twice")
        return report
    prev_hash: str | None = None
    expected = 0
    pruned: set[int] = set()
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
        if event.action == PRUNE_ACTION:
            pruned.add(_pruned_through(event))
        report.events += 1
        report.last_seq, report.last_hash = seq, digest
        prev_hash, expected = digest, seq + 1
    _check_uncovered(report, by_seq, key)
    if report.ok:
        _check_end(report, by_seq, head, start)
    if report.ok and head is not None:
        _check_pruned(report, start, pruned, pending)
    return report


def _pruned_through(event: EventRecord) -> int:
    try:
        return int(json.loads(event.details)["through_seq"])
    except (ValueError, KeyError, TypeError):
        return -1


def _check_pruned(report: VerifyReport, start: int | None, pruned: set[int], pending: int) -> None:
    """A chain verified from its beginning that starts after 1 must say it was pruned there.

    Pruning leaves the checkpoint at the cut and records ``audit.prune`` after it, so
    events deleted up to a checkpoint by anyone else (who cannot add a sealed event before
    the last checkpoint without breaking the chain) show up here.
    """
    first = report.first_seq
    if first is None or first == 1 or (start is not None and start > 1):
        return
    if first - 1 in pruned:
        return
    if pending:
        report.notes.append(
            f"no audit.prune event through {first - 1} yet: {pending} events are not sealed"
        )
        return
    report.problem = Problem(
        1,
        f"events 1..{first - 1} are missing and no audit.prune event records their pruning",
    )


def _check_uncovered(
    report: VerifyReport, by_seq: dict[int, Checkpoint], key: VerifyKey | None
) -> None:
    """Checkpoints before the events checked (``verify --from``, a pruned chain): signed right."""
    first = report.first_seq
    for seq in sorted(by_seq):
        if seq < 1:
            report.problem = Problem(seq, f"checkpoint {seq} names no event")
            return
        if first is not None and seq >= max(first - 1, 1):
            return  # the anchor and those after it were checked against the events
        bad = _signature_problem(by_seq[seq], key)
        if bad is not None:
            report.problem = Problem(seq, bad)
            return


def _check_end(
    report: VerifyReport,
    by_seq: dict[int, Checkpoint],
    head: ChainHead | None,
    start: int | None,
) -> None:
    last = report.last_seq
    if last is not None:
        beyond = min((seq for seq in by_seq if seq > last), default=None)
        if beyond is not None:
            report.problem = Problem(
                last + 1,
                f"checkpoint {beyond} covers events up to {beyond}, but the chain ends at {last}",
            )
            return
    if head is None:
        return
    if last is None:
        _check_empty(report, by_seq, head, start)
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
    elif head.hash != report.last_hash:
        report.problem = Problem(last, f"event {last} does not hash to the head stored apart")


def _check_empty(
    report: VerifyReport, by_seq: dict[int, Checkpoint], head: ChainHead, start: int | None
) -> None:
    """No sealed events: right for an empty chain, asking past the head, or a prune not sealed."""
    first = max(start or 1, 1)
    if head.seq == 0:
        return
    if first > head.seq:
        report.notes.append(f"no events from {first}: the chain ends at {head.seq}")
        return
    signed = by_seq.get(head.seq)
    if report.unsealed and signed is not None and signed.hash == head.hash:
        # Pruned through the head on PostgreSQL: the audit.prune event is still unsealed.
        report.notes.append(
            f"no sealed events after checkpoint {head.seq}; {report.unsealed} not sealed yet"
        )
        return
    report.problem = Problem(
        first, f"no events, but the head stored apart says the chain reaches {head.seq}"
    )
