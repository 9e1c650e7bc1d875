"""The poll scheduler: one per client, spending the result-read budget where it pays most.

Every scan someone waits for is *watched*. One background task picks which watched scan to
read next, one read at a time through the client's result limiter (so the scheduler can never
exceed the budget, however many scans wait), and hands each result to every waiter of that
scan.

Which scan? Each scan has a *due* time, and among the scans that are due the scheduler reads
the one most likely to have finished since it was last read:

- Cold (fewer than ``min_samples`` durations seen): the first read of a scan comes
  ``poll_interval`` after it started (at once for a scan we did not see start), later reads
  back off by ``backoff`` up to ``max_poll_interval``; among due scans the longest overdue
  goes first (round robin).
- Learned: each finished scan says only that it ended between its last "still running" read
  and its first "done" read; ``DurationModel`` fits a log-normal to those intervals as they
  are (maximum likelihood for interval-censored data, by expectation-maximisation), not to
  their midpoints, which would drift later with every scan found done at its first read. A
  scan is due when the chance that it has finished since its last read reaches
  ``target_probability`` (and at the latest ``max_poll_interval`` after that read); among due
  scans the most likely finished goes first.
  So new scans are first read near the typical duration, then more often while they are likely
  done, then less often as they run long.
- A callback (``hint``) makes a scan due at once and first in line.

Scans started with a callback URL are read only at ``max_poll_interval`` until the callback
comes: the callback does the waiting, polling is the safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import statistics
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final

import attrs

from ._errors import (
    ImagetwinError,
    PollTimeout,
    RateLimited,
    ScanCancelled,
    ServiceUnavailable,
    TransportError,
)
from ._models import ScanPending, ScanResult

__all__ = ["DurationModel", "PollScheduler", "SchedulerStats"]

logger = logging.getLogger("imagetwin_async.polling")

PollFn = Callable[[str], Awaitable[ScanResult | ScanPending]]

# Errors that say "try again later" rather than "this scan is lost": keep watching.
_TRANSIENT: Final = (TransportError, RateLimited, ServiceUnavailable)
# How many due scans to weigh per read: bounds the work per read with 10,000 scans waiting.
_CANDIDATES: Final = 256
_MIN_SIGMA: Final = 0.05


def _normal_pdf(x: float) -> float:
    return 0.0 if math.isinf(x) else math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _truncated_moments(mu: float, sigma: float, low: float, high: float) -> tuple[float, float]:
    """Mean and variance of N(mu, sigma^2) restricted to [low, high]."""
    alpha, beta = (low - mu) / sigma, (high - mu) / sigma
    mass = _normal_cdf(beta) - _normal_cdf(alpha)
    if mass < 1e-12:  # an exact observation, or all the mass beyond one end: take that end
        return (high if beta < 0 else low if not math.isinf(low) else high), 0.0
    pdf_a, pdf_b = _normal_pdf(alpha), _normal_pdf(beta)
    tail_a = 0.0 if math.isinf(alpha) else alpha * pdf_a
    tail_b = 0.0 if math.isinf(beta) else beta * pdf_b
    ratio = (pdf_a - pdf_b) / mass
    variance = sigma * sigma * max(1.0 + (tail_a - tail_b) / mass - ratio * ratio, 0.0)
    return mu + sigma * ratio, variance


class DurationModel:
    """Learns how long scans take: a log-normal fitted to recent durations.

    >>> model = DurationModel()
    >>> for seconds in (50, 60, 70, 55, 65): model.observe(seconds)
    >>> round(model.cdf(60.0), 1)
    0.5

    A poller never sees a scan end: it sees it still running at one read and finished at the
    next, so most observations are intervals, ``observe(low, high)``. Fitting their midpoints
    (or the finishing read) biases the fit: every scan found done at its first read collapses
    onto that read's age, the fitted median creeps later, the first read with it, and so on.
    The fit is the maximum-likelihood log-normal for interval-censored data, by a few rounds of
    expectation-maximisation started from the previous fit.
    """

    def __init__(self, *, window: int = 200, min_samples: int = 5) -> None:
        # Each observation as (log low, log high); low is -inf for "before the first read".
        self._intervals: deque[tuple[float, float]] = deque(maxlen=window)
        self._min_samples = min_samples
        self._fit: tuple[float, float] | None = None

    @property
    def ready(self) -> bool:
        return self._fit is not None

    @property
    def fit(self) -> tuple[float, float] | None:
        """(mu, sigma) of log-seconds, or None before ``min_samples`` observations."""
        return self._fit

    def observe(self, low: float, high: float | None = None) -> None:
        """A scan took between ``low`` and ``high`` seconds (exactly ``low`` if no ``high``).

        ``low`` is its age at the last read that found it running (0: none did), ``high``
        its age when the read that found it finished was answered.
        """
        high = low if high is None else high
        log_low = math.log(low) if low > 0 else -math.inf
        log_high = max(math.log(max(high, 1e-6)), log_low)
        self._intervals.append((log_low, log_high))
        if len(self._intervals) >= self._min_samples:
            self._fit = self._refit()

    def _refit(self) -> tuple[float, float]:
        intervals = self._intervals
        if self._fit is None:
            points = [high if math.isinf(low) else (low + high) / 2 for low, high in intervals]
            mu = statistics.fmean(points)
            sigma = max(statistics.pstdev(points, mu), _MIN_SIGMA)
        else:
            mu, sigma = self._fit
        for _ in range(30):
            first = second = 0.0
            for low, high in intervals:
                mean, variance = _truncated_moments(mu, sigma, low, high)
                first += mean
                second += variance + mean * mean
            new_mu = first / len(intervals)
            # A floor on sigma keeps a run of identical durations from making the model certain.
            new_sigma = max(math.sqrt(max(second / len(intervals) - new_mu**2, 0.0)), _MIN_SIGMA)
            converged = abs(new_mu - mu) < 1e-4 and abs(new_sigma - sigma) < 1e-4
            mu, sigma = new_mu, new_sigma
            if converged:
                break
        return mu, sigma

    def cdf(self, seconds: float) -> float:
        """P(duration <= seconds) under the fitted model (0.0 before it has a fit)."""
        if self._fit is None or seconds <= 0:
            return 0.0
        mu, sigma = self._fit
        return 0.5 * math.erfc(-(math.log(seconds) - mu) / (sigma * math.sqrt(2.0)))

    def quantile_after(self, seconds: float, probability: float) -> float:
        """The age by which a scan still running at ``seconds`` has finished with
        ``probability`` (conditional quantile), by bisection on the CDF."""
        assert self._fit is not None
        start = self.cdf(seconds)
        goal = start + probability * (1.0 - start)
        if goal >= 1.0 - 1e-12:
            return math.inf
        low, high = max(seconds, 0.0), max(seconds, 1.0)
        while self.cdf(high) < goal:
            high *= 2.0
            if high > 1e12:
                return math.inf
        for _ in range(50):
            mid = (low + high) / 2.0
            low, high = (mid, high) if self.cdf(mid) < goal else (low, mid)
        return high


@attrs.define
class SchedulerStats:
    """Counters for benchmarks and dashboards."""

    reads: int = 0
    finished: int = 0
    failed: int = 0
    hints: int = 0


@attrs.define(eq=False)
class _Watch:
    scan_id: str
    started: float  # loop time the scan started (or was first seen)
    known_start: bool  # did we see it start? only then is its duration worth learning
    expect_callback: bool = False
    waiters: set[asyncio.Future[ScanResult]] = attrs.field(factory=set)
    last_read: float | None = None
    seen_running: float | None = None  # when a read last answered "still running"
    reads: int = 0
    due: float = 0.0
    gap: float = 0.0  # the cold schedule's current gap
    hinted: bool = False
    reading: bool = False


class PollScheduler:
    """Polls every watched scan through one task, within the result budget.

    >>> scheduler = PollScheduler(client.get_result, poll_interval=5, max_poll_interval=60)
    >>> result = await scheduler.wait(scan_id, timeout=600)

    ``poll`` reads one result (the client's rate-limited ``get_result``). ``concurrency``
    bounds the reads in flight at once; the limiter inside ``poll`` bounds their rate.
    """

    def __init__(
        self,
        poll: PollFn,
        *,
        poll_interval: float = 5.0,
        max_poll_interval: float = 60.0,
        backoff: float = 1.5,
        target_probability: float = 0.3,
        concurrency: int = 4,
        model: DurationModel | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._poll = poll
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self._backoff = backoff
        self._target = target_probability
        self._concurrency = asyncio.Semaphore(concurrency)
        self.model = model or DurationModel()
        self._clock = clock
        self._watches: dict[str, _Watch] = {}
        self._started: dict[str, float] = {}  # scans we saw start, before anyone waits
        self._expect_callback: set[str] = set()
        # Callbacks for scans that started but nobody waits for yet (the waiter is a moment
        # late, as in a web handler that answers before it waits): read them at once later.
        self._early_hints: set[str] = set()
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reads: set[asyncio.Task[None]] = set()
        self._closed = False
        self._watch_listeners: list[Callable[[str, bool], None]] = []
        self.stats = SchedulerStats()

    # ---- public ---------------------------------------------------------------------------

    def now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    @property
    def waiting(self) -> int:
        """How many scans are being polled."""
        return len(self._watches)

    def note_started(self, scan_id: str, *, expect_callback: bool = False) -> None:
        """Record that ``scan_id`` started now, so its age (and duration) is known."""
        if len(self._started) > 100_000:  # started but never waited for: forget the oldest
            oldest = next(iter(self._started))
            del self._started[oldest]
            self._early_hints.discard(oldest)
            self._expect_callback.discard(oldest)
        self._started[scan_id] = self._now_or_zero()
        if expect_callback:
            self._expect_callback.add(scan_id)

    async def wait(self, scan_id: str, *, timeout: float | None = None) -> ScanResult:
        """The scan's result once it has finished; ``PollTimeout`` after ``timeout`` s."""
        if self._closed:
            raise ScanCancelled("the client is closed")
        future: asyncio.Future[ScanResult] = asyncio.get_running_loop().create_future()
        watch = self._watch(scan_id)
        watch.waiters.add(future)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise PollTimeout(
                f"scan {scan_id} did not finish within {timeout} s (it may still finish)",
                scan_id=scan_id,
            ) from None
        finally:
            watch.waiters.discard(future)
            future.cancel()
            if not watch.waiters and self._watches.get(scan_id) is watch:
                # Nobody waits any more: stop polling it.
                del self._watches[scan_id]
                self._tell(scan_id, watching=False)

    def hint(self, scan_id: str) -> bool:
        """Read ``scan_id`` as soon as a read is free (a callback said it ended).

        A hint for a scan nobody waits for is ignored, unless the scan was seen to start:
        then its first read, once someone waits, comes at once. It never marks anything done.
        """
        watch = self._watches.get(scan_id)
        if watch is None:
            if scan_id not in self._started:
                return False
            self.stats.hints += 1
            self._early_hints.add(scan_id)
            return True
        self.stats.hints += 1
        watch.hinted = True
        self._push(watch, self.now())
        return True

    def wrap_poll(self, wrap: Callable[[PollFn], PollFn]) -> PollFn:
        """Route every read through ``wrap(read)``; returns the read it replaced.

        A fleet (``imagetwin_async.fleet``) shares finished results among processes this way.
        """
        previous = self._poll
        self._poll = wrap(previous)
        return previous

    def add_watch_listener(self, listener: Callable[[str, bool], None]) -> Callable[[], None]:
        """Call ``listener(scan_id, True)`` when a scan starts being waited for here, and
        ``listener(scan_id, False)`` when nobody here waits any more (a fleet shares who reads
        which scan this way); returns a function that removes the listener."""
        self._watch_listeners.append(listener)
        return lambda: self._watch_listeners.remove(listener)

    async def close(self) -> None:
        """Stop polling; every waiter gets ``ScanCancelled``."""
        self._closed = True
        tasks = [t for t in (self._task, *self._reads) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for watch in self._watches.values():
            for future in watch.waiters:
                if not future.done():
                    future.set_exception(ScanCancelled("the client was closed"))
            self._tell(watch.scan_id, watching=False)
        self._watches.clear()
        self._heap.clear()
        self._task = None
        # Closed is a pause, not an end: a client used again (a second ``async with``) waits
        # for its new scans as before.
        self._closed = False

    # ---- scheduling -----------------------------------------------------------------------

    def _now_or_zero(self) -> float:
        try:
            return self.now()
        except RuntimeError:  # no running loop (called from sync code): age unknown
            return 0.0

    def _watch(self, scan_id: str) -> _Watch:
        watch = self._watches.get(scan_id)
        if watch is not None:
            return watch
        now = self.now()
        started = self._started.pop(scan_id, None)
        watch = _Watch(
            scan_id,
            started=started if started is not None else now,
            known_start=started is not None,
            expect_callback=scan_id in self._expect_callback,
        )
        self._expect_callback.discard(scan_id)
        if scan_id in self._early_hints:
            self._early_hints.discard(scan_id)
            watch.hinted = True
        self._watches[scan_id] = watch
        self._schedule(watch, now)
        self._tell(scan_id, watching=True)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="imagetwin-poll")
        return watch

    def _tell(self, scan_id: str, *, watching: bool) -> None:
        for listener in self._watch_listeners:
            try:
                listener(scan_id, watching)
            except Exception:  # a broken listener must not stop a wait
                logger.exception("a watch listener failed for %s", scan_id)

    def _schedule(self, watch: _Watch, now: float) -> None:
        """Set the scan's next due time from what we know."""
        if watch.hinted:
            due = now
        elif watch.expect_callback:
            due = (watch.last_read or watch.started) + self.max_poll_interval
        elif watch.last_read is None:
            # A scan we did not see start may be long finished: read it at once.
            due = watch.started + self._first_delay() if watch.known_start else now
            watch.gap = self.poll_interval
        elif self.model.ready and watch.known_start:
            age = watch.last_read - watch.started
            next_age = self.model.quantile_after(age, self._target)
            gap = min(max(next_age - age, self.poll_interval / 4), self.max_poll_interval)
            due = watch.last_read + gap
        else:
            watch.gap = min(watch.gap * self._backoff, self.max_poll_interval)
            due = watch.last_read + watch.gap
        self._push(watch, due)

    def _first_delay(self) -> float:
        if not self.model.ready:
            return self.poll_interval
        # max_poll_interval bounds the gap between two reads; before the first read the model
        # knows better: reading a scan that surely still runs only spends the budget.
        return max(self.model.quantile_after(0.0, self._target), self.poll_interval)

    def _push(self, watch: _Watch, due: float) -> None:
        watch.due = due
        heapq.heappush(self._heap, (due, next(self._seq), watch.scan_id))
        self._wake.set()

    def _pick(self, now: float) -> _Watch | float | None:
        """The scan to read now, or the time the next one falls due (None: nothing watched)."""
        due: list[_Watch] = []
        while self._heap and len(due) < _CANDIDATES:
            when, _, scan_id = self._heap[0]
            watch = self._watches.get(scan_id)
            if watch is None or watch.due != when or watch.reading:
                heapq.heappop(self._heap)  # stale entry: rescheduled, finished or being read
                continue
            if when > now:
                break
            heapq.heappop(self._heap)
            due.append(watch)
        if not due:
            return self._heap[0][0] if self._heap else None
        best = max(due, key=lambda w: self._priority(w, now))
        for watch in due:
            if watch is not best:
                heapq.heappush(self._heap, (watch.due, next(self._seq), watch.scan_id))
        return best

    def _priority(self, watch: _Watch, now: float) -> tuple[int, float]:
        if watch.hinted:
            return (2, now - watch.due)
        if self.model.ready and watch.known_start:
            last_age = (watch.last_read or watch.started) - watch.started
            done_before = self.model.cdf(last_age)
            chance = (self.model.cdf(now - watch.started) - done_before) / max(
                1.0 - done_before, 1e-12
            )
            return (1, chance)
        return (0, now - watch.due)  # round robin: the longest overdue first

    async def _run(self) -> None:
        while True:
            await self._concurrency.acquire()
            try:
                watch = await self._next_due()
            except BaseException:
                self._concurrency.release()
                raise
            watch.reading = True
            task = asyncio.get_running_loop().create_task(self._read(watch))
            self._reads.add(task)
            task.add_done_callback(self._reads.discard)

    async def _next_due(self) -> _Watch:
        while True:
            now = self.now()
            picked = self._pick(now)
            if isinstance(picked, _Watch):
                return picked
            self._wake.clear()
            timeout = None if picked is None else max(picked - now, 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _read(self, watch: _Watch) -> None:
        try:
            watch.hinted = False
            try:
                answer = await self._poll(watch.scan_id)
            except _TRANSIENT as exc:
                logger.debug("poll of %s failed (%s); will retry", watch.scan_id, exc)
                watch.last_read = self.now()
                # A callback that came in meanwhile still deserves its immediate read.
                retry = (
                    watch.last_read if watch.hinted else watch.last_read + self.max_poll_interval
                )
                self._push(watch, retry)
                return
            except ImagetwinError as exc:
                self.stats.failed += 1
                self._finish(watch, exc)
                return
            except Exception as exc:  # a bug must reach the waiters, not leave them hanging
                logger.exception("poll of %s failed unexpectedly", watch.scan_id)
                error = ImagetwinError(f"polling failed: {type(exc).__name__}: {exc}")
                error.__cause__ = exc
                self.stats.failed += 1
                self._finish(watch, error)
                return
            finally:
                self.stats.reads += 1
                watch.reads += 1
            now = self.now()
            if isinstance(answer, ScanResult):
                self.stats.finished += 1
                if watch.known_start:
                    # It ended after the last read that saw it running (if any), before this
                    # answer: an interval, which the model takes as such.
                    seen = watch.seen_running
                    running = seen - watch.started if seen is not None else 0.0
                    self.model.observe(running, now - watch.started)
                self._finish(watch, answer)
            else:
                watch.last_read = watch.seen_running = now
                if self._watches.get(watch.scan_id) is watch:
                    self._schedule(watch, now)
        finally:
            watch.reading = False
            self._concurrency.release()
            self._wake.set()

    def _finish(self, watch: _Watch, outcome: ScanResult | ImagetwinError) -> None:
        if self._watches.get(watch.scan_id) is watch:
            del self._watches[watch.scan_id]
            self._tell(watch.scan_id, watching=False)
        for future in watch.waiters:
            if future.done():
                continue
            if isinstance(outcome, ScanResult):
                future.set_result(outcome)
            else:
                future.set_exception(outcome)
