"""Pure simulations of the three rate-limit algorithms a server may run, and a batch driver.

A server sees only receipt times, in order, and admits or rejects each. ``run_batch`` pushes M
requests through a client-side gate on a looptime loop (simulated time, real seconds: none),
with a latency per request and a receipt somewhere inside it. The benchmark imports this too.
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import attrs
import looptime
from aiolimiter import AsyncLimiter

# Float noise in a simulated clock must not count as a violation; real violations are far larger.
EPSILON = 1e-9


class Server(Protocol):
    name: str

    def admit(self, t: float) -> bool: ...


@attrs.define
class FixedWindowServer:
    """N per calendar window: windows are [offset + k*per, offset + (k+1)*per)."""

    requests: int
    per: float
    offset: float = 0.0
    name: str = "fixed window"
    _counts: collections.Counter[int] = attrs.field(factory=collections.Counter, init=False)

    def admit(self, t: float) -> bool:
        window = math.floor((t - self.offset) / self.per)
        if self._counts[window] >= self.requests:
            return False
        self._counts[window] += 1
        return True


@attrs.define
class SlidingLogServer:
    """N in any closed window [t - per, t] of accepted receipts (the strict reading)."""

    requests: int
    per: float
    count_rejected: bool = False  # some servers log refused attempts too
    name: str = "sliding log"
    _log: collections.deque[float] = attrs.field(factory=collections.deque, init=False)

    def admit(self, t: float) -> bool:
        while self._log and self._log[0] < t - self.per - EPSILON:
            self._log.popleft()
        ok = len(self._log) < self.requests
        if ok or self.count_rejected:
            self._log.append(t)
        return ok


@attrs.define
class TokenBucketServer:
    """A bucket of N tokens, full at the start, refilled at N/per a second."""

    requests: int
    per: float
    name: str = "token bucket"
    _tokens: float = attrs.field(init=False)
    _last: float | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self._tokens = float(self.requests)

    def admit(self, t: float) -> bool:
        if self._last is not None:
            refill = (t - self._last) * self.requests / self.per
            self._tokens = min(float(self.requests), self._tokens + refill)
        self._last = t
        if self._tokens < 1.0 - EPSILON:
            return False
        self._tokens -= 1.0
        return True


def all_servers(requests: int, per: float, offset: float = 0.0) -> list[Server]:
    return [
        FixedWindowServer(requests, per, offset),
        SlidingLogServer(requests, per),
        TokenBucketServer(requests, per),
    ]


def rejections(server: Server, receipts: Sequence[float]) -> int:
    return sum(1 for t in sorted(receipts) if not server.admit(t))


@attrs.frozen
class Request:
    send: float
    receipt: float
    answer: float


# A gate waits for permission to send and returns the function to call once answered.
Gate = Callable[[], Awaitable[Callable[[], None]]]


async def _run_gate(
    gate: Gate, latencies: Sequence[float], receipt_at: Sequence[float]
) -> list[Request]:
    loop = asyncio.get_running_loop()

    async def one(i: int) -> Request:
        release = await gate()
        send = loop.time()
        await asyncio.sleep(latencies[i])
        answer = loop.time()
        release()
        return Request(send, send + receipt_at[i] * (answer - send), answer)

    return list(await asyncio.gather(*(one(i) for i in range(len(latencies)))))


def run_batch(
    make_gate: Callable[[], Gate],
    latencies: Sequence[float],
    receipt_at: Sequence[float],
    *,
    start: float = 1000.0,
) -> list[Request]:
    """Run one batch on a fresh fast-forwarding loop; ``receipt_at`` in [0, 1] of each latency."""
    loop = looptime.new_event_loop(start=start)
    try:
        return loop.run_until_complete(_run_with_gate(make_gate, latencies, receipt_at))
    finally:
        loop.close()


async def _run_with_gate(
    make_gate: Callable[[], Gate], latencies: Sequence[float], receipt_at: Sequence[float]
) -> list[Request]:
    return await _run_gate(make_gate(), latencies, receipt_at)


def span(requests: Sequence[Request]) -> float:
    sends = [r.send for r in requests]
    return max(sends) - min(sends)


def floor_span(m: int, n: int, per: float) -> float:
    """The shortest submission span any client can have: floor((M-1)/N) * per."""
    return ((m - 1) // n) * per


def _noop() -> None:
    pass


def limiter_gate(make_limiter: Callable[[], object]) -> Callable[[], Gate]:
    """A gate over one of our limiters (anything with ``acquire() -> Slot``)."""

    def make() -> Gate:
        limiter = make_limiter()

        async def gate() -> Callable[[], None]:
            slot = await limiter.acquire()  # type: ignore[attr-defined]
            return slot.release  # type: ignore[no-any-return]

        return gate

    return make


def aiolimiter_gate(requests: int, per: float) -> Callable[[], Gate]:
    """aiolimiter used naively: ``async with AsyncLimiter(N, per)`` around each send."""

    def make() -> Gate:
        limiter = AsyncLimiter(requests, per)

        async def gate() -> Callable[[], None]:
            await limiter.acquire()
            return _noop

        return gate

    return make


def pacing_gate(interval: float) -> Callable[[], Gate]:
    """One request every ``interval`` seconds, never a burst."""

    def make() -> Gate:
        next_at = -math.inf

        async def gate() -> Callable[[], None]:
            nonlocal next_at
            now = asyncio.get_running_loop().time()
            at = max(now, next_at)
            next_at = at + interval
            await asyncio.sleep(at - now)
            return _noop

        return gate

    return make
