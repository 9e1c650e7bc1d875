"""Emulated time: real time multiplied by a speed factor.

``speed=60`` makes an emulated minute last one real second, so rate-limit windows and
processing times shrink together and a test can cover an hour of traffic in a minute.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Clock"]


class Clock:
    """Emulated seconds since start, continuous across speed changes.

    >>> clock = Clock(speed=60.0)
    >>> clock.to_real(60.0)  # an emulated minute lasts one real second
    1.0
    """

    def __init__(
        self,
        speed: float = 1.0,
        *,
        source: Callable[[], float] = time.monotonic,
        start_time: float | None = None,
    ) -> None:
        _check_speed(speed)
        self._source = source
        self._speed = speed
        self._real0 = source()
        self._emulated0 = 0.0
        # Emulated Unix time at start: fixed windows align to its calendar minutes.
        self.start_time: float = time.time() if start_time is None else start_time

    @property
    def speed(self) -> float:
        return self._speed

    def set_speed(self, speed: float) -> None:
        """Change the speed without making emulated time jump."""
        _check_speed(speed)
        now = self.now()
        self._real0 = self._source()
        self._emulated0 = now
        self._speed = speed

    def now(self) -> float:
        """Emulated seconds since the clock started."""
        return self._emulated0 + (self._source() - self._real0) * self._speed

    def epoch(self) -> float:
        """Emulated Unix time (what a calendar-aligned fixed window counts in)."""
        return self.start_time + self.now()

    def to_real(self, emulated_seconds: float) -> float:
        """Real seconds that ``emulated_seconds`` last at the current speed."""
        return emulated_seconds / self._speed


def _check_speed(speed: float) -> None:
    if not speed > 0:
        raise ValueError(f"speed must be positive, got {speed!r}")
