"""Server-side rate-limit algorithms, pure functions of an explicit ``now``.

The real service's algorithm is not published, so the emulator offers the three a server is
likely to use. Each ``acquire(now)`` counts a request on receipt and returns ``None`` when it
is admitted, else the seconds until a retry would be admitted (the Retry-After value).
Rejected requests are not counted: a client hammering a full window is not punished further.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from enum import StrEnum
from typing import Protocol

__all__ = [
    "Algorithm",
    "FixedWindow",
    "RateLimiter",
    "SlidingWindow",
    "TokenBucket",
    "parse_algorithm",
]


class Algorithm(StrEnum):
    FIXED = "fixed"  # N per calendar-aligned window; 2N can land across a boundary
    SLIDING = "sliding"  # N in any window of `per` seconds (a log of receipt times)
    TOKEN_BUCKET = "token_bucket"  # noqa: S105 - not a password; bucket of N tokens refilled at N/per a second


def parse_algorithm(value: Algorithm | str | None) -> Algorithm | None:
    """Accept ``"token-bucket"`` (CLI spelling) as well as ``"token_bucket"``; off -> None."""
    if value is None or isinstance(value, Algorithm):
        return value
    name = value.strip().lower().replace("-", "_")
    if name in {"off", "none", ""}:
        return None
    try:
        return Algorithm(name)
    except ValueError:
        choices = ", ".join(a.value for a in Algorithm)
        raise ValueError(f"unknown rate-limit algorithm {value!r}; use {choices} or off") from None


_EPSILON = 1e-9


class Window(Protocol):
    def acquire(self, now: float) -> float | None: ...


class FixedWindow:
    """At most ``limit`` requests per window ``[offset + k*per, offset + (k+1)*per)``."""

    __slots__ = ("_count", "_window", "limit", "offset", "per")

    def __init__(self, limit: int, per: float, *, offset: float = 0.0) -> None:
        self.limit: int = limit
        self.per: float = per
        self.offset: float = offset
        self._window: int | None = None
        self._count = 0

    def acquire(self, now: float) -> float | None:
        window = math.floor((now - self.offset) / self.per)
        if window != self._window:
            self._window = window
            self._count = 0
        if self._count < self.limit:
            self._count += 1
            return None
        return self.offset + (window + 1) * self.per - now


class SlidingWindow:
    """At most ``limit`` requests in any interval ``(now - per, now]``.

    ``closed``: in any ``[now - per, now]`` instead (a receipt exactly ``per`` ago still
    counts: the strictest reading). ``count_rejected``: refused attempts are logged too.
    """

    __slots__ = ("_log", "closed", "count_rejected", "limit", "per")

    def __init__(
        self, limit: int, per: float, *, closed: bool = False, count_rejected: bool = False
    ) -> None:
        self.limit: int = limit
        self.per: float = per
        self.closed: bool = closed
        self.count_rejected: bool = count_rejected
        self._log: deque[float] = deque()

    def acquire(self, now: float) -> float | None:
        log = self._log
        horizon = now - self.per
        if self.closed:
            while log and log[0] < horizon - _EPSILON:  # float noise is not a violation
                log.popleft()
        else:
            while log and log[0] <= horizon:
                log.popleft()
        if len(log) < self.limit:
            log.append(now)
            return None
        if self.count_rejected:
            log.append(now)
        return max(0.0, log[0] + self.per - now)


class TokenBucket:
    """Starts full with ``capacity`` tokens; refills ``capacity / per`` tokens a second."""

    __slots__ = ("_last", "_tokens", "capacity", "per")

    def __init__(self, capacity: int, per: float) -> None:
        self.capacity: int = capacity
        self.per: float = per
        self._tokens = float(capacity)
        self._last: float | None = None

    def acquire(self, now: float) -> float | None:
        rate = self.capacity / self.per
        if self._last is not None:
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * rate)
        self._last = now
        if self._tokens >= 1.0 - _EPSILON:  # refills add up floats: 3 s may give 0.99999...
            self._tokens = max(0.0, self._tokens - 1.0)
            return None
        return (1.0 - self._tokens) / rate


_FACTORIES: dict[Algorithm, type[FixedWindow] | type[SlidingWindow] | type[TokenBucket]] = {
    Algorithm.FIXED: FixedWindow,
    Algorithm.SLIDING: SlidingWindow,
    Algorithm.TOKEN_BUCKET: TokenBucket,
}


class RateLimiter:
    """One window per (API key, endpoint group), created on first use."""

    def __init__(
        self, algorithm: Algorithm | None, limits: Mapping[str, tuple[int, float]]
    ) -> None:
        self.algorithm = algorithm
        self.limits: dict[str, tuple[int, float]] = dict(limits)
        self._windows: dict[tuple[str, str], Window] = {}

    def acquire(self, key: str, group: str, now: float) -> float | None:
        """Count one request; ``None`` if admitted, else seconds until one would be."""
        if self.algorithm is None:
            return None
        window = self._windows.get((key, group))
        if window is None:
            limit = self.limits.get(group)
            if limit is None:
                return None
            window = _FACTORIES[self.algorithm](*limit)
            self._windows[key, group] = window
        return window.acquire(now)

    def reset(self) -> None:
        self._windows.clear()
