"""``Timings``: every duration the client waits by, in one value, with its defaults.

The client, the Redis limiters, the CLI and the tests take their defaults from here, and
``Timings.scaled(speed)`` turns them into the timings that match an emulator running ``speed``
times faster than real time, so matching a sped-up emulator is one argument::

    client = ImagetwinClient(api_key, base_url=emu.url, speed=60)   # or:
    client = ImagetwinClient(**emu.client_kwargs())
"""

from __future__ import annotations

import math
from typing import Any, Final, Self

import attrs

from . import _spec
from ._errors import ConfigurationError
from ._limits import RateLimit

__all__ = ["DEFAULT_TIMINGS", "Timings"]

# How late a request may still reach the server when the client sets no time-out at all.
_UNBOUNDED_REQUEST: Final = 3600.0
_VENDOR_SCAN_LIMIT: Final = RateLimit(*_spec.SCAN_RATE)
_VENDOR_RESULT_LIMIT: Final = RateLimit(*_spec.RESULT_RATE)


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ConfigurationError(f"{attribute.name} must be > 0, got {value!r}")


def _positive_or_none(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not (isinstance(value, int | float) and value > 0):
        raise ConfigurationError(f"{attribute.name} must be > 0 or None, got {value!r}")


@attrs.frozen(kw_only=True)
class Timings:
    """The client's timings, in seconds; the defaults are the vendor's limits and ours.

        >>> Timings().scaled(60).poll_interval             # an emulator at speed=60
        0.08333333333333333
        >>> ImagetwinClient(key, timings=Timings(poll_interval=2.0))

    ``scan_limit`` / ``result_limit``: the rate limits (vendor: 20 and 60 a minute).
    ``poll_interval``: before the first read of a new scan; ``max_poll_interval``: the longest
    gap between two reads of one scan. ``backoff_base`` / ``backoff_cap``: full-jitter back-off
    of retried requests. ``timeout`` / ``connect_timeout``: per request (None: none).
    """

    scan_limit: RateLimit = _VENDOR_SCAN_LIMIT
    result_limit: RateLimit = _VENDOR_RESULT_LIMIT
    poll_interval: float = attrs.field(default=5.0, validator=_positive)
    max_poll_interval: float = attrs.field(default=60.0, validator=_positive)
    backoff_base: float = attrs.field(default=0.5, validator=_positive)
    backoff_cap: float = attrs.field(default=30.0, validator=_positive)
    timeout: float | None = attrs.field(default=300.0, validator=_positive_or_none)
    connect_timeout: float | None = attrs.field(default=30.0, validator=_positive_or_none)

    def __attrs_post_init__(self) -> None:
        if self.max_poll_interval < self.poll_interval:
            raise ConfigurationError("max_poll_interval must be >= poll_interval")

    def scaled(self, speed: float) -> Self:
        """These timings for a server whose clock runs ``speed`` times faster than ours.

        Rate windows (with their margins and back-offs), poll intervals and retry back-off are
        divided by ``speed``. Time-outs are not: uploads and answers travel in real time.
        """
        if not (isinstance(speed, int | float) and math.isfinite(speed) and speed > 0):
            raise ConfigurationError(f"speed must be a positive number, got {speed!r}")
        if speed == 1:
            return self
        return attrs.evolve(
            self,
            scan_limit=_scaled_limit(self.scan_limit, speed),
            result_limit=_scaled_limit(self.result_limit, speed),
            poll_interval=self.poll_interval / speed,
            max_poll_interval=self.max_poll_interval / speed,
            backoff_base=self.backoff_base / speed,
            backoff_cap=self.backoff_cap / speed,
        )

    @property
    def request_deadline(self) -> float:
        """How late after it was sent a request may still reach the server, in seconds."""
        return self.timeout if self.timeout is not None else _UNBOUNDED_REQUEST


def _scaled_limit(limit: RateLimit, speed: float) -> RateLimit:
    return attrs.evolve(
        limit,
        per=limit.per / speed,
        margin=limit.margin / speed,
        backoff_base=limit.backoff_base / speed,
        backoff_cap=limit.backoff_cap / speed,
        max_pause=limit.max_pause / speed,
    )


DEFAULT_TIMINGS: Final = Timings()
