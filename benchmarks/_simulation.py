"""A client-side limiter against simulated servers, in simulated time: a batch driver.

A server sees only receipt times, in order, and admits or rejects each, by one of the
emulator's rate-limit windows (``imagetwin_async.emulator._ratelimit``: the same algorithms the
emulator enforces). ``run_batch`` pushes M requests through a client-side gate on a looptime
loop (simulated time, real seconds: none), with a latency per request and a receipt somewhere
inside it. Used by ``limiter_sim.py`` and by the tests (pytest's ``pythonpath`` has this
directory).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import attrs
import looptime
from aiolimiter import AsyncLimiter

from imagetwin_async.emulator._ratelimit import FixedWindow, SlidingWindow, TokenBucket


class Server(Protocol):
    name: str

    def admit(self, t: float) -> bool: ...


@attrs.define
class WindowServer:
    """A server that admits what one of the emulator's rate-limit windows admits."""

    name: str
    window: FixedWindow | SlidingWindow | TokenBucket

    def admit(self, t: float) -> bool:
        return self.window.acquire(t) is None


def fixed_window_server(requests: int, per: float, offset: float = 0.0) -> WindowServer:
    """N per calendar window: windows are [offset + k*per, offset + (k+1)*per)."""
    return WindowServer("fixed window", FixedWindow(requests, per, offset=offset))


def sliding_log_server(requests: int, per: float, *, count_rejected: bool = False) -> WindowServer:
    """N in any closed window [t - per, t] of receipts (the strict reading); with
    ``count_rejected`` refused attempts are logged too, as some servers do."""
    window = SlidingWindow(requests, per, closed=True, count_rejected=count_rejected)
    return WindowServer("sliding log", window)


def token_bucket_server(requests: int, per: float) -> WindowServer:
    """A bucket of N tokens, full at the start, refilled at N/per a second."""
    return WindowServer("token bucket", TokenBucket(requests, per))


def all_servers(requests: int, per: float, offset: float = 0.0) -> list[Server]:
    return [
        fixed_window_server(requests, per, offset),
        sliding_log_server(requests, per),
        token_bucket_server(requests, per),
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
