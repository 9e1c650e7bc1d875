"""The three server-side algorithms' arithmetic, with explicit times (no clock, no sleeping)."""

from __future__ import annotations

import pytest

from imagetwin_async.emulator import Algorithm, FixedWindow, RateLimiter, SlidingWindow, TokenBucket
from imagetwin_async.emulator._ratelimit import parse_algorithm


def admitted(window: FixedWindow | SlidingWindow | TokenBucket, times: list[float]) -> list[bool]:
    return [window.acquire(t) is None for t in times]


def test_fixed_window_counts_per_calendar_window() -> None:
    window = FixedWindow(20, 60.0)
    assert admitted(window, [59.0] * 20) == [True] * 20
    assert window.acquire(59.5) == pytest.approx(0.5)  # the window [0, 60) is full
    # A new calendar minute starts empty: 40 requests within two seconds pass.
    assert admitted(window, [60.0] * 20) == [True] * 20
    assert window.acquire(61.0) == pytest.approx(59.0)


def test_sliding_window_allows_n_in_any_interval() -> None:
    window = SlidingWindow(20, 60.0)
    assert admitted(window, [float(i) for i in range(20)]) == [True] * 20
    assert window.acquire(59.0) == pytest.approx(1.0)  # the request at 0 leaves at 60
    assert window.acquire(60.0) is None  # (0, 60] no longer holds the first one
    assert window.acquire(60.5) == pytest.approx(0.5)
    assert window.acquire(61.0) is None


def test_sliding_window_does_not_count_rejections() -> None:
    window = SlidingWindow(1, 10.0)
    assert window.acquire(0.0) is None
    for t in (1.0, 2.0, 9.0):
        assert window.acquire(t) is not None
    assert window.acquire(10.0) is None


def test_a_fixed_window_can_start_anywhere_in_the_minute() -> None:
    window = FixedWindow(2, 60.0, offset=30.0)  # the calendar minute the server counts
    assert admitted(window, [31.0, 89.0, 89.5]) == [True, True, False]
    assert window.acquire(89.5) == pytest.approx(0.5)
    assert admitted(window, [90.0, 90.0]) == [True, True]


def test_a_closed_sliding_window_still_counts_a_request_exactly_per_ago() -> None:
    # The strictest server reading: [now - per, now], as the limiter tests' simulations use.
    window = SlidingWindow(1, 10.0, closed=True)
    assert window.acquire(0.0) is None
    assert window.acquire(10.0) == pytest.approx(0.0)  # the open reading admits this one
    assert window.acquire(10.001) is None


def test_a_sliding_window_may_log_rejected_attempts_too() -> None:
    # Some servers count a refused request against the window as well: hammering extends it.
    window = SlidingWindow(1, 10.0, count_rejected=True)
    assert window.acquire(0.0) is None
    assert window.acquire(9.0) is not None
    assert window.acquire(10.5) is not None  # the refused attempt at 9 is still in the log
    lenient = SlidingWindow(1, 10.0)
    assert admitted(lenient, [0.0, 9.0, 10.5]) == [True, False, True]


def test_token_bucket_bursts_capacity_then_refills() -> None:
    bucket = TokenBucket(20, 60.0)  # one token every 3 s
    assert admitted(bucket, [0.0] * 20) == [True] * 20
    assert bucket.acquire(0.0) == pytest.approx(3.0)
    assert bucket.acquire(2.9) == pytest.approx(0.1)
    assert bucket.acquire(3.0) is None
    # 39 inside one minute: the burst the design notes warn a fixed/sliding server rejects.
    bucket = TokenBucket(20, 60.0)
    times = [0.0] * 20 + [3.0 * i for i in range(1, 20)]
    assert all(admitted(bucket, times))
    assert bucket.acquire(57.5) is not None


def test_token_bucket_never_holds_more_than_capacity() -> None:
    bucket = TokenBucket(2, 10.0)
    assert bucket.acquire(1000.0) is None
    assert bucket.acquire(1000.0) is None
    assert bucket.acquire(1000.0) == pytest.approx(5.0)


def test_limiter_keeps_keys_and_groups_apart() -> None:
    limiter = RateLimiter(Algorithm.SLIDING, {"scan": (1, 60.0), "result": (2, 60.0)})
    assert limiter.acquire("a", "scan", 0.0) is None
    assert limiter.acquire("a", "scan", 1.0) is not None
    assert limiter.acquire("b", "scan", 1.0) is None  # another key, another window
    assert limiter.acquire("a", "result", 1.0) is None
    assert limiter.acquire("a", "overview", 1.0) is None  # no limit configured
    limiter.reset()
    assert limiter.acquire("a", "scan", 2.0) is None


def test_limiter_off_admits_everything() -> None:
    limiter = RateLimiter(None, {"scan": (1, 60.0)})
    assert all(limiter.acquire("a", "scan", 0.0) is None for _ in range(100))


@pytest.mark.parametrize(
    ("text", "algorithm"),
    [
        ("fixed", Algorithm.FIXED),
        ("sliding", Algorithm.SLIDING),
        ("token-bucket", Algorithm.TOKEN_BUCKET),
        ("token_bucket", Algorithm.TOKEN_BUCKET),
        ("off", None),
        (None, None),
    ],
)
def test_parse_algorithm(text: str | None, algorithm: Algorithm | None) -> None:
    assert parse_algorithm(text) is algorithm


def test_parse_algorithm_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="leaky"):
        parse_algorithm("leaky")
