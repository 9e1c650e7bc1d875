"""Injected faults: the next N requests to an endpoint misbehave in a chosen way."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ._records import Endpoint

__all__ = ["Fault", "FaultKind", "FaultQueue"]


class FaultKind(StrEnum):
    SERVICE_UNAVAILABLE = "503"  # answered at the front door: not counted, no scan
    GATEWAY_TIMEOUT = "504"  # likewise
    DROP_BEFORE = "drop-before"  # connection reset on receipt: no scan, not counted
    DROP_AFTER = "drop-after"  # handled (scan registered and billed), then no answer
    DELAY = "delay"  # handled, then the answer waits `delay` emulated seconds
    NOT_FOUND = "404"  # answered 404 at the front door (a replica that lags): not counted


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    endpoint: Endpoint | None = None  # None: any API endpoint
    retry_after: float | None = None  # emulated seconds, for 503/504
    delay: float = 0.0  # emulated seconds, for DELAY


@dataclass(slots=True)
class _Pending:
    fault: Fault
    remaining: int


class FaultQueue:
    """Faults in the order injected; a request takes the first one aimed at its endpoint."""

    def __init__(self) -> None:
        self._pending: list[_Pending] = []

    def __bool__(self) -> bool:
        return bool(self._pending)

    def add(self, fault: Fault, times: int = 1) -> None:
        if times < 1:
            raise ValueError(f"times must be at least 1, got {times}")
        self._pending.append(_Pending(fault, times))

    def take(self, endpoint: Endpoint) -> Fault | None:
        for index, entry in enumerate(self._pending):
            if entry.fault.endpoint is None or entry.fault.endpoint is endpoint:
                entry.remaining -= 1
                if entry.remaining == 0:
                    del self._pending[index]
                return entry.fault
        return None

    def pending(self) -> list[tuple[Fault, int]]:
        """(fault, requests it will still hit), oldest first."""
        return [(entry.fault, entry.remaining) for entry in self._pending]

    def clear(self) -> None:
        self._pending.clear()
