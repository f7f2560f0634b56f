"""The chain's verifier over random chains: every untampered one passes, every one-bit change fails.

Pure (no database): events of random actors, actions and unicode details are linked as the
sealer links them, checkpoints signed at random points with a key made here; then one bit
of one character (or of a number) of one field of one event or checkpoint is flipped, and
:func:`verify_chain` must name a sequence number at or before the changed one.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from duly.audit.canonical import (
    ChainHead,
    Checkpoint,
    EventRecord,
    canonical_json,
    format_instant,
    link,
)
from duly.audit.export import verify_file, write_export
from duly.audit.signing import SigningKey
from duly.audit.verify import verify_chain

KEY = SigningKey(Ed25519PrivateKey.generate())
START = datetime(2026, 1, 1, tzinfo=UTC)

EVENT_FIELDS = (
    "seq",
    "at",
    "actor",
    "actor_name",
    "actor_role",
    "action",
    "object_type",
    "object_id",
    "request_id",
    "details",
    "prev_hash",
    "hash",
)
CHECKPOINT_FIELDS = ("seq", "hash", "at", "key_id", "signature")

_text = st.text(max_size=12)
_json: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def unsealed_events(draw: st.DrawFn) -> EventRecord:
    return EventRecord(
        seq=None,
        at=format_instant(START + timedelta(microseconds=draw(st.integers(0, 10**13)))),
        actor=draw(st.sampled_from(["system:node-a", "cli:ana"]) | _text.map("token:".__add__)),
        actor_name=draw(st.none() | _text),
        actor_role=draw(st.none() | st.sampled_from(["admin", "operator", "system", "cli"])),
        action=draw(st.sampled_from(["run.fire", "schedule.pause", "transfer.create"]) | _text),
        object_type=draw(_text),
        object_id=draw(st.none() | _text),
        request_id=draw(st.none() | st.text("abcdef0123456789", min_size=1, max_size=32)),
        details=canonical_json(draw(st.dictionaries(_text, _json, max_size=4))),
    )


@dataclass(frozen=True)
class Chain:
    events: list[EventRecord]
    checkpoints: list[Checkpoint]

    @property
    def head(self) -> ChainHead:
        last = self.events[-1]
        assert last.seq is not None and last.hash is not None
        return ChainHead(last.seq, last.hash)


def sign(event: EventRecord, minute: int) -> Checkpoint:
    assert event.seq is not None and event.hash is not None
    at = format_instant(START + timedelta(minutes=minute))
    return Checkpoint(event.seq, event.hash, at, KEY.key_id, KEY.sign(event.seq, event.hash, at))


@st.composite
def chains(draw: st.DrawFn) -> Chain:
    events = list(link(draw(st.lists(unsealed_events(), min_size=1, max_size=60)), ChainHead()))
    signed = draw(st.sets(st.integers(0, len(events) - 1), max_size=5))
    checkpoints = [sign(events[i], i) for i in sorted(signed)]
    return Chain(events, checkpoints)


def flip_bit(value: Any, position: int, bit: int) -> Any:
    """``value`` with one bit of one character (or of the number) flipped; never equal."""
    if value is None:
        return "x"
    if isinstance(value, int):
        return value ^ (1 << (bit % 7))
    assert isinstance(value, str)
    if value == "":
        return "x"
    i = position % len(value)
    code = ord(value[i])
    for b in (bit % 8, *range(8)):
        flipped = code ^ (1 << b)
        if not 0xD800 <= flipped <= 0xDFFF:  # a lone surrogate is no text any store can hold
            return value[:i] + chr(flipped) + value[i + 1 :]
    raise AssertionError("unreachable: some low bit flip is not a surrogate")


def verify(chain: Chain, events: list[EventRecord], checkpoints: list[Checkpoint]) -> Any:
    ordered = sorted(events, key=lambda e: e.seq or 0)  # as the database reads them
    return verify_chain(ordered, checkpoints, KEY.public, head=chain.head)


@settings(max_examples=150, deadline=None)
@given(chains())
def test_every_untampered_chain_verifies(chain: Chain) -> None:
    report = verify(chain, chain.events, chain.checkpoints)

    assert report.ok, report.problem
    assert report.events == len(chain.events)
    assert report.checkpoints == len(chain.checkpoints)
    last_signed = chain.checkpoints[-1].seq if chain.checkpoints else 0
    assert report.unsigned_tail == len(chain.events) - last_signed


@settings(max_examples=400, deadline=None)
@given(
    chains(),
    st.integers(0, 10**6),
    st.sampled_from(EVENT_FIELDS),
    st.integers(0, 10**6),
    st.integers(0, 7),
)
def test_a_one_bit_change_of_any_event_field_is_caught_at_or_before_it(
    chain: Chain, which: int, name: str, position: int, bit: int
) -> None:
    index = which % len(chain.events)
    target = chain.events[index]
    changed = replace(target, **{name: flip_bit(getattr(target, name), position, bit)})
    events = [*chain.events[:index], changed, *chain.events[index + 1 :]]

    report = verify(chain, events, chain.checkpoints)

    assert report.problem is not None, f"{name} of event {target.seq} changed unnoticed"
    assert target.seq is not None and changed.seq is not None
    # An event moved to another number is wrong where it now stands, or where it was.
    assert report.problem.seq <= max(target.seq, changed.seq), report.problem


@settings(max_examples=300, deadline=None)
@given(
    chains().filter(lambda c: bool(c.checkpoints)),
    st.integers(0, 10**6),
    st.sampled_from(CHECKPOINT_FIELDS),
    st.integers(0, 10**6),
    st.integers(0, 7),
)
def test_a_one_bit_change_of_any_checkpoint_field_is_caught_at_or_before_it(
    chain: Chain, which: int, name: str, position: int, bit: int
) -> None:
    index = which % len(chain.checkpoints)
    target = chain.checkpoints[index]
    changed = replace(target, **{name: flip_bit(getattr(target, name), position, bit)})
    checkpoints = [*chain.checkpoints[:index], changed, *chain.checkpoints[index + 1 :]]

    report = verify(chain, chain.events, checkpoints)

    assert report.problem is not None, f"{name} of checkpoint {target.seq} changed unnoticed"
    # A checkpoint moved to another number is wrong where it now stands, or where it was.
    assert report.problem.seq <= max(target.seq, changed.seq), report.problem


@settings(max_examples=100, deadline=None)
@given(chains())
def test_every_chain_survives_the_round_trip_through_an_export_file(chain: Chain) -> None:
    out = io.StringIO()
    header = {"from": 1, "to": None, "anchor": None, "exported_at": format_instant(START)}
    write_export(out, chain.events, chain.checkpoints, header=header)

    report = verify_file(io.StringIO(out.getvalue()), KEY.public)

    assert report.ok, report.problem
    assert (report.first_seq, report.last_seq) == (1, len(chain.events))
