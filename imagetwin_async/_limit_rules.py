"""Rules every limiter keeps, written once for the in-process ones (``_limits``) and the
Redis-backed one (``redis``): how long a 429 pauses the endpoint, why an acquire waits, and the
error a non-blocking acquire raises.

    pause = pause_after_429(backoff, retry_after=86400.0, max_pause=300.0)   # -> 300.0
    raise busy_error("POST /scan", why_wait(paused_for=pause, ...), pause)

Pure functions over plain values; time is passed in by the callers.
"""

from __future__ import annotations

import logging

from ._backoff import Backoff
from ._errors import RateLimitBusy

__all__ = ["busy_error", "log_pause", "pause_after_429", "why_wait"]


def pause_after_429(backoff: Backoff, retry_after: float | None, *, max_pause: float) -> float:
    """Seconds to pause every acquire after a 429: the server's Retry-After if it sent one,
    else the next full-jitter back-off, and never more than ``max_pause`` (a server asking for
    a day must not freeze the endpoint for a day: the session raises ``RateLimited`` instead)."""
    return min(backoff.next_delay(retry_after), max_pause)


def log_pause(
    log: logging.Logger,
    name: str,
    retry_after: float | None,
    backoff: Backoff,
    pause: float,
    *,
    scope: str = "every acquire",
) -> None:
    log.debug(
        "%s: 429 (%s); pausing %s for %.3f s",
        name,
        f"Retry-After {retry_after:g} s"
        if retry_after is not None
        else f"back-off, streak {backoff.streak}",
        scope,
        pause,
    )


def why_wait(
    *,
    paused_for: float,
    ahead: int,
    in_flight: int,
    capacity: int,
    size: int,
    per: float,
    scope: str = "",
) -> str:
    """Why an acquire cannot have a slot now, for logs and ``RateLimitBusy`` messages.

    ``scope`` qualifies the counts (``" (key-wide)"`` for a limiter shared through Redis).
    """
    if paused_for > 0:
        return f"paused after a 429 for {paused_for:.3f} s"
    if ahead:
        return f"{ahead} acquire(s) ahead in the queue"
    if in_flight >= capacity:
        return f"all {capacity} usable slots are in flight{scope}"
    reduced = f" (cut to {capacity}/{size} after a 429)" if capacity < size else ""
    return f"all slots used within the last {per:g} s{scope}{reduced}"


def busy_error(name: str, why: str, retry_after: float | None) -> RateLimitBusy:
    """What ``acquire(block=False)`` raises when no slot is free: nothing was sent."""
    return RateLimitBusy(
        f"{name}: {why}; nothing was sent", status=429, endpoint=name, retry_after=retry_after
    )
