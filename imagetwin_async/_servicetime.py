"""The service's time, learned from its answers: never the host's wall clock.

Two unknowns stand between a batch's records and the scan-overview that settles them:

1. **Where the service's clock stands** against ours. Every answer's ``Date`` header (whole
   seconds, HTTP-date) was written between our send and our receipt, so each answer bounds
   ``service time - monotonic time`` to an interval; ``ServiceClock`` intersects them. Only
   ``time.monotonic`` durations are used: a host clock that is minutes off, or jumps in the
   middle of a run, changes nothing.
2. **What zone scan-overview's ``scanDate`` is written in.** It carries no zone and whole
   seconds only ("2025-04-10T13:54:05"); the reference says UTC, but we do not rely on it.
   ``ZoneCalibration`` compares the dates of scans whose ids the journal knows with when, in
   service time, they were sent and answered.

Pure: times are passed in; nothing here reads a clock or does I/O.

    >>> clock = ServiceClock()
    >>> clock.observe(sent=100.0, received=100.2, date="Tue, 01 Dec 2026 14:00:00 GMT")
    True
    >>> round(clock.at(100.1).width(), 3)  # one whole second plus the round trip
    1.2
"""

from __future__ import annotations

import email.utils
import json
import math
from collections.abc import Iterable
from typing import Final

import attrs

__all__ = ["Interval", "ServiceClock", "ZoneCalibration"]

# A zone offset is a whole number of quarter hours (UTC+05:45 exists; nothing finer does).
_ZONE_STEP: Final = 900.0
# Zones run from UTC-12:00 to UTC+14:00: the widest an uncalibrated scanDate can be off.
_ZONE_SPAN: Final = (-12 * 3600.0, 14 * 3600.0)


@attrs.frozen
class Interval:
    """A closed interval of seconds; ``lo > hi`` never (use ``Interval.intersect``)."""

    lo: float
    hi: float

    def width(self) -> float:
        return self.hi - self.lo

    def shift(self, by: float) -> Interval:
        return Interval(self.lo + by, self.hi + by)

    def overlaps(self, other: Interval) -> bool:
        return self.lo <= other.hi and other.lo <= self.hi

    def intersect(self, other: Interval) -> Interval | None:
        lo, hi = max(self.lo, other.lo), min(self.hi, other.hi)
        return Interval(lo, hi) if lo <= hi else None


def parse_http_date(value: str | None) -> float | None:
    """Seconds since the epoch of an HTTP ``Date`` header, ``None`` if absent or malformed."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:  # RFC 9110: an HTTP-date is GMT
        return None
    stamp = parsed.timestamp()
    return stamp if math.isfinite(stamp) else None


class ServiceClock:
    """Bounds on the service's clock, as an offset from this process's ``time.monotonic``.

    Each answer says the service's clock read ``D`` (whole seconds, so really ``[D, D + 1)``)
    at some instant between our send and our receipt, so ``offset`` lies in
    ``[D - received, D + 1 - sent]``. Answers are intersected; one that contradicts the
    others (the service's clock was set, or a proxy answered from another clock) starts the
    estimate afresh from itself, and ``jumps`` counts it.

        >>> clock = ServiceClock()
        >>> clock.calibrated
        False
    """

    def __init__(self) -> None:
        self._offset: Interval | None = None
        self.jumps = 0
        self.answers = 0
        # The last Date header and what it parsed to: answers within a second repeat it.
        self._last_date: tuple[str | None, float | None] = (None, None)

    @property
    def calibrated(self) -> bool:
        return self._offset is not None

    @property
    def offset(self) -> Interval | None:
        """``service time - monotonic time``, bounded; ``None`` before the first answer."""
        return self._offset

    def observe(self, sent: float, received: float, date: str | None) -> bool:
        """Take one answer in (monotonic ``sent``/``received``); whether the bounds moved."""
        last, stamp = self._last_date
        if date != last:
            stamp = parse_http_date(date)
            self._last_date = (date, stamp)
        if stamp is None or received < sent:
            return False
        self.answers += 1
        lo, hi = stamp - received, stamp + 1.0 - sent
        current = self._offset
        if current is None:
            self._offset = Interval(lo, hi)
            return True
        # The intersection, in floats first: most answers leave the bounds as they were.
        both_lo, both_hi = max(current.lo, lo), min(current.hi, hi)
        if both_lo > both_hi:
            self.jumps += 1
            self._offset = Interval(lo, hi)
            return True
        if both_lo == current.lo and both_hi == current.hi:
            return False
        self._offset = Interval(both_lo, both_hi)
        return True

    def at(self, monotonic: float) -> Interval:
        """The service's time at our ``monotonic`` instant, bounded (calibrated clocks only)."""
        if self._offset is None:
            raise RuntimeError("the service clock has not been calibrated by an answer yet")
        return self._offset.shift(monotonic)

    def to_monotonic(self, service_time: float) -> float:
        """The latest monotonic instant at which the service's clock may still be before
        ``service_time`` (what to sleep until for it to have passed for sure)."""
        if self._offset is None:
            raise RuntimeError("the service clock has not been calibrated by an answer yet")
        return service_time - self._offset.lo


@attrs.frozen
class KnownScan:
    """A scan whose id the journal knows, and when (service time) it may have registered."""

    scan_id: str
    registered: Interval


class ZoneCalibration:
    """What scan-overview's zone-less ``scanDate`` means in service time.

    ``offset`` bounds ``naive - service`` where ``naive`` is the date read as if it were UTC:
    a scan sent no earlier than ``lo`` and answered no later than ``hi`` (service time) and
    listed at ``D`` gives ``[D - hi, D + 1 - lo]``. Scans are intersected; a contradiction
    (the service's zone changed, say for daylight saving) restarts from the latest scan.
    ``calibrated`` once the bounds are narrower than a quarter hour; until then a date can be
    anything a real zone allows and settling refuses to decide.

        >>> zone = ZoneCalibration()
        >>> zone.learn([(1000.0, Interval(3000.0, 3001.0))])  # listed 1000 s behind
        True
        >>> zone.zone_name()
        'UTC-00:30'
    """

    def __init__(self, offset: Interval | None = None, *, max_width: float = 120.0) -> None:
        self._offset = offset
        self._max_width = max_width

    @property
    def offset(self) -> Interval | None:
        return self._offset

    @property
    def calibrated(self) -> bool:
        return self._offset is not None and self._offset.width() <= self._max_width

    def learn(self, pairs: Iterable[tuple[float, Interval]]) -> bool:
        """Take ``(naive scanDate seconds, registered-in service interval)`` pairs, oldest
        first; whether the bounds moved."""
        changed = False
        for naive, registered in pairs:
            seen = Interval(naive - registered.hi, naive + 1.0 - registered.lo)
            if self._offset is None:
                self._offset, changed = seen, True
                continue
            both = self._offset.intersect(seen)
            new = seen if both is None else both
            changed = changed or new != self._offset
            self._offset = new
        return changed

    def service_time(self, naive: float) -> Interval:
        """When (service time) a scan listed at ``naive`` registered, bounded. Uncalibrated,
        every real zone is allowed."""
        if self._offset is None or not self.calibrated:
            lo, hi = _ZONE_SPAN
            return Interval(naive - hi, naive + 1.0 - lo)
        return Interval(naive - self._offset.hi, naive + 1.0 - self._offset.lo)

    def naive_span(self, service: Interval) -> Interval:
        """The naive dates a scan registered within ``service`` may be listed at."""
        if self._offset is None or not self.calibrated:
            lo, hi = _ZONE_SPAN
        else:
            lo, hi = self._offset.lo, self._offset.hi
        return Interval(service.lo + lo - 1.0, service.hi + hi)

    def zone_name(self) -> str:
        """The zone the bounds point to, rounded to a quarter hour ("UTC+02:00")."""
        if self._offset is None:
            return "unknown"
        middle = (self._offset.lo + self._offset.hi) / 2
        minutes = round(middle / _ZONE_STEP) * 15
        sign = "+" if minutes >= 0 else "-"
        hours, rest = divmod(abs(minutes), 60)
        return f"UTC{sign}{hours:02d}:{rest:02d}"

    def dumps(self) -> str:
        """The bounds as JSON, for the journal's meta store."""
        if self._offset is None:
            return "{}"
        return json.dumps({"lo": self._offset.lo, "hi": self._offset.hi})

    @classmethod
    def loads(cls, text: str | None, *, max_width: float = 120.0) -> ZoneCalibration:
        """Bounds stored by ``dumps``; an unreadable value is no calibration, not an error."""
        try:
            data = json.loads(text) if text else {}
            offset = Interval(float(data["lo"]), float(data["hi"])) if data else None
        except (ValueError, TypeError, KeyError):
            offset = None
        if offset is not None and not (
            math.isfinite(offset.lo) and math.isfinite(offset.hi) and offset.lo <= offset.hi
        ):
            offset = None
        return cls(offset, max_width=max_width)
