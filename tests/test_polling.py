"""The poll scheduler, on a fake result endpoint and simulated time (looptime)."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import statistics
from collections import deque

import looptime
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagetwin_async import (
    ImagetwinError,
    PollTimeout,
    RateLimit,
    ScanCancelled,
    ScanFailed,
    ScanNotFound,
    ScanPending,
    ScanResult,
    ServiceUnavailable,
)
from imagetwin_async._durations import conditional_quantile
from imagetwin_async._polling import DurationModel, PollScheduler

pytestmark = pytest.mark.looptime


def result(scan_id: str) -> ScanResult:
    return ScanResult(scan_id, 0, 0, 0, "https://r/x.pdf", "https://r/x", 0.33, 0, 0.0)


class FakeEndpoint:
    """A result endpoint: each scan finishes at a known loop time. Reads go through a real
    limiter, and every read's time is kept for assertions."""

    def __init__(self, limit: RateLimit | None = None) -> None:
        self.finish_at: dict[str, float] = {}
        self.fail: set[str] = set()
        self.reads: list[tuple[float, str]] = []
        self.limiter = limit.build(name="GET /result") if limit else None
        self.errors: deque[Exception] = deque()

    def start(self, scan_id: str, duration: float) -> None:
        self.finish_at[scan_id] = asyncio.get_running_loop().time() + duration

    async def poll(self, scan_id: str) -> ScanResult | ScanPending:
        slot = await self.limiter.acquire() if self.limiter else None
        try:
            now = asyncio.get_running_loop().time()
            self.reads.append((now, scan_id))
            if self.errors:
                raise self.errors.popleft()
            if scan_id in self.fail:
                raise ScanFailed("failed", status=500, endpoint="GET /result/{scanId}")
            if scan_id not in self.finish_at:
                raise ScanNotFound("nope", status=404, endpoint="GET /result/{scanId}")
            return result(scan_id) if now >= self.finish_at[scan_id] else ScanPending(scan_id)
        finally:
            if slot is not None:
                slot.release()

    def reads_of(self, scan_id: str) -> list[float]:
        return [t for t, s in self.reads if s == scan_id]


async def test_waits_until_done_and_obeys_poll_interval() -> None:
    endpoint = FakeEndpoint()
    scheduler = PollScheduler(endpoint.poll, poll_interval=5.0, max_poll_interval=30.0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    endpoint.start("a", 100.0)
    scheduler.note_started("a")
    got = await scheduler.wait("a", timeout=1000)
    assert got.scan_id == "a"
    times = [t - t0 for t in endpoint.reads_of("a")]
    assert times[0] >= 5.0  # no read before poll_interval
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) <= 30.0 + 1e-6  # never longer than max_poll_interval
    assert gaps == sorted(gaps)  # backs off while the scan runs long
    assert times[-1] - 100.0 <= 30.0  # the result is picked up within one max gap
    await scheduler.close()


async def test_never_exceeds_the_read_budget_however_many_scans_wait() -> None:
    endpoint = FakeEndpoint(RateLimit(60, per=60.0))
    scheduler = PollScheduler(endpoint.poll, poll_interval=1.0, max_poll_interval=5.0)
    rng = random.Random(1)
    ids = [f"s{i}" for i in range(1000)]
    for scan_id in ids:
        endpoint.start(scan_id, rng.uniform(10, 600))
        scheduler.note_started(scan_id)
    results = await asyncio.gather(*(scheduler.wait(s) for s in ids))
    assert [r.scan_id for r in results] == ids
    times = sorted(t for t, _ in endpoint.reads)
    # No 60 consecutive-window holds more than 60 reads (counted at receipt).
    j = 0
    for i, t in enumerate(times):
        while times[j] <= t - 60.0:
            j += 1
        assert i - j + 1 <= 60
    await scheduler.close()


async def test_many_waiters_of_one_scan_share_its_reads() -> None:
    endpoint = FakeEndpoint()
    scheduler = PollScheduler(endpoint.poll, poll_interval=1.0, max_poll_interval=4.0)
    endpoint.start("a", 20.0)
    results = await asyncio.gather(*(scheduler.wait("a") for _ in range(50)))
    assert {r.scan_id for r in results} == {"a"}
    assert len(endpoint.reads) < 15
    await scheduler.close()


async def test_a_hint_reads_the_scan_at_once() -> None:
    endpoint = FakeEndpoint()
    scheduler = PollScheduler(endpoint.poll, poll_interval=60.0, max_poll_interval=600.0)
    loop = asyncio.get_running_loop()
    endpoint.start("a", 3.0)
    scheduler.note_started("a")
    waiter = asyncio.create_task(scheduler.wait("a"))
    await asyncio.sleep(5.0)
    assert endpoint.reads == []  # the first read is 60 s away
    assert scheduler.hint("a")
    await waiter
    assert endpoint.reads_of("a")[0] == pytest.approx(loop.time(), abs=0.5)
    assert not scheduler.hint("unknown")  # nobody waits for it: costs nothing
    await scheduler.close()


async def test_a_hint_never_marks_a_scan_done() -> None:
    endpoint = FakeEndpoint()
    scheduler = PollScheduler(endpoint.poll, poll_interval=1.0, max_poll_interval=10.0)
    endpoint.start("a", 50.0)
    waiter = asyncio.create_task(scheduler.wait("a"))
    await asyncio.sleep(2.5)
    scheduler.hint("a")  # a forged callback
    await asyncio.sleep(1.0)
    assert not waiter.done()
    assert (await waiter).scan_id == "a"
    await scheduler.close()


async def test_timeout_raises_poll_timeout_and_stops_polling() -> None:
    endpoint = FakeEndpoint()
    scheduler = PollScheduler(endpoint.poll, poll_interval=1.0, max_poll_interval=2.0)
    endpoint.start("a", 10_000.0)
    with pytest.raises(PollTimeout) as info:
        await scheduler.wait("a", timeout=10.0)
    assert info.value.scan_id == "a"
    assert isinstance(info.value, TimeoutError)
    reads = len(endpoint.reads)
    await asyncio.sleep(100.0)
    assert len(endpoint.reads) == reads
    assert scheduler.waiting == 0
    await scheduler.close()


async def test_cancelling_one_waiter_leaves_the_others_and_leaks_nothing() -> None:
    endpoint = FakeEndpoint()
    scheduler = PollScheduler(endpoint.poll, poll_interval=1.0, max_poll_interval=2.0)
    endpoint.start("a", 30.0)
    endpoint.start("b", 30.0)
    a = asyncio.create_task(scheduler.wait("a"))
    b = asyncio.create_task(scheduler.wait("b"))
    await asyncio.sleep(5.0)
    a.cancel()
    with pytest.raises(asyncio.CancelledError):
        await a
    assert scheduler.waiting == 1
    assert (await b).scan_id == "b"
    after = len(endpoint.reads_of("a"))
    await asyncio.sleep(50.0)
    assert len(endpoint.reads_of("a")) == after
    assert scheduler.waiting == 0
    await scheduler.close()


async def test_failed_and_unknown_scans_raise() -> None:
    endpoint = FakeEndpoint()
    scheduler = PollScheduler(endpoint.poll, poll_interval=1.0, max_poll_interval=2.0)
    endpoint.start("bad", 1.0)
    endpoint.fail.add("bad")
    with pytest.raises(ScanFailed):
        await scheduler.wait("bad")
    with pytest.raises(ScanNotFound):
        await scheduler.wait("ghost")
    await scheduler.close()


async def test_transient_errors_keep_the_scan_watched() -> None:
    endpoint = FakeEndpoint()
    scheduler = PollScheduler(endpoint.poll, poll_interval=1.0, max_poll_interval=2.0)
    endpoint.start("a", 3.0)
    endpoint.errors.extend(
        [ServiceUnavailable("down", status=503, endpoint="GET /result/{scanId}")] * 3
    )
    assert (await scheduler.wait("a")).scan_id == "a"
    await scheduler.close()


async def test_close_cancels_waiters() -> None:
    endpoint = FakeEndpoint()
    scheduler = PollScheduler(endpoint.poll, poll_interval=1.0, max_poll_interval=2.0)
    endpoint.start("a", 1000.0)
    waiter = asyncio.create_task(scheduler.wait("a"))
    await asyncio.sleep(3.0)
    await scheduler.close()
    with pytest.raises(ScanCancelled):
        await waiter


async def test_learns_durations_and_reads_new_scans_near_the_typical_one() -> None:
    endpoint = FakeEndpoint()
    scheduler = PollScheduler(endpoint.poll, poll_interval=2.0, max_poll_interval=60.0)
    loop = asyncio.get_running_loop()
    rng = random.Random(7)
    # Ten scans of about 120 s teach the model.
    for i in range(10):
        endpoint.start(f"t{i}", rng.uniform(110, 130))
        scheduler.note_started(f"t{i}")
    await asyncio.gather(*(scheduler.wait(f"t{i}") for i in range(10)))
    assert scheduler.model.ready
    t0 = loop.time()
    endpoint.start("new", 120.0)
    scheduler.note_started("new")
    await scheduler.wait("new")
    reads = [t - t0 for t in endpoint.reads_of("new")]
    assert reads[0] > 60.0  # no wasted reads while it surely still runs
    assert len(reads) <= 6
    assert reads[-1] - 120.0 < 20.0
    await scheduler.close()


async def test_a_scan_we_did_not_see_start_is_read_at_once() -> None:
    endpoint = FakeEndpoint()
    scheduler = PollScheduler(endpoint.poll, poll_interval=60.0, max_poll_interval=600.0)
    loop = asyncio.get_running_loop()
    endpoint.start("old", -100.0)  # finished long ago, started elsewhere
    t0 = loop.time()
    assert (await scheduler.wait("old")).scan_id == "old"
    assert endpoint.reads_of("old") == [pytest.approx(t0, abs=0.01)]
    await scheduler.close()


def test_duration_model_fits_a_log_normal() -> None:
    model = DurationModel(min_samples=5)
    assert not model.ready
    assert model.cdf(10.0) == 0.0
    for seconds in (50, 60, 70, 55, 65, 60, 58, 62):
        model.observe(seconds)
    assert model.ready
    assert model.cdf(60.0) == pytest.approx(0.5, abs=0.05)
    assert model.cdf(30.0) < 0.01 < 0.99 < model.cdf(120.0)
    q = model.quantile_after(60.0, 0.5)
    # Half of the scans still running at 60 s have finished by q.
    start = model.cdf(60.0)
    assert model.cdf(q) == pytest.approx(start + 0.5 * (1 - start), abs=1e-6)


def test_duration_model_is_not_biased_by_when_the_poller_looked() -> None:
    # What a poller sees of log-normal(median 60 s, sigma 0.5) scans read at 40 s and then
    # every 15 s: "running" at one read, "done" at the next. Fitting the finishing reads would
    # put the median near 68 s; the censored fit finds the truth.
    rng = random.Random(3)
    model = DurationModel(window=400)
    finishing_reads = []
    for _ in range(400):
        duration = rng.lognormvariate(math.log(60.0), 0.5)
        reads = [40.0 + 15.0 * k for k in range(100)]
        done_at = next(t for t in reads if t >= duration)
        running = max((t for t in reads if t < duration), default=0.0)
        model.observe(running, done_at)
        finishing_reads.append(done_at)
    assert model.fit is not None
    mu, sigma = model.fit
    assert math.exp(mu) == pytest.approx(60.0, rel=0.06)
    assert sigma == pytest.approx(0.5, abs=0.06)
    naive = statistics.median(finishing_reads)
    assert abs(naive - 60.0) > abs(math.exp(mu) - 60.0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    durations=st.lists(st.floats(min_value=0.5, max_value=1e5), min_size=5, max_size=30),
    age=st.floats(min_value=0.0, max_value=1e5),
    probability=st.floats(min_value=0.01, max_value=0.99),
)
def test_conditional_quantile_is_after_the_age(
    durations: list[float], age: float, probability: float
) -> None:
    model = DurationModel(min_samples=5)
    for d in durations:
        model.observe(d)
    assert model.quantile_after(age, probability) >= age


async def test_an_unexpected_error_reaches_the_waiter_instead_of_hanging_it() -> None:
    endpoint = FakeEndpoint()
    scheduler = PollScheduler(endpoint.poll, poll_interval=1.0, max_poll_interval=2.0)
    endpoint.start("a", 1.0)
    endpoint.errors.append(RecursionError("maximum recursion depth exceeded"))
    with pytest.raises(ImagetwinError, match="RecursionError"):
        await scheduler.wait("a", timeout=100)
    await scheduler.close()


async def test_a_closed_scheduler_serves_again() -> None:
    endpoint = FakeEndpoint()
    scheduler = PollScheduler(endpoint.poll, poll_interval=1.0, max_poll_interval=2.0)
    endpoint.start("a", 3.0)
    assert (await scheduler.wait("a")).scan_id == "a"
    await scheduler.close()
    endpoint.start("b", 3.0)
    assert (await scheduler.wait("b", timeout=100)).scan_id == "b"
    await scheduler.close()


# -- the learned policy: within the budget, and better than a fixed interval -------------------


def known_model(median: float = 60.0, sigma: float = 0.5, n: int = 300) -> DurationModel:
    """A model that has seen many scans of this distribution (a warm start)."""
    rng = random.Random(11)
    model = DurationModel(window=n)
    for _ in range(n):
        model.observe(rng.lognormvariate(math.log(median), sigma))
    return model


def max_in_any_window(times: list[float], per: float) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - per:
            j += 1
        best = max(best, i - j + 1)
    return best


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 150),
    gap=st.floats(0.0, 6.0),
    median=st.floats(5.0, 300.0),
    sigma=st.floats(0.1, 1.5),
    warm=st.booleans(),
)
def test_a_stream_never_draws_more_reads_than_the_budget(
    n: int, gap: float, median: float, sigma: float, warm: bool
) -> None:
    # A bulk job of any shape against the vendor's 60 reads a minute, the scheduler learning
    # (or starting warm) and pacing itself: no 60 s window ever holds more than 60 reads.
    async def run() -> list[float]:
        limit = RateLimit(60, per=60.0)
        endpoint = FakeEndpoint(limit)
        scheduler = PollScheduler(
            endpoint.poll,
            read_rate=60 / 60.2,
            model=known_model(median, sigma) if warm else None,
        )
        rng = random.Random(n)

        async def one(i: int) -> None:
            await asyncio.sleep(i * gap)
            endpoint.start(f"s{i}", rng.lognormvariate(math.log(median), sigma))
            scheduler.note_started(f"s{i}")
            await scheduler.wait(f"s{i}")

        await asyncio.gather(*(one(i) for i in range(n)))
        await scheduler.close()
        return [t for t, _ in endpoint.reads]

    loop = looptime.new_event_loop(start=100.0)
    try:
        reads = loop.run_until_complete(run())
    finally:
        loop.close()
    assert max_in_any_window(reads, 60.0) <= 60


async def test_knowing_the_distribution_takes_fewer_reads_than_a_fixed_interval() -> None:
    # Scans of log-normal(60 s, 0.5) and reads to spare: a poller reading every N s has a mean
    # delay of about N/2 and reads each scan E[D]/N + 1/2 times. Ours must find results as
    # soon with fewer reads.
    endpoint = FakeEndpoint()
    scheduler = PollScheduler(endpoint.poll, model=known_model(), read_rate=1.0)
    rng = random.Random(5)
    durations = {f"s{i}": rng.lognormvariate(math.log(60.0), 0.5) for i in range(200)}

    async def one(i: int, scan_id: str) -> float:
        await asyncio.sleep(i * 20.0)  # one every 20 s: the budget never binds
        endpoint.start(scan_id, durations[scan_id])
        scheduler.note_started(scan_id)
        await scheduler.wait(scan_id)
        return asyncio.get_running_loop().time() - endpoint.finish_at[scan_id]

    delays = await asyncio.gather(*(one(i, s) for i, s in enumerate(durations)))
    ours_delay = statistics.fmean(delays)
    ours_reads = len(endpoint.reads) / len(durations)
    # The fixed interval with the same mean delay, and the reads it takes.
    interval = 2 * ours_delay
    fixed_reads = statistics.fmean(math.ceil(d / interval) for d in durations.values())
    assert ours_reads < fixed_reads
    await scheduler.close()


async def test_a_hint_goes_first_however_many_scans_are_due() -> None:
    endpoint = FakeEndpoint(RateLimit(60, per=60.0))
    scheduler = PollScheduler(endpoint.poll, poll_interval=1.0, max_poll_interval=5.0)
    for i in range(500):
        endpoint.start(f"s{i}", 10_000.0)
    waiters = [asyncio.create_task(scheduler.wait(f"s{i}")) for i in range(500)]
    endpoint.start("hinted", 0.0)
    hinted = asyncio.create_task(scheduler.wait("hinted"))
    await asyncio.sleep(120.0)  # hundreds of scans are overdue now
    t0 = asyncio.get_running_loop().time()
    scheduler.hint("hinted")
    await hinted
    assert asyncio.get_running_loop().time() - t0 < 3.0
    for waiter in waiters:
        waiter.cancel()
    await scheduler.close()


async def test_timed_out_and_cancelled_waiters_leave_nothing_behind() -> None:
    endpoint = FakeEndpoint()
    scheduler = PollScheduler(endpoint.poll, poll_interval=1.0, max_poll_interval=2.0)
    endpoint.start("a", 10_000.0)
    outcomes = await asyncio.gather(
        *(scheduler.wait("a", timeout=5.0 + i) for i in range(20)), return_exceptions=True
    )
    assert all(isinstance(o, PollTimeout) for o in outcomes)
    assert scheduler.waiting == 0
    loop = asyncio.get_running_loop()
    assert not any(not h.cancelled() for h in loop._scheduled if "_expire" in repr(h))  # type: ignore[attr-defined]
    await scheduler.close()


async def test_the_threshold_falls_while_reads_idle_and_returns_under_load() -> None:
    endpoint = FakeEndpoint(RateLimit(60, per=60.0))
    scheduler = PollScheduler(endpoint.poll, model=known_model(), read_rate=1.0)
    endpoint.start("a", 300.0)
    scheduler.note_started("a")
    await scheduler.wait("a")
    idle = scheduler.target_probability
    assert idle < 0.3  # one scan, reads to spare: read it more often
    ids = [f"b{i}" for i in range(400)]
    for scan_id in ids:
        endpoint.start(scan_id, random.Random(scan_id).lognormvariate(math.log(60), 0.5))
        scheduler.note_started(scan_id)
    busy: list[float] = []

    async def sample() -> None:
        await asyncio.sleep(200.0)
        busy.append(scheduler.target_probability)

    await asyncio.gather(sample(), *(scheduler.wait(s) for s in ids))
    assert busy[0] > idle
    await scheduler.close()


async def test_a_scan_restored_by_id_is_not_starved_by_likelier_finished_ones() -> None:
    # A service restarts: one scan it knows only by id (no start time, so the model cannot
    # speak for it) is due while a busy stream keeps learned scans, likelier finished, due
    # at every read. It waits behind them at most a max_poll_interval past its due time.
    endpoint = FakeEndpoint()
    scheduler = PollScheduler(endpoint.poll, model=known_model(), max_poll_interval=20.0)
    loop = asyncio.get_running_loop()
    endpoint.start("old", 10_000.0)
    endpoint.start("new", 10_000.0)
    scheduler._started["new"] = (loop.time() - 90.0, None)  # 90 s old: likely finished
    waiters = [asyncio.create_task(scheduler.wait(s)) for s in ("old", "new")]
    await asyncio.sleep(0)
    old, new = scheduler._watches["old"], scheduler._watches["new"]
    now = loop.time()
    scheduler._push(old, now - 19.0)  # overdue, but less than max_poll_interval
    scheduler._push(new, now - 1.0)
    assert scheduler._pick(now) is new
    scheduler._push(new, now - 1.0)
    scheduler._push(old, now - 21.0)  # overdue by more: its turn, whatever the others' odds
    assert scheduler._pick(now) is old
    for waiter in waiters:
        waiter.cancel()
    await scheduler.close()


async def test_with_reads_to_spare_a_learned_scan_is_read_at_the_reserve() -> None:
    # One scan and the budget idle: each read comes when the scan is ``min_probability``
    # likely to have finished since the last one (the first at that quantile), so a read
    # finds a scan done with that chance and a scan costs about 1/p reads.
    endpoint = FakeEndpoint(RateLimit(60, per=60.0))
    scheduler = PollScheduler(
        endpoint.poll, model=known_model(), read_rate=1.0, min_probability=0.25
    )
    loop = asyncio.get_running_loop()
    endpoint.start("a", 10_000.0)
    t0 = loop.time()
    scheduler.note_started("a")
    waiter = asyncio.create_task(scheduler.wait("a"))
    await asyncio.sleep(100.0)
    ages = [t - t0 for t in endpoint.reads_of("a")]
    fit = scheduler.model.fit
    assert fit is not None
    mu, sigma = fit
    assert ages[0] == pytest.approx(
        math.exp(mu + sigma * statistics.NormalDist().inv_cdf(0.25)), abs=0.1
    )
    assert ages[1] == pytest.approx(conditional_quantile(mu, sigma, ages[0], 0.25), abs=0.1)
    assert scheduler.target_probability < 0.3  # reads to spare: read at the reserve
    waiter.cancel()
    await scheduler.close()


async def test_when_reads_queue_the_likeliest_finished_scan_is_read_first() -> None:
    # Two scans are due at once and one read is free: the one that has run longer past its
    # last read (likelier finished since) goes first, whatever order they fell due in.
    endpoint = FakeEndpoint()
    scheduler = PollScheduler(endpoint.poll, model=known_model(), concurrency=1)
    loop = asyncio.get_running_loop()
    for scan_id in ("young", "old"):
        endpoint.start(scan_id, 10_000.0)
    scheduler.note_started("young")
    scheduler._started["old"] = (loop.time() - 80.0, None)  # started 80 s ago
    waiters = [asyncio.create_task(scheduler.wait(s)) for s in ("young", "old")]
    await asyncio.sleep(0)
    young, old = scheduler._watches["young"], scheduler._watches["old"]
    now = loop.time()
    # Both due now, the young one first in the heap: the pick must still take the old one.
    scheduler._push(young, now - 2.0)
    scheduler._push(old, now - 1.0)
    assert scheduler._chance(old, now) > scheduler._chance(young, now)
    assert scheduler._pick(now) is old
    for waiter in waiters:
        waiter.cancel()
    await scheduler.close()


async def test_before_anything_is_learned_the_oldest_due_scan_is_read_first() -> None:
    # Cold (nothing learned), reads queueing at the start of a job: of two scans due at once,
    # the one that has run longer is likelier finished whatever the durations, so it goes
    # first even if the other fell due earlier.
    endpoint = FakeEndpoint()
    scheduler = PollScheduler(endpoint.poll, concurrency=1)
    loop = asyncio.get_running_loop()
    for scan_id in ("young", "old"):
        endpoint.start(scan_id, 10_000.0)
    scheduler.note_started("young")
    scheduler._started["old"] = (loop.time() - 40.0, None)
    waiters = [asyncio.create_task(scheduler.wait(s)) for s in ("young", "old")]
    await asyncio.sleep(0)
    young, old = scheduler._watches["young"], scheduler._watches["old"]
    assert not scheduler.model.ready
    now = loop.time()
    scheduler._push(young, now - 2.0)
    scheduler._push(old, now - 1.0)
    assert scheduler._pick(now) is old
    for waiter in waiters:
        waiter.cancel()
    await scheduler.close()
