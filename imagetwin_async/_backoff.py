"""How long to pause after a 429, and how much of the budget to assume is ours.

Two small, clock-free pieces of state that every limiter strategy shares:

- ``Backoff``: exponential back-off with full jitter, growing with consecutive 429s.
- ``AdaptiveCapacity``: after a 429, act as if another client shares the API key.

Both are pure (time is passed in), so they are tested without an event loop.
"""

from __future__ import annotations

import math
import random

__all__ = ["AdaptiveCapacity", "Backoff", "full_jitter_ceiling"]


def full_jitter_ceiling(base: float, cap: float, n: int) -> float:
    """The largest pause of the ``n``-th consecutive retry (1-based): ``min(cap, base*2**(n-1))``.

    Full jitter then draws uniformly below it. The exponent is capped so a long streak cannot
    overflow a float.
    """
    return min(cap, base * 2.0 ** min(max(n - 1, 0), 64))


class Backoff:
    """Exponential back-off with full jitter ("AWS full jitter").

    The n-th consecutive 429 without a Retry-After pauses for ``uniform(0, min(cap, base *
    2**(n-1)))``. Full jitter spreads several clients (or processes) sharing one key over the
    whole interval instead of having them all come back at the same instant.

        backoff = Backoff(base=3.0, cap=60.0)
        pause = backoff.next_delay()    # 0 <= pause <= 3 on the first 429 with no Retry-After
        backoff.reset()                 # a non-429 answer ends the streak
    """

    __slots__ = ("_rng", "base", "cap", "streak")

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self.streak = 0
        # Not a security use: jitter only spreads retries.
        self._rng = rng if rng is not None else random.Random()  # noqa: S311

    def ceiling(self, streak: int | None = None) -> float:
        """The largest pause the ``streak``-th consecutive 429 can draw (default: the next)."""
        n = self.streak + 1 if streak is None else streak
        return full_jitter_ceiling(self.base, self.cap, n)

    def next_delay(self, retry_after: float | None = None) -> float:
        """Count one more 429 and return its pause: ``retry_after`` if the server gave one.

        A Retry-After still counts towards the streak, so a later 429 without one backs off
        further. A negative Retry-After means "now"; NaN or infinity is treated as absent.
        """
        self.streak += 1
        if retry_after is not None and math.isfinite(retry_after):
            return max(0.0, retry_after)
        return self._rng.uniform(0.0, self.ceiling(self.streak))

    def reset(self) -> None:
        """End the streak: the server answered something other than 429."""
        self.streak = 0


class AdaptiveCapacity:
    """The share of the rate budget we assume is ours, after a 429 says it is not all ours.

    A 429 when our own count says there was room means someone else spends the same key. We
    do not know how much, so we halve what we allow ourselves (at most once per ``per``
    seconds: a burst of 429s answering the same overload is one signal, not twenty), and give
    back a quarter of the full budget for every quiet ``per`` window that follows. A halving
    leaves room for the other client at once; the stepped recovery finds out within a few
    windows whether it has gone.

        capacity = AdaptiveCapacity(20, per=60.0)
        capacity.on_rate_limited(now=0.0)   # -> 10
        capacity.at(now=120.0)              # two quiet windows later: 20
    """

    __slots__ = ("_floor", "_halved_at", "_quiet_since", "full", "per", "step")

    def __init__(self, full: int, per: float) -> None:
        self.full = full
        self.per = per
        self.step = max(1, math.ceil(full / 4))
        self._quiet_since: float | None = None  # the last 429; None: fully recovered
        self._floor = full  # the capacity right after that 429
        self._halved_at: float | None = None

    def _quiet_windows(self, now: float) -> int:
        assert self._quiet_since is not None
        return max(0, int((now - self._quiet_since) // self.per))

    def at(self, now: float) -> int:
        """How many of the ``full`` slots we allow ourselves at ``now``."""
        # Pure: limiters ask about future times too, to plan their wake-ups.
        if self._quiet_since is None:
            return self.full
        return min(self.full, self._floor + self.step * self._quiet_windows(now))

    def next_increase_at(self, now: float) -> float | None:
        """When ``at()`` next grows, or None when it is already full."""
        if self._quiet_since is None or self.at(now) >= self.full:
            return None
        step = self._quiet_since + (self._quiet_windows(now) + 1) * self.per
        # Float rounding can put ``now`` a hair before a window boundary it already reached
        # (``(x - q) // per`` one short): never answer a time that is not in the future.
        return step if step > now else step + self.per

    def on_rate_limited(self, now: float) -> int:
        """Register a 429 at ``now``; return the capacity it leaves us."""
        current = self.at(now)
        if self._halved_at is not None and now - self._halved_at < self.per:
            # The same overload answering several requests: restart the quiet period only.
            self._floor = current
        else:
            self._floor = max(1, current // 2)
            self._halved_at = now
        self._quiet_since = now
        return self._floor
