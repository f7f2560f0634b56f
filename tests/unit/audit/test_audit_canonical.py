"""The hash encoding is what ``canonical.py`` documents: recomputed here by hand."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from duly.audit.canonical import (
    GENESIS,
    ChainHead,
    EventRecord,
    canonical_json,
    event_hash,
    format_instant,
    link,
    parse_instant,
)
from duly.audit.signing import SigningKey, checkpoint_message

EVENT = EventRecord(
    seq=None,
    at="2026-03-02T09:30:00.000001Z",
    actor="token:7f3k2m9q",
    actor_name="Zoë's ops-bot",
    actor_role="operator",
    action="transfer.create",
    object_type="transfer",
    object_id="42",
    request_id="req-1",
    details=canonical_json({"memo": "Miete März", "amount": "125.50 EUR", "n": [1, None]}),
)


def by_hand(event: EventRecord, seq: int, prev_hash: str) -> str:
    """docs/audit.md's recipe: the documented array, details parsed back, sorted, no spaces."""
    array = ["duly-audit-v1", seq, event.at, event.actor, event.actor_name, event.actor_role,
             event.action, event.object_type, event.object_id, event.request_id, prev_hash,
             json.loads(event.details)]  # fmt: skip
    text = json.dumps(array, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_the_hash_is_sha256_of_the_documented_array() -> None:
    assert event_hash(EVENT, 1, GENESIS) == by_hand(EVENT, 1, GENESIS)
    payload = (
        '["duly-audit-v1",1,"2026-03-02T09:30:00.000001Z","token:7f3k2m9q","Zoë\'s ops-bot",'
        '"operator","transfer.create","transfer","42","req-1","' + GENESIS + '",'
        '{"amount":"125.50 EUR","memo":"Miete März","n":[1,null]}]'
    )
    assert event_hash(EVENT, 1, GENESIS) == hashlib.sha256(payload.encode()).hexdigest()


def test_nulls_are_json_null_and_every_field_counts() -> None:
    bare = EventRecord(None, EVENT.at, "system:n1", None, None, "run.fire", "run", None, None, "{}")
    assert event_hash(bare, 7, "a" * 64) == by_hand(bare, 7, "a" * 64)
    assert event_hash(bare, 7, "a" * 64) != event_hash(bare, 8, "a" * 64)
    assert event_hash(bare, 7, "a" * 64) != event_hash(bare, 7, "b" * 64)


def test_canonical_json_sorts_keys_without_spaces_and_keeps_non_ascii() -> None:
    assert canonical_json({"b": 1, "a": {"ü": "€", "c": [True, None]}}) == (
        '{"a":{"c":[true,null],"ü":"€"},"b":1}'
    )


def test_instants_are_utc_with_microseconds_and_round_trip() -> None:
    plus_one = timezone(timedelta(hours=1))
    assert format_instant(datetime(2026, 3, 2, 10, 30, tzinfo=plus_one)) == (
        "2026-03-02T09:30:00.000000Z"
    )
    at = datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert parse_instant(format_instant(at)) == at
    with pytest.raises(ValueError, match="aware"):
        format_instant(datetime(2026, 3, 2))


def test_link_numbers_after_the_head_each_over_the_one_before() -> None:
    first = list(link([EVENT, EVENT], ChainHead()))
    assert [e.seq for e in first] == [1, 2]
    assert first[0].prev_hash == GENESIS and first[1].prev_hash == first[0].hash
    assert first[1].hash == by_hand(EVENT, 2, by_hand(EVENT, 1, GENESIS))
    after = list(link([EVENT], ChainHead(2, str(first[1].hash))))
    assert (after[0].seq, after[0].prev_hash) == (3, first[1].hash)


def test_an_export_line_round_trips_to_the_same_hash() -> None:
    sealed = next(link([EVENT], ChainHead()))
    line = json.dumps(sealed.as_json(), ensure_ascii=False)
    again = EventRecord.from_json(json.loads(line))
    assert again == sealed
    assert event_hash(again, 1, GENESIS) == sealed.hash


def test_a_checkpoint_signature_covers_the_documented_message() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = SigningKey(Ed25519PrivateKey.generate())
    message = checkpoint_message(9, "c" * 64, EVENT.at)
    assert message == f'["duly-audit-checkpoint-v1",9,"{"c" * 64}","{EVENT.at}"]'.encode()
    signature = key.sign(9, "c" * 64, EVENT.at)
    key.key.public_key().verify(bytes.fromhex(signature), message)  # raises if not
    raw = key.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert key.key_id == hashlib.sha256(raw).hexdigest()[:16]
    assert key.public.verifies(9, "c" * 64, EVENT.at, signature)
    assert not key.public.verifies(9, "d" * 64, EVENT.at, signature)


_text = st.text(max_size=20)


@settings(max_examples=300, deadline=None)
@given(
    st.builds(
        EventRecord,
        seq=st.none(),
        at=_text,
        actor=_text,
        actor_name=st.none() | _text,
        actor_role=st.none() | _text,
        action=_text,
        object_type=_text,
        object_id=st.none() | _text,
        request_id=st.none() | _text,
        details=st.dictionaries(_text, st.none() | st.integers() | _text, max_size=4).map(
            canonical_json
        ),
    ),
    st.integers(1, 2**63 - 1),
    _text,
)
def test_the_fast_encoding_is_the_documented_one_for_any_text(
    event: EventRecord, seq: int, prev_hash: str
) -> None:
    assert event_hash(event, seq, prev_hash) == by_hand(event, seq, prev_hash)
