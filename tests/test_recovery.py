"""Resuming warm and few items in doubt: limiter seeding, bounded and spaced scan POSTs.

Adversaries named: a crashed predecessor that spent the rate budget a moment ago (a resumed
run must not spend it again: 429s), and a crash with several POSTs on their way (each one an
item in doubt whose scan scan-overview's whole-second dates must tell apart).
"""

from __future__ import annotations

import asyncio

import pytest

from imagetwin_async import ImagetwinClient, InvalidArgument, RateLimit, RateLimitBusy
from imagetwin_async._limits import TokenBucketLimiter, WindowLimiter
from imagetwin_async._pacing import UnansweredScans
from imagetwin_async._recovery import SeedableLimiter


def test_a_window_limiter_seeded_with_a_full_window_waits_it_out() -> None:
    now = 100.0
    limiter = WindowLimiter(RateLimit(3, per=10.0, margin=0.5), clock=lambda: now)
    assert isinstance(limiter, SeedableLimiter)
    limiter.seed([99.0, 98.0, 97.0, 50.0])  # the predecessor's answers (50.0: long cold)
    state = limiter.snapshot()
    assert state.available == 0
    assert state.next_slot_in == pytest.approx(97.0 + 10.5 - now)  # the oldest recent frees


def test_a_window_limiter_seeded_with_old_answers_keeps_its_budget() -> None:
    limiter = WindowLimiter(RateLimit(3, per=10.0, margin=0.5), clock=lambda: 100.0)
    limiter.seed([80.0, 85.0])
    assert limiter.snapshot().available == 3


def test_a_window_limiter_seeded_with_part_of_a_window_keeps_the_rest() -> None:
    limiter = WindowLimiter(RateLimit(3, per=10.0, margin=0.5), clock=lambda: 100.0)
    limiter.seed([99.5])
    assert limiter.snapshot().available == 2


async def test_a_token_bucket_seeded_with_a_recent_request_starts_empty() -> None:
    limiter = TokenBucketLimiter(RateLimit(3, per=10.0, strategy="token_bucket"))
    limiter.seed([asyncio.get_running_loop().time() - 1.0])
    with pytest.raises(RateLimitBusy):
        await limiter.acquire(block=False)


async def test_no_more_scan_posts_are_unanswered_than_the_bound() -> None:
    pacing = UnansweredScans(limit=2)
    on_the_wire = peak = 0
    release = asyncio.Event()

    async def post() -> None:
        nonlocal on_the_wire, peak
        async with pacing.slot():
            token = await pacing.before_send()
            on_the_wire += 1
            peak = max(peak, on_the_wire)
            await release.wait()
            on_the_wire -= 1
            pacing.answered(token)

    tasks = [asyncio.create_task(post()) for _ in range(5)]
    await asyncio.sleep(0.05)
    assert on_the_wire == 2  # a crash now leaves two items in doubt, not five
    release.set()
    await asyncio.gather(*tasks)
    assert peak == 2


async def test_unanswered_posts_are_spaced_but_answered_ones_hold_nothing_back() -> None:
    loop = asyncio.get_running_loop()
    pacing = UnansweredScans(limit=4, spacing=lambda: 0.3, monotonic=loop.time)
    first = await pacing.before_send()
    started = loop.time()
    second = await pacing.before_send()  # the first is still unanswered: wait the spacing
    assert loop.time() - started >= 0.3 - 1e-3
    pacing.answered(first)
    pacing.answered(second)
    started = loop.time()
    await pacing.before_send()  # nothing unanswered: at once
    assert loop.time() - started < 0.05


async def test_an_answer_releases_a_post_waiting_for_its_spacing() -> None:
    loop = asyncio.get_running_loop()
    pacing = UnansweredScans(limit=4, spacing=lambda: 30.0, monotonic=loop.time)
    first = await pacing.before_send()
    waiting = asyncio.create_task(pacing.before_send())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    pacing.answered(first)
    await asyncio.wait_for(waiting, 1.0)


def test_the_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        UnansweredScans(limit=0)


@pytest.mark.parametrize(
    ("option", "value"),
    [("max_unanswered_scans", 0), ("max_unanswered_scans", 1.5), ("settle_delay", -1.0)],
)
async def test_bad_settling_options_are_refused_before_anything_is_sent(
    option: str, value: float
) -> None:
    async with ImagetwinClient("key", base_url="http://127.0.0.1:9/v1") as client:
        with pytest.raises(InvalidArgument, match=option):
            await client.submit_and_wait([], **{option: value})  # type: ignore[arg-type]
