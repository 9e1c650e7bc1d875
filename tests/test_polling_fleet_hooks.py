"""The poll scheduler's hooks for a fleet's one schedule, on simulated time (looptime).

A fleet's elected scheduler polls scans other processes started (``note_started_ago``), tells
the fleet what it waits for (``watch_info``), and a worker that left its scans to another
process puts them back on its own schedule when it leads (``replan``).
"""

from __future__ import annotations

import asyncio

import pytest

from imagetwin_async import ScanPending, ScanResult, TransportError
from imagetwin_async._durations import ScanFeatures
from imagetwin_async._polling import PollScheduler

pytestmark = pytest.mark.looptime


def result(scan_id: str) -> ScanResult:
    return ScanResult(scan_id, 0, 0, 0, "https://r/x.pdf", "https://r/x", 0.33, 0, 0.0)


async def test_a_scan_started_elsewhere_is_first_read_from_its_real_age() -> None:
    """Started 4 s ago on another worker, poll_interval 5: the first read comes 1 s from now,
    not 5 (the age it had there counts), and its duration is learned from that start."""
    loop = asyncio.get_running_loop()
    reads: list[float] = []

    async def poll(scan_id: str) -> ScanResult | ScanPending:
        reads.append(loop.time())
        return result(scan_id)

    scheduler = PollScheduler(poll, poll_interval=5.0, max_poll_interval=60.0)
    observed: list[tuple[float, float]] = []
    scheduler.add_observation_listener(lambda low, high, _: observed.append((low, high)))
    features = ScanFeatures(pages=3, images=0, size=1000)
    t0 = loop.time()
    scheduler.note_started_ago("a", 4.0, features=features)
    waiting = asyncio.create_task(scheduler.wait("a"))
    await asyncio.sleep(0)
    info = scheduler.watch_info("a")
    assert info is not None and info[0] == pytest.approx(4.0) and info[2] == features
    await waiting
    assert reads == [pytest.approx(t0 + 1.0)]
    assert observed == [(0.0, pytest.approx(5.0))]
    assert scheduler.watch_info("a") is None  # no longer watched
    await scheduler.close()


async def test_replan_puts_a_parked_scan_back_on_its_own_schedule() -> None:
    """A worker that left its scan to the fleet's leader (its reads said "try later", parking
    it for max_poll_interval) leads now: replanned, it is read on the schedule it would have
    had, at once here (poll_interval long past), not 60 s later."""
    loop = asyncio.get_running_loop()
    reads: list[float] = []
    parked = True

    async def poll(scan_id: str) -> ScanResult | ScanPending:
        reads.append(loop.time())
        if parked:
            raise TransportError("left to the fleet's scheduler")
        return result(scan_id)

    scheduler = PollScheduler(poll, poll_interval=1.0, max_poll_interval=60.0)
    t0 = loop.time()
    scheduler.note_started("a")
    waiting = asyncio.create_task(scheduler.wait("a"))
    await asyncio.sleep(2.0)
    assert reads == [pytest.approx(t0 + 1.0)]  # parked until t0 + 61
    parked = False
    assert scheduler.replan("a")
    await waiting
    assert reads[-1] == pytest.approx(t0 + 2.0)
    assert not scheduler.replan("a")  # finished: nothing to plan
    await scheduler.close()


async def test_a_read_that_sent_nothing_gives_its_pacing_back() -> None:
    """A fleet follower paced at 1 read/s with a burst of 1: its read of "a" went nowhere (left
    to the fleet's scheduler), and the result of "b", which another process read, is taken at
    once on its hint instead of waiting a second for a token spent on nothing."""
    loop = asyncio.get_running_loop()
    reads: list[tuple[str, float]] = []
    scheduler: PollScheduler

    async def poll(scan_id: str) -> ScanResult | ScanPending:
        reads.append((scan_id, loop.time()))
        if scan_id == "a":
            scheduler.refund_read()  # what the fleet does when no API read was made
            raise TransportError("left to the fleet's scheduler", endpoint="GET /result/{scanId}")
        return result(scan_id)

    scheduler = PollScheduler(
        poll, poll_interval=5.0, max_poll_interval=60.0, read_rate=1.0, read_burst=1
    )
    t0 = loop.time()
    parked = asyncio.create_task(scheduler.wait("a"))
    await asyncio.sleep(0.001)
    assert reads == [("a", pytest.approx(t0))]
    waiting = asyncio.create_task(scheduler.wait("b"))
    await asyncio.sleep(0)
    scheduler.hint("b")
    await waiting
    assert reads[1] == ("b", pytest.approx(t0, abs=0.01))
    parked.cancel()
    await scheduler.close()
