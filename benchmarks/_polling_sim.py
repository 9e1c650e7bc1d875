"""Polling in simulated time: the real ``PollScheduler`` and limiter on a looptime loop.

A fake result endpoint knows when each scan ends; reads take ``LATENCY`` s and count at a
sliding-log server (60 a minute). Nothing real waits, so a 30-minute stream takes a second or
two of CPU and the figures carry no noise from a busy machine. ``polling.py`` prints these next
to the emulator runs.
"""

from __future__ import annotations

import asyncio
import collections
import math
import random
from collections.abc import Callable, Sequence

import attrs
import looptime

from imagetwin_async import RateLimit, ScanPending, ScanResult
from imagetwin_async._durations import DurationModel, ScanFeatures
from imagetwin_async._polling import PollScheduler

LATENCY = 0.05
READS = (60, 60.0)


@attrs.define
class SimResult:
    indexed: dict[int, float]  # scan number -> delay
    reads: int
    rejected: int
    scans: int
    tail_reads: int = 0  # reads after the last scan started (the budget idles more and more)

    @property
    def delays(self) -> list[float]:
        return list(self.indexed.values())

    @property
    def mean(self) -> float:
        return sum(self.delays) / len(self.delays)

    @property
    def reads_per_scan(self) -> float:
        return self.reads / self.scans


class _Server:
    """Sliding-log 60/60 s at receipt; scans end at known times."""

    def __init__(self) -> None:
        self.ends: dict[str, float] = {}
        self.log: collections.deque[float] = collections.deque()
        self.reads = 0
        self.rejected = 0
        self.all_started = False
        self.tail_reads = 0

    async def read(self, scan_id: str) -> tuple[int, float]:
        """(status, retry_after): 200, 202 or 429."""
        await asyncio.sleep(LATENCY / 2)
        now = asyncio.get_running_loop().time()
        while self.log and self.log[0] <= now - READS[1]:
            self.log.popleft()
        if len(self.log) >= READS[0]:
            self.rejected += 1
            retry = self.log[0] + READS[1] - now
            await asyncio.sleep(LATENCY / 2)
            return 429, retry
        self.log.append(now)
        self.reads += 1
        self.tail_reads += self.all_started
        done = now >= self.ends[scan_id]
        await asyncio.sleep(LATENCY / 2)
        return (200 if done else 202), 0.0


class _Bucket:
    """aiolimiter's AsyncLimiter(60, 60) semantics (burst 60, one more a second), FIFO; its own
    timer targets exact refill instants, which a simulated clock rounds to now for ever."""

    def __init__(self, size: int, per: float) -> None:
        self.size, self.rate = size, size / per
        self.level = float(size)
        self.at = 0.0
        self.gate = asyncio.Lock()

    async def acquire(self) -> None:
        async with self.gate:
            loop = asyncio.get_running_loop()
            while True:
                now = loop.time()
                self.level = min(self.size, self.level + (now - self.at) * self.rate)
                self.at = now
                if self.level >= 1.0:
                    self.level -= 1.0
                    return
                await asyncio.sleep((1.0 - self.level) / self.rate + 1e-6)


def _result(scan_id: str) -> ScanResult:
    return ScanResult(scan_id, 0, 0, 0, "https://r/x.pdf", "https://r/x", 0.33, 0, 0.0)


Draw = Callable[[random.Random, int], tuple[float, ScanFeatures | None]]


def lognormal(median: float = 60.0, sigma: float = 0.5) -> Draw:
    def draw(rng: random.Random, _: int) -> tuple[float, ScanFeatures | None]:
        return rng.lognormvariate(math.log(median), sigma), ScanFeatures(pages=1, size=2000)

    return draw


def sized(median_per_page: float = 20.0, sigma: float = 0.3) -> Draw:
    """Documents of 1 to 40 pages whose durations grow with them (median 20 s a page, as the
    emulator's ``LogNormalTime(20, 0.3, page_exponent=1)`` makes them)."""

    def draw(rng: random.Random, _: int) -> tuple[float, ScanFeatures | None]:
        pages = rng.choice([1, 2, 3, 5, 8, 12, 20, 40])
        duration = rng.lognormvariate(math.log(median_per_page * pages), sigma)
        return duration, ScanFeatures(pages=pages, size=pages * 150_000)

    return draw


async def _ours(
    n: int, gap: float, draw: Draw, seed: int, model: DurationModel | None, use_features: bool
) -> SimResult:
    server = _Server()
    limiter = RateLimit(*READS).build(name="GET /result")

    async def poll(scan_id: str) -> ScanResult | ScanPending:
        while True:
            slot = await limiter.acquire()
            try:
                status, retry = await server.read(scan_id)
            finally:
                slot.release()
            if status == 429:
                limiter.on_rate_limited(retry)
                continue
            return _result(scan_id) if status == 200 else ScanPending(scan_id)

    scheduler = PollScheduler(poll, model=model, read_rate=READS[0] / (READS[1] * 1.0034))
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    delays: dict[int, float] = {}

    async def one(i: int) -> None:
        await asyncio.sleep(i * gap)
        duration, features = draw(rng, i)
        scan_id = f"s{i}"
        server.ends[scan_id] = loop.time() + duration
        server.all_started = server.all_started or i == n - 1
        scheduler.note_started(scan_id, features=features if use_features else None)
        await scheduler.wait(scan_id)
        delays[i] = loop.time() - server.ends[scan_id]

    await asyncio.gather(*(one(i) for i in range(n)))
    await scheduler.close()
    return SimResult(delays, server.reads, server.rejected, n, server.tail_reads)


async def _naive(n: int, gap: float, draw: Draw, seed: int, every: float) -> SimResult:
    server = _Server()
    limiter = _Bucket(*READS)
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    delays: dict[int, float] = {}

    async def one(i: int) -> None:
        await asyncio.sleep(i * gap)
        duration, _ = draw(rng, i)
        scan_id = f"s{i}"
        server.ends[scan_id] = loop.time() + duration
        server.all_started = server.all_started or i == n - 1
        while True:
            await asyncio.sleep(every)
            while True:
                await limiter.acquire()
                status, _retry = await server.read(scan_id)
                if status != 429:
                    break
                await asyncio.sleep(_retry)
            if status == 200:
                break
        delays[i] = loop.time() - server.ends[scan_id]

    await asyncio.gather(*(one(i) for i in range(n)))
    return SimResult(delays, server.reads, server.rejected, n, server.tail_reads)


def run(coro_factory: Callable[[], object]) -> SimResult:
    loop = looptime.new_event_loop(start=1000.0)
    try:
        return loop.run_until_complete(coro_factory())  # type: ignore[arg-type]
    finally:
        loop.close()


def ours(
    n: int,
    *,
    gap: float = 3.0,
    draw: Draw | None = None,
    seed: int = 0,
    model: DurationModel | None = None,
    use_features: bool = True,
) -> SimResult:
    d = draw or lognormal()
    return run(lambda: _ours(n, gap, d, seed, model, use_features))


def naive(
    n: int, every: float, *, gap: float = 3.0, draw: Draw | None = None, seed: int = 0
) -> SimResult:
    d = draw or lognormal()
    return run(lambda: _naive(n, gap, d, seed, every))


def best_naive(n: int, everies: Sequence[float], **kw: object) -> tuple[float, SimResult]:
    runs = [(e, naive(n, e, **kw)) for e in everies]  # type: ignore[arg-type]
    return min(runs, key=lambda r: r[1].mean)


def warm_model(seed: int = 99, n: int = 120, draw: Draw | None = None) -> DurationModel:
    """A model that has seen a previous short job, restored as a new run would."""
    previous = DurationModel()
    rng = random.Random(seed)
    d = draw or lognormal()
    for i in range(n):
        duration, features = d(rng, i)
        previous.observe(duration * 0.8, duration * 1.1, features)
    model = DurationModel()
    model.restore(previous.state())
    return model
