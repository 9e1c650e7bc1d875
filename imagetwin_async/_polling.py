"""The poll scheduler: one per client, spending the result-read budget where it pays most.

Every scan someone waits for is *watched*. One background task picks which watched scan to
read next, one read at a time through the client's result limiter (so the scheduler can never
exceed the budget, however many scans wait), and hands each result to every waiter of that
scan.

Which scan? Each scan has a *due* time, kept in a heap, and callbacks (``hint``) have a queue
of their own that is served first. A decision costs O(log n) whatever n:

- Cold (fewer than ``min_samples`` durations seen and nothing restored): the first read of a
  scan comes ``poll_interval`` after it started (at once for a scan we did not see start),
  later reads back off by ``backoff`` up to ``max_poll_interval``: a geometric search for a
  time scale nobody told us. Among the few due scans at the top of the heap, the one likeliest
  finished under the model's weak prior goes first (in effect the oldest): the prior orders
  scans that are due together, it never decides when one is read.
- Learned: durations of finished scans are fitted with a log-normal (``DurationModel``, per
  scan features when the client knows them). A scan is due once the chance that it
  finished since its last read reaches the reserve ``min_probability`` (and at the latest
  ``max_poll_interval`` after that read). Each read goes to the due scan most likely to have
  finished since its last read (among the few at the top of the heap): the read that saves
  the most expected delay, since every finished scan waiting for a read adds to the delay
  at the same rate. While the budget idles, scans are read as they reach the reserve; while
  reads queue for it, the chance at which scans are read rises by itself until the reads
  asked for match the budget: a price that clears at every read, with no controller to lag
  behind the load. Reading each scan when that chance reaches a constant ``p`` costs ``1/p``
  reads a scan and is within 2% of the least mean delay any poller can reach with as many
  reads (``benchmarks/polling_bound.py``'s dynamic programme). A scan the model cannot score
  (seen by id only) goes first once overdue by a whole ``max_poll_interval``, so it never
  starves behind likelier ones.
- A callback (``hint``) makes a scan due at once and first in line.

Reads are paced at the budget's rate with a burst of two (``read_burst``): a read the budget
allows now is given to the best scan now, not promised early to one that then waits in the
limiter, and a lull's reads never come out of the next minute's window; the second token
absorbs a late wake-up of the loop.

Scans started with a callback URL are read only at ``max_poll_interval`` until the callback
comes: the callback does the waiting, polling is the safety net.

The model can start warm: ``model_store`` (a ``ModelStore``) is read before the first wait
and written when the scheduler closes (and every so often while it runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from statistics import NormalDist
from typing import Final

import attrs

from ._durations import DurationModel, ScanFeatures, conditional_quantile, lognormal_cdf
from ._errors import (
    ImagetwinError,
    LimiterUnavailable,
    PollTimeout,
    RateLimited,
    ScanCancelled,
    ServiceUnavailable,
    TransportError,
)
from ._limits import Limiter, RateLimit
from ._models import ScanPending, ScanResult
from ._modelstore import ModelStore

__all__ = ["DurationModel", "PollScheduler", "ScanFeatures", "SchedulerStats", "read_rate_of"]

logger = logging.getLogger("imagetwin_async.polling")

PollFn = Callable[[str], Awaitable[ScanResult | ScanPending]]

# Errors that say "try again later" rather than "this scan is lost": keep watching.
_TRANSIENT: Final = (TransportError, RateLimited, ServiceUnavailable)
# How many heap entries to weigh per decision once the model is learned: the top four levels
# of the heap hold the earliest due scans; the most likely finished among them goes first.
_CANDIDATES: Final = 15
# Loop timers may fire a hair before their deadline (looptime rounds to microseconds): a scan
# this close to its due time is due, or the picker would re-arm for a sliver for ever.
_CLOCK_SLACK: Final = 1e-5
_SQRT2: Final = math.sqrt(2.0)
# The reserve: a learned scan is due once it is this likely to have finished since its last
# read (about 1/0.15 = 7 reads a scan while the budget idles; fewer while reads queue).
_RESERVE: Final = 0.15
# How fast ``target_probability`` (the chance at which scans are being read) follows reads.
_AVERAGE: Final = 0.05
# Save the learned model every this many finished scans (besides on close).
_SAVE_EVERY: Final = 100


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
    features: ScanFeatures | None = None
    waiters: set[asyncio.Future[ScanResult]] = attrs.field(factory=set)
    last_read: float | None = None
    seen_running: float | None = None  # when a read last answered "still running"
    reads: int = 0
    due: float = 0.0
    key: int = 0  # matches the heap entry that is current; older entries are stale
    gap: float = 0.0  # the cold schedule's current gap
    hinted: bool = False
    reading: bool = False
    active: bool = True  # still watched (someone waits, no outcome yet)
    learned: bool = False  # scheduled from the model (not the cold schedule)
    mu: float = 0.0  # the model's location for this scan, at model version `version`
    version: int = -1
    done_before: float = 0.0  # P(duration <= age at the last read), for the chance score


def _expire(future: asyncio.Future[ScanResult], scan_id: str, timeout: float) -> None:
    if not future.done():
        future.set_exception(
            PollTimeout(
                f"scan {scan_id} did not finish within {timeout} s (it may still finish)",
                scan_id=scan_id,
            )
        )


class PollScheduler:
    """Polls every watched scan through one task, within the result budget.

    >>> scheduler = PollScheduler(client.get_result, poll_interval=5, max_poll_interval=60)
    >>> result = await scheduler.wait(scan_id, timeout=600)

    ``poll`` reads one result (the client's rate-limited ``get_result``). ``concurrency``
    bounds the reads in flight at once; the limiter inside ``poll`` bounds their rate, and
    ``read_rate`` (reads a second) / ``read_burst`` pace the reads below it.
    ``min_probability`` is the reserve: a learned scan is read once it is at least this
    likely to have finished since its last read (default: 0.15, or ``target_probability`` if
    lower); ``target_probability`` is where the reported ``target_probability`` average
    starts. ``model_store`` keeps what was learned across runs.
    """

    def __init__(
        self,
        poll: PollFn,
        *,
        poll_interval: float = 5.0,
        max_poll_interval: float = 60.0,
        backoff: float = 1.5,
        target_probability: float = 0.3,
        min_probability: float | None = None,
        concurrency: int = 4,
        read_rate: float | None = None,
        read_burst: int = 2,
        model: DurationModel | None = None,
        model_store: ModelStore | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._poll = poll
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self._backoff = backoff
        self._target = target_probability
        self._reserve = (
            min(_RESERVE, target_probability) if min_probability is None else min_probability
        )
        self._z = NormalDist().inv_cdf(self._reserve)
        self._concurrency = asyncio.Semaphore(concurrency)
        # Pacing: a token bucket of ``read_burst`` refilled at ``read_rate``. Reads spread
        # evenly never pile into one window of a windowed budget and starve the next, and a
        # read is given to a scan only when the budget has it.
        self._rate = read_rate if read_rate is not None and read_rate > 0 else None
        self._burst = float(max(read_burst, 1))
        self._tokens = self._burst
        self._tokens_at = -math.inf
        self._pacing: asyncio.Future[None] | None = None  # the picker waits for a token
        self.model: DurationModel = model or DurationModel()
        self.model_store = model_store
        self._store_loaded = model_store is None
        self._load_lock: asyncio.Lock | None = None
        self._clock = clock
        self._watches: dict[str, _Watch] = {}
        self._started: dict[str, tuple[float, ScanFeatures | None]] = {}  # seen to start
        self._expect_callback: set[str] = set()
        # Callbacks for scans that started but nobody waits for yet (the waiter is a moment
        # late, as in a web handler that answers before it waits): read them at once later.
        self._early_hints: set[str] = set()
        self._heap: list[tuple[float, int, _Watch]] = []
        self._hints: deque[_Watch] = deque()
        self._keys = 0
        self._waker: asyncio.Future[None] | None = None
        self._sleep_until = math.inf  # when the picker wakes by itself
        self._task: asyncio.Task[None] | None = None
        self._reads: set[asyncio.Task[None]] = set()
        self._closed = False
        self._was_ready = self.model.ready
        self._since_save = 0
        self._saving: asyncio.Task[None] | None = None
        self._watch_listeners: list[Callable[[str, bool], None]] = []
        self._observation_listeners: list[Callable[[float, float, ScanFeatures | None], None]] = []
        self.stats: SchedulerStats = SchedulerStats()

    # ---- public ---------------------------------------------------------------------------

    def now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    @property
    def waiting(self) -> int:
        """How many scans are being polled."""
        return len(self._watches)

    def note_started(
        self,
        scan_id: str,
        *,
        expect_callback: bool = False,
        features: ScanFeatures | None = None,
    ) -> None:
        """Record that ``scan_id`` started now, so its age (and duration) is known.

        ``features`` (pages, images, bytes of the upload) let the model predict this scan's
        duration from scans like it.
        """
        if len(self._started) > 100_000:  # started but never waited for: forget the oldest
            oldest = next(iter(self._started))
            del self._started[oldest]
            self._early_hints.discard(oldest)
            self._expect_callback.discard(oldest)
        self._started[scan_id] = (self._now_or_zero(), features)
        if expect_callback:
            self._expect_callback.add(scan_id)

    async def wait(self, scan_id: str, *, timeout: float | None = None) -> ScanResult:
        """The scan's result once it has finished; ``PollTimeout`` after ``timeout`` s."""
        if self._closed:
            raise ScanCancelled("the client is closed")
        if not self._store_loaded:
            await self.load_model()
        loop = asyncio.get_running_loop()
        # The waiter's own future is all it needs: each waiter has one, so cancelling one
        # waiter cancels only its future, and a timer (not a wrapper task) times it out.
        future: asyncio.Future[ScanResult] = loop.create_future()
        watch = self._watch(scan_id)
        watch.waiters.add(future)
        timer = (
            None if timeout is None else loop.call_later(timeout, _expire, future, scan_id, timeout)
        )
        try:
            return await future
        finally:
            if timer is not None:
                timer.cancel()
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: a timeout that lost to a cancellation is no leak
            else:
                future.cancel()
            watch.waiters.discard(future)
            if not watch.waiters and watch.active:
                # Nobody waits any more: stop polling it.
                self._forget(watch)

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
        if not watch.hinted:
            watch.hinted = True
            if not watch.reading:
                self._hints.append(watch)
                self._wake(-math.inf)
        return True

    async def load_model(self) -> bool:
        """Start the model from ``model_store`` (once; later calls do nothing).

        A state that cannot be read or parsed is logged and ignored: the model starts cold.
        """
        if self._store_loaded or self.model_store is None:
            return False
        if self._load_lock is None:
            self._load_lock = asyncio.Lock()
        async with self._load_lock:
            if self._store_loaded:
                return False
            self._store_loaded = True
            try:
                state = await self.model_store.load()
                taken = self.model.restore(state) if state is not None else 0
            except Exception as exc:  # a damaged store must never stop anyone's wait
                logger.warning("ignoring the stored duration model: %s", exc)
                return False
            if taken:
                logger.debug("duration model started warm from %d observations", taken)
                self._model_changed()
            return bool(taken)

    async def warm_start(self, store: ModelStore) -> bool:
        """Start the model from ``store`` if it has learned nothing yet in this process (a
        batch's journal, say); a damaged state is logged and ignored."""
        if self.model.ready:
            return False
        try:
            state = await store.load()
            taken = self.model.restore(state) if state is not None else 0
        except Exception as exc:  # a damaged store must never stop a batch
            logger.warning("ignoring the stored duration model: %s", exc)
            return False
        if taken:
            self._model_changed()
        return bool(taken)

    async def save_model(self, store: ModelStore | None = None) -> None:
        """Write what the model has learned to ``store`` (default ``model_store``); errors
        are logged."""
        store = store if store is not None else self.model_store
        if store is None or not self.model.observations:
            return
        try:
            await store.save(self.model.state())
        except Exception as exc:  # losing a cache must not fail a run
            logger.warning("could not save the duration model: %s", exc)

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

    def observe(self, low: float, high: float, features: ScanFeatures | None = None) -> None:
        """Learn that a scan took between ``low`` and ``high`` seconds, and tell the
        observation listeners (``DurationModel.observe`` alone tells nobody)."""
        self.model.observe(low, high, features)
        for listener in self._observation_listeners:
            try:
                listener(low, high, features)
            except Exception:  # a broken listener must not stop polling
                logger.exception("an observation listener failed")

    def add_observation_listener(
        self, listener: Callable[[float, float, ScanFeatures | None], None]
    ) -> Callable[[], None]:
        """Call ``listener(low, high, features)`` for every scan duration learnt here (a fleet
        shares them with the other processes); returns a function that removes it."""
        self._observation_listeners.append(listener)
        return lambda: self._observation_listeners.remove(listener)

    # ---- hooks for a fleet's one schedule (imagetwin_async.fleet) ------------------------

    def note_started_ago(
        self,
        scan_id: str,
        age: float,
        *,
        expect_callback: bool = False,
        features: ScanFeatures | None = None,
    ) -> None:
        """``note_started`` for a scan that started ``age`` seconds ago, in another process
        (a fleet's elected scheduler polls the scans every worker waits for)."""
        self.note_started(scan_id, expect_callback=expect_callback, features=features)
        started, known = self._started[scan_id]
        self._started[scan_id] = (started - max(age, 0.0), known)

    def watch_info(self, scan_id: str) -> tuple[float | None, bool, ScanFeatures | None] | None:
        """(age in seconds or None if not seen to start, callback expected, features) of a
        watched scan; None if not watched (a fleet tells its scheduler what it waits for)."""
        watch = self._watches.get(scan_id)
        if watch is None:
            return None
        age = self._now_or_zero() - watch.started if watch.known_start else None
        return age, watch.expect_callback, watch.features

    def replan(self, scan_id: str) -> bool:
        """Schedule a watched scan again from what its reads saw (its start, the last read
        that found it running), forgetting reads that saw nothing (a fleet worker that left
        them to another process and now polls itself). False if not watched or being read."""
        watch = self._watches.get(scan_id)
        if watch is None or not watch.active or watch.reading or watch.hinted:
            return False
        watch.last_read = watch.seen_running
        self._schedule(watch, self._now_or_zero())
        return True

    def refund_read(self) -> None:
        """Give back the pacing of a read that sent nothing to the API (a fleet worker's read
        answered from the fleet's store, or left to its scheduler): the next one, such as
        taking a result another process read, is not held back for a read never made."""
        if self._rate is not None:
            self._tokens = min(self._burst, self._tokens + 1.0)
            if self._pacing is not None and not self._pacing.done():
                self._pacing.set_result(None)

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
            watch.active = False
            for future in watch.waiters:
                if not future.done():
                    future.set_exception(ScanCancelled("the client was closed"))
            self._tell(watch.scan_id, watching=False)
        self._watches.clear()
        self._heap.clear()
        self._hints.clear()
        self._task = None
        if self._saving is not None:
            with contextlib.suppress(Exception):
                await self._saving
            self._saving = None
        if self._since_save:
            self._since_save = 0
            await self.save_model()
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
        seen = self._started.pop(scan_id, None)
        watch = _Watch(
            scan_id,
            started=seen[0] if seen is not None else now,
            known_start=seen is not None,
            expect_callback=scan_id in self._expect_callback,
            features=seen[1] if seen is not None else None,
        )
        self._expect_callback.discard(scan_id)
        self._watches[scan_id] = watch
        if scan_id in self._early_hints:
            self._early_hints.discard(scan_id)
            watch.hinted = True
            self._hints.append(watch)
            self._wake(-math.inf)
        else:
            self._schedule(watch, now)
        self._tell(scan_id, watching=True)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="imagetwin-poll")
        return watch

    def _forget(self, watch: _Watch) -> None:
        watch.active = False
        if self._watches.get(watch.scan_id) is watch:
            del self._watches[watch.scan_id]
            self._tell(watch.scan_id, watching=False)

    def _location(self, watch: _Watch) -> float:
        model = self.model
        if watch.version != model.version:
            watch.mu = model.location(watch.features)
            watch.version = model.version
        return watch.mu

    def _tell(self, scan_id: str, *, watching: bool) -> None:
        for listener in self._watch_listeners:
            try:
                listener(scan_id, watching)
            except Exception:  # a broken listener must not stop a wait
                logger.exception("a watch listener failed for %s", scan_id)

    def _schedule(self, watch: _Watch, now: float) -> None:
        """Set the scan's next due time from what we know."""
        if watch.hinted:
            self._hints.append(watch)
            self._wake(-math.inf)
            return
        if watch.expect_callback:
            due = (watch.last_read or watch.started) + self.max_poll_interval
        elif self.model.ready and watch.known_start:
            watch.learned = True
            mu, sigma = self._location(watch), self.model.sigma
            if watch.last_read is None:
                # Before the first read the model knows better than max_poll_interval:
                # reading a scan that surely still runs only spends the budget.
                first = max(math.exp(mu + sigma * self._z), self.poll_interval)
                due = watch.started + first
                watch.done_before = 0.0
            else:
                age = watch.last_read - watch.started
                next_age = conditional_quantile(mu, sigma, age, self._reserve)
                gap = min(max(next_age - age, self.poll_interval / 4), self.max_poll_interval)
                due = watch.last_read + gap
                watch.done_before = lognormal_cdf(age, mu, sigma)
        elif watch.last_read is None:
            # A scan we did not see start may be long finished: read it at once.
            due = watch.started + self.poll_interval if watch.known_start else now
            watch.gap = self.poll_interval
        else:
            watch.gap = min(watch.gap * self._backoff, self.max_poll_interval)
            due = watch.last_read + watch.gap
        self._push(watch, due)

    def _push(self, watch: _Watch, due: float) -> None:
        self._keys += 1
        watch.key = self._keys
        watch.due = due
        heapq.heappush(self._heap, (due, self._keys, watch))
        self._wake(due)

    def _wake(self, due: float) -> None:
        # Only a due time earlier than the picker's own wake-up needs it to look again.
        if due < self._sleep_until and self._waker is not None and not self._waker.done():
            self._waker.set_result(None)

    def _model_changed(self) -> None:
        """The model became usable: move every cold-scheduled scan onto the learned schedule
        (once; a scan on a long cold back-off would otherwise keep it)."""
        if not self.model.ready:
            return
        self._was_ready = True
        now = self._now_or_zero()
        for watch in self._watches.values():
            if watch.learned or watch.reading or watch.hinted or not watch.known_start:
                continue
            self._schedule(watch, now)

    def _chance(self, watch: _Watch, now: float) -> float:
        """P(finished since its last read | running then): the score of a learned scan."""
        if not watch.learned:
            return -1.0  # unknown: after every scan the model can speak for
        mu = watch.mu if watch.version == self.model.version else self._location(watch)
        age = now - watch.started
        if age <= 0.0:
            return 0.0
        # The log-normal CDF inline: this runs for every candidate of every decision.
        p = 0.5 * math.erfc((mu - math.log(age)) / (self.model.sigma * _SQRT2))
        before = watch.done_before
        return (p - before) / max(1.0 - before, 1e-12)

    def _cold_chance(self, watch: _Watch, now: float) -> float:
        """The same chance under the prior, before the model is ready: it only orders scans
        that are due together (older ones first), never decides when a scan is read."""
        if not watch.known_start:
            return -1.0
        mu, scale = self.model.location(watch.features), self.model.sigma * _SQRT2
        age = now - watch.started
        if age <= 0.0:
            return 0.0
        p = 0.5 * math.erfc((mu - math.log(age)) / scale)
        if watch.last_read is None or watch.last_read <= watch.started:
            return p
        before = 0.5 * math.erfc((mu - math.log(watch.last_read - watch.started)) / scale)
        return (p - before) / max(1.0 - before, 1e-12)

    def _pick(self, now: float) -> _Watch | float | None:
        """The scan to read now, or the time the next one falls due (None: nothing watched)."""
        hints = self._hints
        while hints:
            watch = hints.popleft()
            if watch.active and watch.hinted and not watch.reading:
                watch.key = -1  # its heap entry, if any, is stale now
                return watch
        heap = self._heap
        while heap:
            due, key, watch = heap[0]
            if key == watch.key and watch.active and not watch.reading:
                break
            heapq.heappop(heap)  # stale: rescheduled, finished or being read
        else:
            return None
        now += _CLOCK_SLACK
        if due > now:
            return due
        best, best_at = watch, 0
        chance = self._chance if self.model.ready else self._cold_chance
        best_score = chance(watch, now)
        # A scan the model cannot score (seen by id only) would lose to every scored one: once
        # overdue by a whole max_poll_interval it goes first. A scored scan overdue only grows
        # likelier finished, so it wins its turn by itself.
        if best_score >= 0.0 or due > now - self.max_poll_interval:
            for i in range(1, min(_CANDIDATES, len(heap))):
                due, key, other = heap[i]
                if due > now or key != other.key or not other.active or other.reading:
                    continue
                score = chance(other, now)
                if score > best_score:
                    best, best_at, best_score = other, i, score
        if best_at == 0:
            heapq.heappop(heap)
        best.key = -1  # an entry left inside the heap is stale from now on
        return best

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

    def _paced(self, now: float) -> float:
        """0.0 if a read may start now (and counts it), else the seconds until one may."""
        if self._rate is None:
            return 0.0
        tokens = min(self._burst, self._tokens + (now - self._tokens_at) * self._rate)
        self._tokens, self._tokens_at = tokens, now
        if tokens >= 1.0 - 1e-9:
            return 0.0
        return (1.0 - tokens) / self._rate

    async def _next_due(self) -> _Watch:
        loop = asyncio.get_running_loop()
        while True:
            now = self.now()
            pause = self._paced(now)
            if pause > 0.0:
                # A wait a refunded read (``refund_read``) cuts short.
                pacing: asyncio.Future[None] = loop.create_future()
                self._pacing = pacing
                pacing_timer = loop.call_later(pause, _resolve, pacing)
                try:
                    await pacing
                finally:
                    self._pacing = None
                    pacing_timer.cancel()
                continue
            picked = self._pick(now)
            if isinstance(picked, _Watch):
                if picked.learned and not picked.hinted:
                    chance = self._chance(picked, now)
                    self._target += _AVERAGE * (chance - self._target)
                self._tokens -= 1.0
                return picked
            self._sleep_until = math.inf if picked is None else picked
            waker: asyncio.Future[None] = loop.create_future()
            self._waker = waker
            timer = None
            if picked is not None:
                timer = loop.call_at(loop.time() + max(picked - now, 0.0), _resolve, waker)
            try:
                await waker
            finally:
                self._waker = None
                self._sleep_until = -math.inf
                if timer is not None:
                    timer.cancel()

    async def _read(self, watch: _Watch) -> None:
        try:
            watch.hinted = False
            try:
                answer = await self._poll(watch.scan_id)
            except LimiterUnavailable as exc:
                # The session already waited out what it could of the outage: a waiter must
                # not hang on a dead Redis.
                self.stats.failed += 1
                self._finish(watch, exc)
                return
            except _TRANSIENT as exc:
                logger.debug("poll of %s failed (%s); will retry", watch.scan_id, exc)
                self._retry_later(watch)
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
                    self._learn(watch, now)
                self._finish(watch, answer)
            else:
                watch.last_read = watch.seen_running = now
                if watch.active:
                    self._schedule(watch, now)
        finally:
            watch.reading = False
            self._concurrency.release()
            self._wake(-math.inf)

    def _retry_later(self, watch: _Watch) -> None:
        """After a transient read failure: read again a whole ``max_poll_interval`` on."""
        watch.last_read = self.now()
        if not watch.active:
            return
        if watch.hinted:
            # A callback that came in meanwhile still deserves its immediate read.
            self._hints.append(watch)
            self._wake(-math.inf)
        else:
            self._push(watch, watch.last_read + self.max_poll_interval)

    @property
    def target_probability(self) -> float:
        """The chance of having finished since its last read at which learned scans are
        being read now (a moving average over reads): ``min_probability`` while the budget
        idles, higher while reads queue for it."""
        return self._target

    def _learn(self, watch: _Watch, now: float) -> None:
        # It ended after the last read that saw it running (if any), before this answer:
        # an interval, which the model takes as such.
        seen = watch.seen_running
        running = seen - watch.started if seen is not None else 0.0
        self.observe(running, now - watch.started, watch.features)
        if not self._was_ready and self.model.ready:
            self._model_changed()
        self._since_save += 1
        idle = self._saving is None or self._saving.done()
        if self.model_store is not None and self._since_save >= _SAVE_EVERY and idle:
            self._since_save = 0
            self._saving = asyncio.get_running_loop().create_task(self.save_model())

    def _finish(self, watch: _Watch, outcome: ScanResult | ImagetwinError) -> None:
        self._forget(watch)
        for future in watch.waiters:
            if future.done():
                continue
            if isinstance(outcome, ScanResult):
                future.set_result(outcome)
            else:
                future.set_exception(outcome)


def read_rate_of(limit: RateLimit | Limiter) -> float | None:
    """Reads a second the scheduler may pace itself at: the limit's ``requests / (per +
    margin)``; None (no pacing) for ``RateLimit.unlimited()`` or a limit that says nothing."""
    if isinstance(limit, RateLimit):
        if limit.strategy == "unlimited":
            return None
        return limit.requests / (limit.per + limit.margin)
    inner = getattr(limit, "limit", None)  # our own limiters keep the RateLimit they enforce
    if isinstance(inner, RateLimit):
        return read_rate_of(inner)
    try:
        state = limit.snapshot()
    except Exception:  # a custom limiter that cannot tell: do not pace
        return None
    if state.requests >= 2**40 or state.per <= 0:
        return None
    return state.requests / state.per


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
