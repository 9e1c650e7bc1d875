"""Back-off and adaptive capacity: pure state, no loop, no clock."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagetwin_async._backoff import AdaptiveCapacity, Backoff


class HighRandom(random.Random):
    """Always draws the top of the range, to read the ceiling off the delay."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_backoff_ceiling_doubles_then_caps() -> None:
    backoff = Backoff(base=3.0, cap=20.0, rng=HighRandom())
    assert [backoff.next_delay() for _ in range(5)] == [3.0, 6.0, 12.0, 20.0, 20.0]
    assert backoff.streak == 5


def test_backoff_reset_starts_over() -> None:
    backoff = Backoff(base=1.0, cap=60.0, rng=HighRandom())
    backoff.next_delay()
    backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 1.0


def test_retry_after_wins_but_counts_towards_the_streak() -> None:
    backoff = Backoff(base=1.0, cap=60.0, rng=HighRandom())
    assert backoff.next_delay(7.5) == 7.5
    assert backoff.next_delay(None) == 2.0  # second in the streak


@pytest.mark.parametrize(("given_", "expected"), [(-3.0, 0.0), (math.nan, 1.0), (math.inf, 1.0)])
def test_odd_retry_after_values(given_: float, expected: float) -> None:
    assert Backoff(base=1.0, cap=60.0, rng=HighRandom()).next_delay(given_) == expected


def test_long_streak_does_not_overflow() -> None:
    backoff = Backoff(base=1.0, cap=60.0, rng=HighRandom())
    backoff.streak = 10_000
    assert backoff.next_delay() == 60.0


@given(seed=st.integers(0, 2**32), streak=st.integers(1, 40))
def test_full_jitter_stays_within_bounds(seed: int, streak: int) -> None:
    backoff = Backoff(base=3.0, cap=60.0, rng=random.Random(seed))
    backoff.streak = streak - 1
    delay = backoff.next_delay()
    assert 0.0 <= delay <= min(60.0, 3.0 * 2 ** (streak - 1))


def test_full_jitter_spreads_over_the_interval() -> None:
    backoff = Backoff(base=4.0, cap=60.0, rng=random.Random(1))
    draws = []
    for _ in range(2000):
        backoff.reset()
        draws.append(backoff.next_delay())
    assert min(draws) < 0.1
    assert max(draws) > 3.9
    assert 1.8 < sum(draws) / len(draws) < 2.2


def test_capacity_halves_once_per_window_and_recovers_a_quarter_per_quiet_window() -> None:
    capacity = AdaptiveCapacity(20, per=60.0)
    assert capacity.at(0.0) == 20
    assert capacity.next_increase_at(0.0) is None
    assert capacity.on_rate_limited(0.0) == 10
    assert capacity.on_rate_limited(30.0) == 10  # same overload: no second cut...
    assert capacity.at(89.0) == 10  # ...but the quiet period restarts at 30
    assert capacity.next_increase_at(89.0) == 90.0
    assert capacity.at(90.0) == 15
    assert capacity.at(150.0) == 20
    assert capacity.next_increase_at(150.0) is None


def test_capacity_cuts_again_after_a_window_and_never_below_one() -> None:
    capacity = AdaptiveCapacity(3, per=1.0)
    assert capacity.on_rate_limited(0.0) == 1
    assert capacity.on_rate_limited(1.0) == 1
    assert capacity.at(2.0) == 2  # step is ceil(3/4) = 1
    assert capacity.at(3.0) == 3


@given(
    quiet_since=st.floats(min_value=0.0, max_value=1e7, allow_nan=False),
    per=st.floats(min_value=1e-3, max_value=1e4, allow_nan=False),
    full=st.integers(min_value=1, max_value=1000),
)
def test_capacity_steps_always_lie_in_the_future(quiet_since: float, per: float, full: int) -> None:
    # A limiter walks these steps to plan its wake-ups: a step that does not advance would
    # spin it forever (seen with float rounding at window boundaries).
    capacity = AdaptiveCapacity(full, per=per)
    capacity.on_rate_limited(now=quiet_since)
    now, steps = quiet_since, 0
    while (step := capacity.next_increase_at(now)) is not None:
        assert step > now
        now, steps = step, steps + 1
        assert steps <= full + 2
