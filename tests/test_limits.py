"""The rate-limit layer: window arithmetic, in-flight slots, 429 pauses, and the server bar.

Time never passes for real: arithmetic tests drive an injected ``FakeClock``; waiting tests run
under ``@pytest.mark.looptime`` (the loop's clock fast-forwards to the next timer); the
property test runs whole batches on fresh looptime loops (see ``benchmarks/_simulation.py``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import tracemalloc

import pytest
from _simulation import (
    Server,
    aiolimiter_gate,
    all_servers,
    fixed_window_server,
    floor_span,
    limiter_gate,
    rejections,
    run_batch,
    sliding_log_server,
    span,
    token_bucket_server,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagetwin_async._errors import ConfigurationError, RateLimitBusy, RateLimited
from imagetwin_async._limits import (
    Limiter,
    LimitState,
    RateLimit,
    Slot,
    TokenBucketLimiter,
    WindowLimiter,
)


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class HighRandom(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return b


def now() -> float:
    return asyncio.get_running_loop().time()


# -- configuration ------------------------------------------------------------------------


def test_defaults_scale_with_per() -> None:
    minute = RateLimit(20)
    assert (minute.per, minute.strategy) == (60.0, "window")
    assert minute.margin == pytest.approx(0.2)
    assert (minute.backoff_base, minute.backoff_cap) == pytest.approx((3.0, 60.0))
    second = RateLimit(20, per=1.0)
    assert second.margin == pytest.approx(1 / 300)
    assert (second.backoff_base, second.backoff_cap) == pytest.approx((0.05, 1.0))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"requests": 0},
        {"requests": -1},
        {"requests": 2.5},
        {"requests": True},
        {"requests": 20, "per": 0},
        {"requests": 20, "per": -60.0},
        {"requests": 20, "per": float("inf")},
        {"requests": 20, "per": "60"},
        {"requests": 20, "margin": -0.1},
        {"requests": 20, "margin": float("nan")},
        {"requests": 20, "backoff_base": 0},
        {"requests": 20, "backoff_base": 10.0, "backoff_cap": 5.0},
        {"requests": 20, "strategy": "leaky"},
    ],
)
def test_invalid_limits_raise_configuration_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        RateLimit(**kwargs)  # type: ignore[arg-type]


def test_limit_is_frozen_and_margin_zero_is_allowed() -> None:
    limit = RateLimit(5, per=1.0, margin=0.0)
    with pytest.raises(AttributeError):
        limit.requests = 6  # type: ignore[misc]


def test_build_picks_the_strategy_and_satisfies_the_protocol() -> None:
    window = RateLimit(20).build(name="POST /scan")
    bucket = RateLimit(20, strategy="token_bucket").build()
    assert isinstance(window, WindowLimiter)
    assert isinstance(bucket, TokenBucketLimiter)
    assert isinstance(window, Limiter)
    assert isinstance(bucket, Limiter)


# -- window arithmetic under a controlled clock ---------------------------------------------


async def test_slot_frees_per_plus_margin_after_its_answer() -> None:
    clock = FakeClock()
    limiter = RateLimit(3, per=10.0, margin=0.5).build(name="POST /scan", clock=clock)
    slots = [await limiter.acquire(block=False) for _ in range(3)]
    for answered_at, slot in zip((1.0, 2.0, 3.0), slots, strict=True):
        clock.now = answered_at
        slot.release()

    clock.now = 5.0
    with pytest.raises(RateLimitBusy) as busy:
        await limiter.acquire(block=False)
    assert busy.value.retry_after == pytest.approx(6.5)  # 1.0 + 10 + 0.5 - 5.0
    assert busy.value.status == 429
    assert busy.value.endpoint == "POST /scan"
    assert isinstance(busy.value, RateLimited)

    clock.now = 11.0  # per has passed, the margin has not
    with pytest.raises(RateLimitBusy):
        await limiter.acquire(block=False)
    clock.now = 11.5
    await limiter.acquire(block=False)
    with pytest.raises(RateLimitBusy) as busy:
        await limiter.acquire(block=False)
    assert busy.value.retry_after == pytest.approx(1.0)


async def test_in_flight_slots_have_no_known_free_time() -> None:
    clock = FakeClock()
    limiter = RateLimit(2, per=10.0, margin=0.0).build(clock=clock)
    first = await limiter.acquire(block=False)
    await limiter.acquire(block=False)
    clock.now = 1000.0  # still in flight after any number of windows: still counted
    with pytest.raises(RateLimitBusy) as busy:
        await limiter.acquire(block=False)
    assert busy.value.retry_after is None
    assert limiter.snapshot() == LimitState(
        requests=2, per=10.0, available=0, in_flight=2, next_slot_in=None, paused_for=0.0
    )
    first.release()
    assert limiter.snapshot().next_slot_in == pytest.approx(10.0)
    assert limiter.snapshot().in_flight == 1


async def test_snapshot_counts_free_slots() -> None:
    clock = FakeClock()
    limiter = RateLimit(3, per=10.0, margin=0.0).build(clock=clock)
    assert limiter.snapshot() == LimitState(
        requests=3, per=10.0, available=3, in_flight=0, next_slot_in=0.0, paused_for=0.0
    )
    (await limiter.acquire()).release()
    state = limiter.snapshot()
    assert (state.available, state.in_flight, state.next_slot_in) == (2, 0, 0.0)


async def test_release_twice_is_harmless_and_slots_are_context_managers() -> None:
    clock = FakeClock()
    limiter = RateLimit(2, per=10.0).build(clock=clock)
    slot = await limiter.acquire()
    slot.release()
    slot.release()
    assert slot.released
    assert limiter.snapshot().in_flight == 0
    with await limiter.acquire() as held:
        assert limiter.snapshot().in_flight == 1
    assert held.released
    clock.now = 100.0
    async with await limiter.acquire():
        assert limiter.snapshot().in_flight == 1
    assert limiter.snapshot().in_flight == 0


def test_slot_callback_runs_once() -> None:
    calls: list[int] = []
    slot = Slot(lambda: calls.append(1))
    with slot:
        pass
    slot.release()
    assert calls == [1]


# -- waiting: FIFO, no busy-waiting, cancellation --------------------------------------------


@pytest.mark.looptime
async def test_waiters_are_served_in_order_at_the_earliest_free_time() -> None:
    limiter = RateLimit(2, per=10.0, margin=0.5).build()
    granted: list[tuple[int, float]] = []

    async def request(i: int, latency: float) -> None:
        async with await limiter.acquire():
            granted.append((i, now()))
            await asyncio.sleep(latency)

    await asyncio.gather(*(request(i, latency=1.0) for i in range(5)))
    assert granted == [(0, 0.0), (1, 0.0), (2, 11.5), (3, 11.5), (4, 23.0)]


@pytest.mark.looptime
async def test_a_waiter_sleeps_instead_of_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    limiter = RateLimit(1, per=60.0).build()
    (await limiter.acquire()).release()
    loop = asyncio.get_running_loop()
    timers: list[float] = []
    original = loop.call_later

    def counting_call_later(delay: float, *args: object) -> asyncio.TimerHandle:
        timers.append(delay)
        return original(delay, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "call_later", counting_call_later)
    await limiter.acquire()
    assert now() == pytest.approx(60.2)
    assert timers == [pytest.approx(60.2)]


@pytest.mark.looptime
async def test_a_release_wakes_a_waiter_blocked_on_in_flight_slots() -> None:
    limiter = RateLimit(1, per=10.0, margin=0.0).build()
    slot = await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(5.0)
    assert not waiter.done()
    slot.release()  # answered at 5: free at 15
    await waiter
    assert now() == pytest.approx(15.0)


@pytest.mark.looptime
async def test_cancelled_waiter_leaks_nothing_and_keeps_the_queue_moving() -> None:
    limiter = RateLimit(1, per=10.0, margin=0.0).build()
    (await limiter.acquire()).release()
    first = asyncio.create_task(limiter.acquire())
    second = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(1.0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    slot = await second
    assert now() == pytest.approx(10.0)
    assert limiter.snapshot().in_flight == 1
    slot.release()


async def test_waiter_cancelled_in_the_tick_it_was_granted_gives_the_slot_back() -> None:
    clock = FakeClock()
    limiter = RateLimit(1, per=10.0, margin=0.0).build(clock=clock)
    assert isinstance(limiter, WindowLimiter)
    (await limiter.acquire()).release()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)  # queued
    clock.now = 10.0
    limiter._dispatch()  # the wake-up grants the slot...
    waiter.cancel()  # ...and the task is cancelled before it resumes
    with pytest.raises(asyncio.CancelledError):
        await waiter
    state = limiter.snapshot()
    assert (state.in_flight, state.available) == (0, 1)


async def test_no_jumping_the_queue_with_block_false() -> None:
    clock = FakeClock()
    limiter = RateLimit(2, per=10.0, margin=0.0).build(clock=clock)
    held = [await limiter.acquire(), await limiter.acquire()]
    clock.now = 1.0
    held[0].release()  # free at 11
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    with pytest.raises(RateLimitBusy) as busy:
        await limiter.acquire(block=False)
    # The waiter takes the slot freeing at 11; the other is still in flight.
    assert busy.value.retry_after is None
    held[1].release()  # at 1.0: free at 11 too
    with pytest.raises(RateLimitBusy) as busy:
        await limiter.acquire(block=False)
    assert busy.value.retry_after == pytest.approx(10.0)
    waiter.cancel()


# -- 429: pause, back-off, adaptive capacity ---------------------------------------------------


@pytest.mark.looptime
async def test_retry_after_pauses_every_acquire() -> None:
    limiter = RateLimit(5, per=10.0).build()
    assert limiter.on_rate_limited(4.0) == pytest.approx(4.0)
    assert limiter.snapshot().paused_for == pytest.approx(4.0)
    assert limiter.snapshot().available == 0
    with pytest.raises(RateLimitBusy) as busy:
        await limiter.acquire(block=False)
    assert busy.value.retry_after == pytest.approx(4.0)
    await asyncio.gather(limiter.acquire(), limiter.acquire())
    assert now() == pytest.approx(4.0)


@pytest.mark.looptime
async def test_a_longer_pause_is_not_shortened() -> None:
    limiter = RateLimit(5, per=10.0).build()
    limiter.on_rate_limited(8.0)
    assert limiter.on_rate_limited(2.0) == pytest.approx(8.0)


@pytest.mark.looptime
async def test_a_pause_during_a_wait_extends_it() -> None:
    limiter = RateLimit(1, per=10.0, margin=0.0).build()
    (await limiter.acquire()).release()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(5.0)
    limiter.on_rate_limited(20.0)
    await waiter
    assert now() == pytest.approx(25.0)


@pytest.mark.looptime
async def test_back_off_without_retry_after_grows_and_resets() -> None:
    limiter = RateLimit(10, per=60.0).build(rng=HighRandom())
    assert [limiter.on_rate_limited(None) for _ in range(3)] == pytest.approx([3.0, 6.0, 12.0])
    limiter.on_success()
    await asyncio.sleep(100.0)
    assert limiter.on_rate_limited(None) == pytest.approx(3.0)


@pytest.mark.looptime
async def test_back_off_jitter_is_within_bounds() -> None:
    limiter = RateLimit(10, per=60.0).build(rng=random.Random(7))
    pauses = []
    for _ in range(50):
        pauses.append(limiter.on_rate_limited(None))
        limiter.on_success()
        await asyncio.sleep(pauses[-1])
    assert all(0.0 <= p <= 3.0 for p in pauses)
    assert len(set(pauses)) == 50


async def test_a_429_halves_capacity_until_quiet_windows_pass() -> None:
    clock = FakeClock()
    limiter = RateLimit(4, per=10.0, margin=0.0).build(clock=clock)
    limiter.on_rate_limited(0.0)
    assert limiter.snapshot().available == 2
    slots = [await limiter.acquire(block=False), await limiter.acquire(block=False)]
    with pytest.raises(RateLimitBusy) as busy:
        await limiter.acquire(block=False)
    assert busy.value.retry_after == pytest.approx(10.0)  # the first quiet window adds a slot
    clock.now = 10.0
    assert limiter.snapshot().available == 1
    for slot in slots:
        slot.release()  # cooling until 20
    clock.now = 20.0
    assert limiter.snapshot().available == 4


@pytest.mark.looptime
async def test_pauses_and_waits_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="imagetwin_async")
    limiter = RateLimit(1, per=10.0).build(name="POST /scan")
    (await limiter.acquire()).release()
    limiter.on_rate_limited(2.0)
    await limiter.acquire()
    text = caplog.text
    assert "POST /scan: 429 (Retry-After 2 s); pausing every acquire for 2.000 s" in text
    assert "POST /scan: acquire waits ~10.033 s" in text
    assert "acquire waited 10.033 s" in text


# -- the token-bucket strategy -------------------------------------------------------------


@pytest.mark.looptime
async def test_token_bucket_bursts_then_refills() -> None:
    limiter = RateLimit(3, per=3.0, margin=0.0, strategy="token_bucket").build()
    times = []
    for _ in range(5):
        async with await limiter.acquire():
            times.append(now())
    assert times == pytest.approx([0.0, 0.0, 0.0, 1.0, 2.0], abs=1e-3)
    with pytest.raises(RateLimitBusy) as busy:
        await limiter.acquire(block=False)
    assert busy.value.retry_after == pytest.approx(1.0, abs=1e-3)
    state = limiter.snapshot()
    assert (state.available, state.in_flight) == (0, 0)


@pytest.mark.looptime
async def test_token_bucket_pauses_and_empties_on_429() -> None:
    limiter = RateLimit(3, per=3.0, margin=0.0, strategy="token_bucket").build()
    assert limiter.snapshot().available == 3
    assert limiter.on_rate_limited(2.0) == pytest.approx(2.0)
    assert limiter.snapshot().next_slot_in == pytest.approx(3.0)
    slot = await limiter.acquire()
    assert now() == pytest.approx(3.0, abs=1e-3)  # the pause, then one token's refill
    assert limiter.snapshot().in_flight == 1
    slot.release()
    slot.release()
    assert limiter.snapshot().in_flight == 0


# -- the bar: zero rejections from any server, and a span within 3% -------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 25),
    per=st.sampled_from([1.0, 60.0]),
    data=st.data(),
)
def test_window_limiter_is_never_rejected_and_nearly_optimal(
    n: int, per: float, data: st.DataObject
) -> None:
    m = data.draw(st.integers(1, 6 * n + 1), label="batch size")
    max_latency = data.draw(st.floats(0.0, 0.03 * per), label="max latency")
    latencies = data.draw(
        st.lists(st.floats(0.0, max_latency), min_size=m, max_size=m), label="latencies"
    )
    receipt_at = data.draw(
        st.lists(st.floats(0.0, 1.0), min_size=m, max_size=m), label="receipt position"
    )
    offset = data.draw(st.floats(0.0, per), label="calendar offset")

    requests = run_batch(limiter_gate(lambda: RateLimit(n, per=per).build()), latencies, receipt_at)

    receipts = [r.receipt for r in requests]
    servers: list[Server] = [
        fixed_window_server(n, per, offset),
        sliding_log_server(n, per),
        sliding_log_server(n, per, count_rejected=True),
        token_bucket_server(n, per),
    ]
    assert {s.name: rejections(s, receipts) for s in servers} == dict.fromkeys(
        (s.name for s in servers), 0
    )
    rounds = (m - 1) // n
    assert span(requests) >= floor_span(m, n, per) - 1e-6
    assert span(requests) <= floor_span(m, n, per) * 1.03 + rounds * max_latency + 1e-6


def test_naive_aiolimiter_is_rejected_by_window_servers() -> None:
    # The same harness fails a limiter that only counts sends: this test can fail.
    m = 40
    requests = run_batch(aiolimiter_gate(20, 60.0), [0.5] * m, [0.5] * m)
    receipts = [r.receipt for r in requests]
    assert rejections(sliding_log_server(20, 60.0), receipts) > 0
    assert rejections(fixed_window_server(20, 60.0, offset=1000.0), receipts) > 0
    assert rejections(token_bucket_server(20, 60.0), receipts) == 0  # where its semantics fit


def test_our_limiter_passes_where_aiolimiter_fails() -> None:
    m = 40
    requests = run_batch(limiter_gate(lambda: RateLimit(20).build()), [0.5] * m, [0.5] * m)
    assert [rejections(s, [r.receipt for r in requests]) for s in all_servers(20, 60.0)] == [
        0,
        0,
        0,
    ]


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 20), m=st.integers(1, 80), latency=st.floats(0.0, 0.5))
def test_token_bucket_strategy_suits_a_token_bucket_server(n: int, m: int, latency: float) -> None:
    limit = RateLimit(n, per=1.0, strategy="token_bucket")
    requests = run_batch(limiter_gate(limit.build), [latency] * m, [0.5] * m)
    assert rejections(token_bucket_server(n, 1.0), [r.receipt for r in requests]) == 0


@pytest.mark.looptime
async def test_a_waiter_behind_one_cancelled_in_the_same_tick_is_still_woken() -> None:
    # A is cancelled and a slot released in one tick; B queues before A's handler runs. B must
    # still get the slot once it frees (it used to wait for ever: no wake-up was armed).
    limiter = RateLimit(1, per=0.2).build(name="t")
    held = await limiter.acquire()
    a = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    b = asyncio.create_task(limiter.acquire())
    a.cancel()
    held.release()
    done, _ = await asyncio.wait({b}, timeout=3.0)
    assert b in done
    (await b).release()
    with pytest.raises(asyncio.CancelledError):
        await a


# -- cost: slots are counted, not stored; "no limit" -------------------------------------


def test_a_huge_limit_costs_no_memory_until_used() -> None:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        limiter = RateLimit(10**6).build(clock=FakeClock())
        RateLimit(10**9).build(clock=FakeClock())
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024  # the old limiter allocated 8 MB per million slots
    assert limiter.snapshot().available == 10**6


async def test_only_slots_answered_within_a_window_are_kept() -> None:
    clock = FakeClock()
    limiter = RateLimit(10**6, per=10.0, margin=0.0).build(clock=clock)
    assert isinstance(limiter, WindowLimiter)
    for i in range(1000):
        clock.now = i * 0.1  # 100 s: ten windows
        (await limiter.acquire(block=False)).release()
    assert len(limiter._cooling) <= 101  # one window's worth, not every slot ever used
    assert limiter.snapshot().available == 10**6 - len(limiter._cooling)


@pytest.mark.looptime
async def test_unlimited_never_waits_but_still_honours_a_429() -> None:
    limiter = RateLimit.unlimited().build(name="GET /result")
    slots = [await limiter.acquire() for _ in range(10_000)]
    assert now() == 0.0
    assert limiter.snapshot().in_flight == 10_000
    for slot in slots:
        slot.release()
    assert limiter.on_rate_limited(5.0) == pytest.approx(5.0)
    with pytest.raises(RateLimitBusy):
        await limiter.acquire(block=False)
    await limiter.acquire()
    assert now() == pytest.approx(5.0)
    assert RateLimit.unlimited().strategy == "unlimited"
    assert isinstance(limiter, Limiter)
