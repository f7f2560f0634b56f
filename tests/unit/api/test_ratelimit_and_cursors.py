"""The API's pure parts: the token bucket and cursors."""

from __future__ import annotations

import pytest

from duly.api.errors import ApiError
from duly.api.pagination import decode_cursor, encode_cursor, page_of
from duly.api.ratelimit import RateLimiter


def test_a_bucket_allows_its_burst_then_the_rate() -> None:
    limiter = RateLimiter(rate=10, burst=3)
    assert [limiter.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a", 0.0) == pytest.approx(0.1)
    assert limiter.take("a", 0.1) == 0.0
    assert limiter.take("b", 0.1) == 0.0  # callers do not share a bucket


def test_a_bucket_never_fills_past_its_burst() -> None:
    limiter = RateLimiter(rate=1, burst=2)
    limiter.take("a", 0.0)
    allowed = [limiter.take("a", 1000.0) for _ in range(3)]
    assert allowed[:2] == [0.0, 0.0] and allowed[2] > 0


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert [RateLimiter.retry_after(w) for w in (0.01, 1.0, 1.2)] == [1, 1, 2]


@pytest.mark.parametrize("key", [0, 41, 2**53, "daily.report", ["2026-03-02", 7]])
def test_a_cursor_gives_back_its_key(key: object) -> None:
    assert decode_cursor(encode_cursor(key), type(key)) == key


@pytest.mark.parametrize("text", ["zz", "!!", encode_cursor("text"), encode_cursor(True), "e30"])
def test_a_foreign_cursor_is_422(text: str) -> None:
    with pytest.raises(ApiError) as info:
        decode_cursor(text, int)
    assert info.value.status == 422


def test_a_page_has_a_cursor_only_when_more_rows_follow() -> None:
    full = page_of([5, 4, 3], 2, str, lambda r: r)
    last = page_of([2, 1], 2, str, lambda r: r)
    assert full.items == ["5", "4"] and decode_cursor(full.next_cursor) == 4
    assert last.items == ["2", "1"] and last.next_cursor is None
