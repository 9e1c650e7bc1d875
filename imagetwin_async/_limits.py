"""Client-side rate limiting: never more than N requests in any ``per`` seconds.

The server's algorithm is unknown (a calendar-aligned fixed window, a sliding log, or a token
bucket holding N), and it counts a request when it *receives* it, somewhere between our send and
its answer. The default ``"window"`` strategy is safe against all three and as fast as a client
can be without knowing which: it keeps N slots; a slot is taken when a request is about to be
sent, stays taken while the request is in flight, and frees again ``per + margin`` seconds after
the answer came back. Two requests that share a slot are therefore received more than ``per``
seconds apart, so any ``per``-second window holds at most one receipt per slot: at most N.

On a 429 the whole endpoint slows, not one request: ``on_rate_limited`` pauses every acquire
(Retry-After, else exponential back-off with full jitter) and, since a 429 our own count did not
predict means someone else spends the same key, halves the capacity we allow ourselves until
quiet windows show the room is back (see ``_backoff``).

``Limiter`` is the extension point (a Redis-backed store, a user's own); ``RateLimit.build``
makes the in-process ones.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import logging
import math
import random
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Final, Literal, Protocol, Self, final, runtime_checkable

import attrs

from ._backoff import AdaptiveCapacity, Backoff
from ._errors import ConfigurationError, RateLimitBusy
from ._limit_rules import busy_error, log_pause, pause_after_429, why_wait

__all__ = [
    "LimitState",
    "Limiter",
    "RateLimit",
    "Slot",
    "Strategy",
    "TokenBucketLimiter",
    "UnlimitedLimiter",
    "WindowLimiter",
]

log = logging.getLogger("imagetwin_async.limits")

Strategy = Literal["window", "token_bucket", "unlimited"]
Clock = Callable[[], float]

# Loop timers may fire a hair before their deadline (asyncio runs handles due within the clock's
# resolution; looptime rounds to microseconds). A slot counts as free this close to its time, so
# a wake-up never re-arms for a sliver. The margin (>= this for any sane ``per``) absorbs it.
_CLOCK_SLACK: Final = 1e-5

# Defaults as fractions of ``per``, so a test that runs 60x faster (per=1.0) keeps the same shape.
_MARGIN_FRACTION: Final = 1 / 300  # 0.2 s a minute
_BACKOFF_BASE_FRACTION: Final = 1 / 20  # 3 s a minute: one evenly paced request interval
_BACKOFF_CAP_FRACTION: Final = 1.0  # 60 s a minute: one whole window clears any window count
# What ``RateLimit.unlimited()`` reports as its request count (snapshots, logs).
_UNLIMITED_REQUESTS: Final = 2**62
_MAX_PAUSE_FRACTION: Final = 5.0  # 5 min a minute: the longest 429 pause a limiter keeps


def _check_number(name: str, value: object, *, allow_zero: bool = False) -> None:
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        kind = "a finite number >= 0" if allow_zero else "a positive finite number"
        raise ConfigurationError(f"RateLimit.{name} must be {kind}, got {value!r}")


def _scaled(limit: RateLimit, fraction: float) -> float:
    # Defaults are computed before validators run; an invalid ``per`` fails validation next.
    per = limit.per
    if isinstance(per, int | float) and not isinstance(per, bool) and math.isfinite(per):
        return float(per) * fraction
    return 0.0


def _validate_requests(_: RateLimit, __: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigurationError(f"RateLimit.requests must be a positive integer, got {value!r}")


def _validate_positive(_: RateLimit, attribute: attrs.Attribute[float], value: float) -> None:
    _check_number(attribute.name, value)


def _validate_non_negative(_: RateLimit, attribute: attrs.Attribute[float], value: float) -> None:
    _check_number(attribute.name, value, allow_zero=True)


def _validate_strategy(_: RateLimit, __: attrs.Attribute[str], value: str) -> None:
    if value not in ("window", "token_bucket", "unlimited"):
        raise ConfigurationError(
            f"RateLimit.strategy must be 'window', 'token_bucket' or 'unlimited', got {value!r}"
        )


@attrs.frozen
class RateLimit:
    """``requests`` per ``per`` seconds for one endpoint group, and how to keep to it.

        scan_limit = RateLimit(20, per=60.0)                     # the vendor's scan limit
        limiter = scan_limit.build(name="POST /scan")
        async with await limiter.acquire(): ...                  # send one request inside

    ``margin``: seconds a slot stays taken beyond ``per`` after its answer (default ``per/300``,
    0.2 s a minute). Every receipt already precedes our answer, so the margin only has to cover
    what separates our clock from the server's count: clock-rate drift (NTP slews up to 500 ppm,
    30 ms a minute), coarse timers (15.6 ms on Windows), millisecond time stamps and windows
    that include both ends. 0.2 s covers those several times over and costs 0.33% of the span.

    ``strategy``: ``"window"`` (default) is safe against any server algorithm. ``"token_bucket"``
    (burst N, then one every ``(per + margin)/N`` s, counted from answers as the server counts
    receipts): faster for a server *known* to be a token bucket, rejected by fixed-window and
    sliding-log servers.

    ``"unlimited"`` (spelt ``RateLimit.unlimited()``) sets no client-side limit, for tests and
    emulators: every acquire is granted at once; only a 429's pause holds requests back.
    A huge ``RateLimit(10**9)`` works too (slots cost nothing until used) but still counts.

    ``backoff_base`` / ``backoff_cap``: full-jitter back-off after a 429 without Retry-After
    (defaults ``per/20`` and ``per``: 3 s doubling up to 60 s a minute).

    ``max_pause``: the longest a 429 pauses every acquire, whatever Retry-After says (default
    ``5 * per``, 5 minutes a minute). The client raises ``RateLimited`` at once for a longer
    Retry-After (its ``max_retry_after``), so this only bounds what other writers ask for.
    """

    requests: int = attrs.field(validator=_validate_requests)
    per: float = attrs.field(default=60.0, validator=_validate_positive)
    # Defaults scale with ``per``; given as ``default=Factory(...)`` (not ``@x.default``) so
    # every type checker sees they are optional (pyright's dataclass_transform reads only
    # ``default=``).
    margin: float = attrs.field(
        default=attrs.Factory(lambda self: _scaled(self, _MARGIN_FRACTION), takes_self=True),
        kw_only=True,
        validator=_validate_non_negative,
    )
    strategy: Strategy = attrs.field(default="window", kw_only=True, validator=_validate_strategy)
    backoff_base: float = attrs.field(
        default=attrs.Factory(lambda self: _scaled(self, _BACKOFF_BASE_FRACTION), takes_self=True),
        kw_only=True,
        validator=_validate_positive,
    )
    backoff_cap: float = attrs.field(
        default=attrs.Factory(lambda self: _scaled(self, _BACKOFF_CAP_FRACTION), takes_self=True),
        kw_only=True,
        validator=_validate_positive,
    )
    max_pause: float = attrs.field(
        default=attrs.Factory(lambda self: _scaled(self, _MAX_PAUSE_FRACTION), takes_self=True),
        kw_only=True,
        validator=_validate_positive,
    )

    def __attrs_post_init__(self) -> None:
        if self.backoff_cap < self.backoff_base:
            raise ConfigurationError(
                f"RateLimit.backoff_cap ({self.backoff_cap!r}) must be >= "
                f"backoff_base ({self.backoff_base!r})"
            )

    @classmethod
    def unlimited(cls, *, per: float = 60.0) -> RateLimit:
        """No client-side limit (tests, emulators): acquires never wait, except out a 429.

        client = ImagetwinClient(base_url=emu.url, result_limit=RateLimit.unlimited())
        """
        return cls(_UNLIMITED_REQUESTS, per=per, strategy="unlimited")

    def build(
        self,
        *,
        name: str = "",
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> Limiter:
        """A fresh in-process limiter for this limit; share it among all tasks of one client.

        ``name`` labels log lines and ``RateLimitBusy.endpoint`` (``"POST /scan"``). ``clock``
        reads the time (default: the running loop's ``time()``); waits always sleep on the
        loop, so a custom clock must run at the loop's pace. ``rng`` draws back-off jitter.
        """
        if self.strategy == "token_bucket":
            return TokenBucketLimiter(self, name=name, clock=clock, rng=rng)
        if self.strategy == "unlimited":
            return UnlimitedLimiter(self, name=name, clock=clock, rng=rng)
        return WindowLimiter(self, name=name, clock=clock, rng=rng)


@attrs.frozen
class LimitState:
    """What a limiter looks like now (for logs, metrics and ``block=False`` callers).

        state = limiter.snapshot()
        if state.available == 0:
            print(f"next slot in {state.next_slot_in} s, {state.in_flight} requests in flight")

    ``available``: slots a new ``acquire`` could take at once (0 while paused or while other
    acquires wait). ``next_slot_in``: seconds until a new acquire would get a slot, 0.0 if
    now, None if that depends on answers still in flight. ``paused_for``: seconds left of a
    429 pause.
    """

    requests: int
    per: float
    available: int
    in_flight: int
    next_slot_in: float | None
    paused_for: float


@final
class Slot:
    """Permission to send one request; ``release()`` it once the server has answered.

        slot = await limiter.acquire()
        try: response = await send()
        finally: slot.release()

    It also works as ``with slot:`` / ``async with slot:`` (both release on exit). Releasing
    twice is harmless. Custom limiters build one with the callback that frees their slot; the
    callback runs at most once.
    """

    __slots__ = ("_on_release", "_released")

    def __init__(self, on_release: Callable[[], None]) -> None:
        self._on_release = on_release
        self._released = False

    @property
    def released(self) -> bool:
        """Whether ``release()`` has been called."""
        return self._released

    def release(self) -> None:
        """Tell the limiter the request is over (answered or failed); later calls do nothing."""
        if not self._released:
            self._released = True
            self._on_release()

    def _forget(self) -> bool:
        # Mark released without recording an answer: for a slot granted to a cancelled acquire,
        # which never sent anything. Returns whether the slot was still held.
        held = not self._released
        self._released = True
        return held

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


@runtime_checkable
class Limiter(Protocol):
    """The rate-limit store one endpoint group uses; implement it to share limits elsewhere.

        slot = await limiter.acquire()           # waits its turn (FIFO); block=False raises
        try: response = await send()             #   RateLimitBusy instead of waiting
        finally: slot.release()                  # then on_rate_limited(...) or on_success()

    One limiter serves every task of a client. Implementations must keep to the budget as the
    server counts it (a slot stays taken while its request is in flight), queue waiters fairly,
    and not leak a slot when a waiting ``acquire`` is cancelled.
    """

    async def acquire(self, *, block: bool = True) -> Slot:
        """Wait for a free slot and take it. ``block=False``: raise ``RateLimitBusy`` at once
        (with ``retry_after``) instead of waiting."""
        ...

    def on_rate_limited(self, retry_after: float | None) -> float:
        """The server answered 429: pause every acquire for ``retry_after`` seconds (the
        caller parsed Retry-After) or a back-off; return the pause now in force."""
        ...

    def on_success(self) -> None:
        """The server answered something other than 429: the 429 streak is over."""
        ...

    def snapshot(self) -> LimitState:
        """The state now; cheap and without side effects."""
        ...


class _LimiterBase:
    """Clock, 429 pause and back-off shared by the in-process strategies."""

    def __init__(
        self,
        limit: RateLimit,
        *,
        name: str = "",
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.limit = limit
        self.name = name or f"{limit.requests}/{limit.per:g}s"
        self._clock = clock
        self._backoff = Backoff(limit.backoff_base, limit.backoff_cap, rng)
        self._paused_until = -math.inf

    def _now(self) -> float:
        # Read lazily: the limiter is made in a sync constructor, before any loop runs.
        if self._clock is not None:
            return self._clock()
        return asyncio.get_running_loop().time()

    def _pause(self, retry_after: float | None, now: float) -> float:
        delay = pause_after_429(self._backoff, retry_after, max_pause=self.limit.max_pause)
        self._paused_until = max(self._paused_until, now + delay)
        pause = self._paused_until - now
        log_pause(log, self.name, retry_after, self._backoff, pause)
        return pause

    def _busy(self, message: str, retry_after: float | None) -> RateLimitBusy:
        return busy_error(self.name, message, retry_after)

    def on_success(self) -> None:
        self._backoff.reset()


class WindowLimiter(_LimiterBase):
    """N slots, each free again ``per + margin`` s after its last answer: no window sees > N.

        limiter = WindowLimiter(RateLimit(20, per=60.0), name="POST /scan")
        async with await limiter.acquire():
            await send()

    Waiters are served first come, first served; a waiting task sleeps until the earliest time
    a slot frees (or a 429 pause ends), never polls. Use ``RateLimit.build`` rather than this.
    """

    def __init__(
        self,
        limit: RateLimit,
        *,
        name: str = "",
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(limit, name=name, clock=clock, rng=rng)
        self._size = limit.requests
        self._hold = limit.per + limit.margin
        # Slots are counted, not stored: ``_free`` are free now (never used, or cooled down),
        # ``_cooling`` holds the free-again times of released slots still cooling (a min-heap,
        # no larger than the requests answered within one window), the rest are in flight.
        # So ``RateLimit(10**6)`` costs nothing until used, and an acquire does not walk slots.
        self._free = limit.requests
        self._cooling: list[float] = []
        self._in_flight = 0
        self._capacity = AdaptiveCapacity(limit.requests, limit.per)
        self._waiters: collections.deque[asyncio.Future[Slot]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._queued = 0  # futures in _waiters neither granted nor cancelled-and-handled

    # -- the arithmetic, at any time t (no releases assumed) ------------------------------

    def _cool(self, now: float) -> None:
        # Slots whose time has come are free: O(log n) each, once per slot use.
        cooling = self._cooling
        while cooling and cooling[0] <= now + _CLOCK_SLACK:
            heapq.heappop(cooling)
            self._free += 1

    def _available(self, t: float) -> int:
        if t + _CLOCK_SLACK < self._paused_until:
            return 0
        self._cool(t)
        return max(0, self._capacity.at(t) - self._in_flight - len(self._cooling))

    def _time_until(self, now: float, need: int) -> float | None:
        """Seconds until ``need`` slots are free at once, or None if answers must come first."""
        if need > self._size:
            return None
        self._cool(now)
        cooling = self._cooling
        # Free slots only change when a cooling slot frees, a pause ends or capacity steps up.
        # Within each stretch of constant capacity, the wait is for the r-th cooling slot.
        starts = [now]
        step = self._capacity.next_increase_at(now)
        while step is not None:
            starts.append(step)
            step = self._capacity.next_increase_at(step)
        for i, start in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else math.inf
            missing = need + self._in_flight + len(cooling) - self._capacity.at(start)
            if missing > len(cooling):
                continue  # not even with every cooling slot free: wait for more capacity
            t = start if missing <= 0 else max(start, _kth_smallest(cooling, missing))
            if t + _CLOCK_SLACK < self._paused_until:
                t = self._paused_until
            if t < end:
                return t - now
        return None

    def seed(self, answered: Iterable[float]) -> None:
        """Count requests another process sent, by when their answers came (on this limiter's
        clock, possibly in the past): each keeps a slot cooling as if sent from here. A batch
        resumed after a crash seeds from its journal so that it does not spend a window its
        predecessor already filled."""
        now = self._now()
        self._cool(now)
        # Every slot not in flight, longest-free first: those take the most recent seeded uses.
        idle = [now] * self._free + sorted(self._cooling)
        recent = sorted(answered, reverse=True)[: len(idle)]
        for index, when in enumerate(recent):
            idle[index] = max(idle[index], when + self._hold)
        cooling = [t for t in idle if t > now + _CLOCK_SLACK]
        heapq.heapify(cooling)
        self._cooling = cooling
        self._free = len(idle) - len(cooling)
        if self._waiters:
            self._dispatch()

    # -- granting and releasing --------------------------------------------------------

    def _grant(self) -> Slot:
        self._free -= 1  # _available said one is free (and _cool counted it)
        self._in_flight += 1
        return Slot(self._release)

    def _release(self) -> None:
        # The answer is in: the server received the request at some earlier moment, so one
        # ``per`` (plus margin) from now that receipt has left every window that could hold it.
        self._in_flight -= 1
        heapq.heappush(self._cooling, self._now() + self._hold)
        # No slot frees now (this one cools first), but the wake-up time may be earlier than
        # the one armed while every slot was in flight with no known free time.
        self._dispatch()

    def _undo_grant(self, slot: Slot) -> None:
        if slot._forget():  # nothing was sent with it: the slot is as free as before
            self._in_flight -= 1
            self._free += 1

    def _dispatch(self) -> None:
        """Hand free slots to waiters in order, then sleep until the next one can be served."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiters and self._waiters[0].done():
            self._waiters.popleft()  # cancelled
        if not self._waiters:
            return
        now = self._now()
        while self._waiters:
            fut = self._waiters[0]
            if fut.done():
                self._waiters.popleft()
                continue
            if self._available(now) == 0:
                break
            self._waiters.popleft()
            self._queued -= 1
            fut.set_result(self._grant())
        if self._waiters:
            delay = self._time_until(now, 1)
            if delay is not None:  # else a release will call us
                self._timer = asyncio.get_running_loop().call_later(delay, self._dispatch)

    def _why_wait(self, now: float, ahead: int) -> str:
        paused = self._paused_until - now
        return why_wait(
            paused_for=paused if paused > _CLOCK_SLACK else 0.0,
            ahead=ahead,
            in_flight=self._in_flight,
            capacity=self._capacity.at(now),
            size=self._size,
            per=self.limit.per,
        )

    # -- the Limiter interface -----------------------------------------------------------

    async def acquire(self, *, block: bool = True) -> Slot:
        now = self._now()
        ahead = self._queued
        if ahead == 0 and self._available(now) > 0:
            return self._grant()
        if not block:
            wait = self._time_until(now, ahead + 1)
            raise self._busy(f"no request slot free ({self._why_wait(now, ahead)})", wait)
        if log.isEnabledFor(logging.DEBUG):  # the estimate costs O(N log N): only when shown
            wait = self._time_until(now, ahead + 1)
            log.debug(
                "%s: acquire waits %s: %s",
                self.name,
                "for an answer" if wait is None else f"~{wait:.3f} s",
                self._why_wait(now, ahead),
            )
        fut: asyncio.Future[Slot] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._queued += 1
        if ahead == 0 or self._timer is None:
            # We head the queue, or nothing is armed (the count of those ahead can still hold
            # a waiter cancelled this tick): arm the wake-up. Cheap, and no waiter is stranded.
            self._dispatch()
        try:
            slot = await fut
        except asyncio.CancelledError:
            if fut.cancelled():
                self._queued -= 1
                # The wake-up may have been armed for us, or dropped with us: re-arm it for
                # whoever heads the queue now.
                self._dispatch()
            else:
                # Granted and cancelled in the same tick: give the unused slot back.
                self._undo_grant(fut.result())
                self._dispatch()
            raise
        log.debug("%s: acquire waited %.3f s", self.name, self._now() - now)
        return slot

    def on_rate_limited(self, retry_after: float | None) -> float:
        now = self._now()
        pause = self._pause(retry_after, now)
        capacity = self._capacity.on_rate_limited(now)
        log.debug(
            "%s: assuming the key is shared: %d of %d slots until quiet %g s windows pass",
            self.name,
            capacity,
            self._size,
            self.limit.per,
        )
        if self._waiters:
            self._dispatch()  # re-arm the wake-up for the end of the pause
        return pause

    def snapshot(self) -> LimitState:
        now = self._now()
        waiting = self._queued
        return LimitState(
            requests=self._size,
            per=self.limit.per,
            available=0 if waiting else self._available(now),
            in_flight=self._in_flight,
            next_slot_in=self._time_until(now, waiting + 1),
            paused_for=max(0.0, self._paused_until - now),
        )

    def __repr__(self) -> str:
        waiting = self._queued
        return f"<WindowLimiter {self.name!r} in_flight={self._in_flight} waiting={waiting}>"


def _kth_smallest(heap: list[float], k: int) -> float:
    # heap[0] is the common case (one slot short); nsmallest is O(n log k) for the rest.
    return heap[0] if k == 1 else heapq.nsmallest(k, heap)[-1]


class TokenBucketLimiter(_LimiterBase):
    """A token bucket of N, refilled one every ``(per + margin)/N`` s, that counts as the server
    counts: for servers *known* to be token buckets.

        limit = RateLimit(20, per=60.0, strategy="token_bucket")
        limiter = limit.build(name="POST /scan")
        async with await limiter.acquire(): await send()

    The server takes a token when it *receives* a request, somewhere between our send and its
    answer. A plain bucket that takes tokens at send time (``aiolimiter``) is rejected at the
    refill boundary when an early request is received late (a slow upload) and a later one
    early: its 21st request can reach the server less than one refill after the server's
    bucket emptied. So this one is the bucket's equivalent GCRA (a "theoretical arrival time"
    that every request pushes one refill further) kept over the latest moment each request can
    have been received: its answer, or now while it is in flight. The server's count is never
    ahead of it, whatever the latencies.

    A fixed-window or sliding-log server still rejects it (up to 2N-1 per window). On a 429 it
    pauses every acquire and then treats the server's bucket as empty.
    """

    def __init__(
        self,
        limit: RateLimit,
        *,
        name: str = "",
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(limit, name=name, clock=clock, rng=rng)
        # The margin slows the refill a touch, like the window strategy's hold time.
        self._interval = (limit.per + limit.margin) / limit.requests
        self._tat = -math.inf  # when the bucket, fed by answered requests, is full again
        self._gate = asyncio.Lock()  # FIFO: asyncio.Lock wakes waiters in arrival order
        self._answered = asyncio.Event()
        self._drain_pending = False
        self._in_flight = 0

    def _debt(self, now: float) -> float:
        """Tokens the answered requests still owe the bucket (0 when it is full)."""
        return max(0.0, self._tat - now) / self._interval

    def _wait(self, now: float) -> float | None:
        """Seconds until one more request may go, or None while answers must come first."""
        room = self.limit.requests - 1 - self._in_flight  # worst case: all received now
        if room < 0:
            return None
        return max(0.0, (self._debt(now) - room) * self._interval)

    def _release(self) -> None:
        # Received by now at the latest: one refill interval from the later of now and TAT.
        self._tat = max(self._tat, self._now()) + self._interval
        self._in_flight -= 1
        self._answered.set()

    def seed(self, answered: Iterable[float]) -> None:
        """Requests another process sent (answer times on this limiter's clock): any within
        the last ``per`` empty the bucket, which then refills from now (the safe side: the
        server's bucket can hold no more than that)."""
        period = self._interval * self.limit.requests
        if any(when > self._now() - period for when in answered):
            self._drain_pending = True

    async def acquire(self, *, block: bool = True) -> Slot:
        now = self._now()
        if not block:
            wait = self._wait(now)
            paused = self._paused_until - now
            if self._gate.locked() or paused > 0 or self._drain_pending or wait != 0.0:
                raise self._busy("no token in the bucket", self._next_token_in(now))
        async with self._gate:
            waited = False
            while True:
                now = self._now()
                if (pause := self._paused_until - now) > 0:
                    log.debug("%s: acquire waits %.3f s: paused after a 429", self.name, pause)
                    await asyncio.sleep(pause)
                    continue
                if self._drain_pending:
                    # The server's bucket was empty at its 429: one refill before the next.
                    self._drain_pending = False
                    self._tat = max(self._tat, now + self.limit.requests * self._interval)
                wait = self._wait(now)
                if wait is not None and wait <= _CLOCK_SLACK:
                    break
                if not waited:
                    log.debug(
                        "%s: acquire waits %s: bucket empty",
                        self.name,
                        "for an answer" if wait is None else f"~{wait:.3f} s",
                    )
                    waited = True
                if wait is None:
                    self._answered.clear()
                    await self._answered.wait()
                else:
                    await asyncio.sleep(wait + _CLOCK_SLACK)
            self._in_flight += 1
        return Slot(self._release)

    def _next_token_in(self, now: float) -> float | None:
        paused = max(0.0, self._paused_until - now)
        if self._drain_pending:
            return paused + self._interval
        wait = self._wait(now)
        return None if wait is None else max(paused, wait)

    def on_rate_limited(self, retry_after: float | None) -> float:
        self._drain_pending = True
        return self._pause(retry_after, self._now())

    def snapshot(self) -> LimitState:
        now = self._now()
        blocked = self._gate.locked() or now < self._paused_until or self._drain_pending
        free = self.limit.requests - self._in_flight - self._debt(now)
        return LimitState(
            requests=self.limit.requests,
            per=self.limit.per,
            available=0 if blocked else max(0, int(free + 1e-9)),
            in_flight=self._in_flight,
            next_slot_in=self._next_token_in(now),
            paused_for=max(0.0, self._paused_until - now),
        )

    def __repr__(self) -> str:
        return f"<TokenBucketLimiter {self.name!r} in_flight={self._in_flight}>"


class UnlimitedLimiter(_LimiterBase):
    """No client-side limit: ``RateLimit.unlimited().build()``, for tests and emulators.

        limiter = RateLimit.unlimited().build(name="GET /result")
        async with await limiter.acquire(): await send()   # never waits, unless paused

    A 429 still pauses every acquire (Retry-After, else the back-off): the server's word on
    its own limit is kept even when we set none.
    """

    def __init__(
        self,
        limit: RateLimit,
        *,
        name: str = "",
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(limit, name=name or "unlimited", clock=clock, rng=rng)
        self._in_flight = 0

    def _release(self) -> None:
        self._in_flight -= 1

    async def acquire(self, *, block: bool = True) -> Slot:
        while (pause := self._paused_until - self._now()) > 0:
            if not block:
                raise self._busy(f"paused after a 429 for {pause:.3f} s", pause)
            await asyncio.sleep(pause)
        self._in_flight += 1
        return Slot(self._release)

    def on_rate_limited(self, retry_after: float | None) -> float:
        return self._pause(retry_after, self._now())

    def snapshot(self) -> LimitState:
        paused = max(0.0, self._paused_until - self._now())
        return LimitState(
            requests=self.limit.requests,
            per=self.limit.per,
            available=0 if paused else self.limit.requests,
            in_flight=self._in_flight,
            next_slot_in=paused,
            paused_for=paused,
        )

    def __repr__(self) -> str:
        return f"<UnlimitedLimiter {self.name!r} in_flight={self._in_flight}>"
