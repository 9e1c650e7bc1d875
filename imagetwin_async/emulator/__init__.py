"""A local, faithful emulator of the Imagetwin API for tests, benchmarks and CI.

    from imagetwin_async.emulator import Emulator, Outcome

    async with Emulator(speed=60) as emu:          # an emulated minute lasts one real second
        emu.script(Outcome.failed(), file_name="broken.pdf")
        emu.inject_fault("503", endpoint="scan", retry_after=2)
        client = ImagetwinClient(**emu.client_kwargs())   # its URL, key and speed
        assert emu.counters.scans_billed == 1

It serves the vendor's endpoints under ``/v1``, the report pages outside it, and a JSON
control API under ``/_emulator/``. ``python -m imagetwin_async.emulator`` runs it on its own,
and the pytest plugin offers the ``imagetwin_emulator`` fixture. It imports nothing of the
client: only ``imagetwin_async._spec``, so both sides read the vendor's numbers from one place.
"""

from __future__ import annotations

from ._app import build_app
from ._cli import add_arguments, build_parser, emulator_options, main, serve
from ._clock import Clock
from ._emulator import (
    DEFAULT_API_KEY,
    DEFAULT_RATE_LIMITS,
    ClientKwargs,
    CorruptDocuments,
    Emulator,
)
from ._faults import Fault, FaultKind
from ._outcomes import Findings, FixedTime, LogNormalTime, Outcome, ProcessingTime
from ._ratelimit import Algorithm, FixedWindow, RateLimiter, SlidingWindow, TokenBucket
from ._records import CallbackRecord, Counters, Endpoint, RequestRecord, UploadedFile
from ._state import OverviewEntry, Scan, ScanStatus
from ._thread import ThreadedEmulator

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_RATE_LIMITS",
    "Algorithm",
    "CallbackRecord",
    "ClientKwargs",
    "Clock",
    "CorruptDocuments",
    "Counters",
    "Emulator",
    "Endpoint",
    "Fault",
    "FaultKind",
    "Findings",
    "FixedTime",
    "FixedWindow",
    "LogNormalTime",
    "Outcome",
    "OverviewEntry",
    "ProcessingTime",
    "RateLimiter",
    "RequestRecord",
    "Scan",
    "ScanStatus",
    "SlidingWindow",
    "ThreadedEmulator",
    "TokenBucket",
    "UploadedFile",
    "add_arguments",
    "build_app",
    "build_parser",
    "emulator_options",
    "main",
    "serve",
]
