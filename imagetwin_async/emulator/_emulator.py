"""The Emulator object: configuration, state, the Python control API and the server's life."""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, tzinfo
from enum import Enum
from types import TracebackType
from typing import Literal, Self, TypedDict

from aiohttp import web

from .. import _spec
from ._callbacks import CallbackSender
from ._clock import Clock
from ._faults import Fault, FaultKind, FaultQueue
from ._multipart import Upload
from ._outcomes import FixedTime, Outcome, ProcessingTime, Scripts, derive_findings
from ._ratelimit import Algorithm, RateLimiter, parse_algorithm
from ._records import CallbackRecord, Counters, Endpoint, RequestRecord
from ._state import OverviewEntry, Scan, ScanStore

__all__ = ["DEFAULT_API_KEY", "DEFAULT_RATE_LIMITS", "ClientKwargs", "CorruptDocuments", "Emulator"]

DEFAULT_API_KEY = "test-key"
# Per key and group. Sandbox scans count as scans (they are scan POSTs); the overview has no
# documented limit, so it has none unless a test sets one under "overview".
DEFAULT_RATE_LIMITS: Mapping[str, tuple[int, float]] = {
    "scan": _spec.SCAN_RATE,
    "result": _spec.RESULT_RATE,
}

CorruptDocuments = Literal["fail", "reject", "accept"]


class ClientKwargs(TypedDict):
    """What ``ImagetwinClient(**emu.client_kwargs())`` needs: where, which key, how fast."""

    api_key: str
    base_url: str
    speed: float


class _Unset(Enum):
    UNSET = 0


_UNSET = _Unset.UNSET


def _normalise_keys(api_keys: str | Iterable[str] | Mapping[str, str]) -> dict[str, str]:
    """Key -> the account e-mail the overview lists as ``user``."""
    if isinstance(api_keys, str):
        api_keys = [api_keys]
    if isinstance(api_keys, Mapping):
        keys = dict(api_keys)
    else:
        keys = {key: f"user{i}@example.org" for i, key in enumerate(api_keys, start=1)}
    if not keys:
        raise ValueError("at least one API key is needed")
    return keys


def _check_size_unit(unit: object) -> _spec.SizeUnit:
    if unit not in ("MB", "MiB"):
        raise ValueError(f"size_unit must be 'MB' or 'MiB', got {unit!r}")
    return unit


def _processing_time(value: float | ProcessingTime) -> ProcessingTime:
    return FixedTime(float(value)) if isinstance(value, int | float) else value


class Emulator:
    """A local Imagetwin API server for tests, benchmarks and CI (like stripe-mock or moto).

        async with Emulator(speed=60, rate_limit_algorithm="fixed") as emu:
            client = ImagetwinClient(**emu.client_kwargs())   # key, URL and speed
            ...  # then assert on emu.requests, emu.scans, emu.counters

    All durations (processing times, rate windows, fault delays, Retry-After) are emulated
    seconds: at ``speed=60`` an emulated minute lasts one real second.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_keys: str | Iterable[str] | Mapping[str, str] = (DEFAULT_API_KEY,),
        speed: float = 1.0,
        rate_limit_algorithm: Algorithm | str | None = Algorithm.SLIDING,
        rate_limits: Mapping[str, tuple[int, float]] = DEFAULT_RATE_LIMITS,
        retry_after: bool = True,
        processing_time: float | ProcessingTime = 1.0,
        seed: int = 0,
        corrupt_documents: CorruptDocuments = "reject",
        size_unit: _spec.SizeUnit = "MB",
        control_api: bool = True,
        max_records: int | None = None,
        callback_timeout: float = 5.0,
        time_source: Callable[[], float] = time.monotonic,
        start_time: float | None = None,
        scan_date_zone: tzinfo = UTC,
    ) -> None:
        self.host = host
        self.port: int = port
        self.api_keys: dict[str, str] = _normalise_keys(api_keys)
        self.clock: Clock = Clock(speed, source=time_source, start_time=start_time)
        self.limiter: RateLimiter = RateLimiter(parse_algorithm(rate_limit_algorithm), rate_limits)
        self.retry_after: bool = retry_after
        # The zone scan-overview writes its zone-less scanDate in (the reference says UTC).
        self.scan_date_zone = scan_date_zone
        self.processing_time = _processing_time(processing_time)
        self.seed = seed
        self.corrupt_documents: CorruptDocuments = corrupt_documents
        self.size_unit: _spec.SizeUnit = _check_size_unit(size_unit)
        self.control_api = control_api
        self.store: ScanStore = ScanStore()
        self.scripts: Scripts = Scripts()
        self.faults: FaultQueue = FaultQueue()
        self.counters: Counters = Counters()
        self.requests: deque[RequestRecord] = deque(maxlen=max_records)
        self.callbacks: list[CallbackRecord] = []
        self._callback_sender = CallbackSender(callback_timeout)
        self._callbacks_to_drop = 0.0
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._seed_rngs()

    def _seed_rngs(self) -> None:
        # Separate streams, so scripting a time does not shift the ids of later scans.
        self._id_rng = random.Random(f"{self.seed}:ids")  # noqa: S311 - reproducible, not secret
        self._time_rng = random.Random(f"{self.seed}:times")  # noqa: S311

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> Self:
        """Bind and serve; ``port=0`` picks a free port (read it back from ``url``)."""
        from ._app import build_app  # noqa: PLC0415 - _app imports this module's types

        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        runner = web.AppRunner(
            build_app(self), access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = runner.addresses[0][1]
        self._runner = runner
        return self

    async def stop(self) -> None:
        """Stop serving, cancel pending callbacks and close the callback client."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._callback_sender.close()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def origin(self) -> str:
        """``http://host:port``: where the report and result pages live."""
        host = "127.0.0.1" if self.host in {"0.0.0.0", ""} else self.host  # noqa: S104
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The base URL to give a client: ``http://host:port/v1``."""
        return f"{self.origin}/v1"

    @property
    def api_key(self) -> str:
        """The first configured API key."""
        return next(iter(self.api_keys))

    def client_kwargs(self) -> ClientKwargs:
        """Keyword arguments for a client of this emulator, its timings matched to its speed.

            async with ImagetwinClient(**emu.client_kwargs()) as client: ...

        ``speed`` divides every wait of the client (rate windows, polls, back-off) as the
        emulator's clock multiplies time, so a sped-up emulator costs one argument.
        """
        return {"api_key": self.api_key, "base_url": self.url, "speed": self.clock.speed}

    @property
    def scans(self) -> Mapping[str, Scan]:
        """Scans started since start or reset (the sandbox's three predefined ones excluded)."""
        return {sid: s for sid, s in self.store.scans.items() if s.billed}

    @property
    def rate_limit_algorithm(self) -> Algorithm | None:
        return self.limiter.algorithm

    # -- controls --------------------------------------------------------------------------

    def configure(
        self,
        *,
        speed: float | _Unset = _UNSET,
        rate_limit_algorithm: Algorithm | str | _Unset | None = _UNSET,
        rate_limits: Mapping[str, tuple[int, float]] | _Unset = _UNSET,
        retry_after: bool | _Unset = _UNSET,
        processing_time: float | ProcessingTime | _Unset = _UNSET,
        corrupt_documents: CorruptDocuments | _Unset = _UNSET,
        api_keys: str | Iterable[str] | Mapping[str, str] | _Unset = _UNSET,
        size_unit: _spec.SizeUnit | _Unset = _UNSET,
    ) -> None:
        """Change settings while running. A new algorithm or limits start with empty windows."""
        if not isinstance(speed, _Unset):
            self.clock.set_speed(speed)
            self._reschedule_callbacks()
        if not isinstance(rate_limit_algorithm, _Unset) or not isinstance(rate_limits, _Unset):
            algorithm = (
                self.limiter.algorithm
                if isinstance(rate_limit_algorithm, _Unset)
                else parse_algorithm(rate_limit_algorithm)
            )
            limits = self.limiter.limits if isinstance(rate_limits, _Unset) else rate_limits
            self.limiter = RateLimiter(algorithm, limits)
        if not isinstance(retry_after, _Unset):
            self.retry_after = retry_after
        if not isinstance(processing_time, _Unset):
            self.processing_time = _processing_time(processing_time)
        if not isinstance(corrupt_documents, _Unset):
            self.corrupt_documents = corrupt_documents
        if not isinstance(api_keys, _Unset):
            self.api_keys = _normalise_keys(api_keys)
        if not isinstance(size_unit, _Unset):
            self.size_unit = _check_size_unit(size_unit)

    def script(
        self,
        outcome: Outcome,
        *,
        file_name: str | None = None,
        sha256: str | None = None,
        times: int | None = None,
    ) -> None:
        """Decide how coming scans end.

        With ``file_name`` and/or ``sha256``: every scan with such a file (or the next
        ``times`` of them). Without: the next ``times`` scans (default 1), in order.
        """
        self.scripts.add(outcome, file_name=file_name, sha256=sha256, times=times)

    def inject_fault(
        self,
        kind: FaultKind | str,
        *,
        endpoint: Endpoint | str | None = None,
        times: int = 1,
        retry_after: float | None = None,
        delay: float = 0.0,
    ) -> None:
        """Make the next ``times`` requests to ``endpoint`` (None: any API endpoint) misbehave.

        ``kind``: "503"/"504" (answered before auth and rate counting, optional Retry-After),
        "drop-before" (reset on receipt, no scan), "drop-after" (handled, scan billed, then
        reset with no answer), "delay" (handled, answer held ``delay`` emulated seconds),
        "404" (answered 404 before auth and rate counting, as a replica that does not know
        the scan yet).
        """
        fault = Fault(
            FaultKind(kind),
            None if endpoint is None else Endpoint(endpoint),
            retry_after,
            delay,
        )
        self.faults.add(fault, times)

    def drop_callbacks(self, times: int | None = 1) -> None:
        """Lose the next ``times`` callbacks (None: all of them until reset; 0: none)."""
        self._callbacks_to_drop = math.inf if times is None else float(times)

    def finish_scan(self, scan_id: str, outcome: Outcome | None = None) -> Scan:
        """End a running scan now, as finished (or as ``outcome`` says), and send its callback."""
        scan = self.store.scans[scan_id]
        if outcome is not None:
            scan.fails = outcome.kind == "failed"
            if outcome.findings is not None:
                scan.findings = outcome.findings
        now = self.clock.now()
        if scan.ends_at > now and (outcome is None or outcome.kind != "never"):
            scan.ends_at = now
            self._schedule_callback(scan)  # a scan that had already ended is not re-announced
        return scan

    def add_overview_entry(
        self,
        scan_id: str,
        scan_date: datetime,
        *,
        user: str | None = None,
        free_of_charge: bool = False,
        api_scan: bool = False,
    ) -> None:
        """Add a row to the scan overview (a web-app scan, or one on another date)."""
        if scan_date.tzinfo is None:
            scan_date = scan_date.replace(tzinfo=UTC)
        user = self.api_keys[self.api_key] if user is None else user
        self.store.history.append(OverviewEntry(scan_id, scan_date, user, free_of_charge, api_scan))

    def reset(self) -> None:
        """Forget requests, scans, scripts, faults, counters and rate windows; keep settings."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        self.requests.clear()
        self.callbacks.clear()
        self.counters = Counters()
        self.store.clear()
        self.scripts.clear()
        self.faults.clear()
        self.limiter.reset()
        self._callbacks_to_drop = 0.0
        self._seed_rngs()

    # -- used by the request handlers ------------------------------------------------------

    def authenticate(self, header: str | None) -> str | None:
        """The valid API key in an ``Authorization: Bearer`` header, else None."""
        if header is None:
            return None
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or key not in self.api_keys:
            return None
        return key

    def retry_after_header(self, emulated_seconds: float) -> str:
        """Retry-After in real seconds: an integer at speed 1 (as HTTP has it); sped up, a
        decimal, since rounding 0.05 s up to 1 s would make fast tests crawl."""
        real = self.clock.to_real(emulated_seconds)
        if self.clock.speed == 1.0:
            return str(max(1, math.ceil(real)))
        return f"{max(real, 0.001):.3f}"

    def start_scan(self, key: str, endpoint: Endpoint, upload: Upload) -> Scan:
        """Register a billed scan and decide, now, how and when it ends."""
        now = self.clock.now()
        outcome = self.scripts.take(upload.files)
        if outcome is None and upload.unreadable and self.corrupt_documents == "fail":
            outcome = Outcome.failed()
        if outcome is not None and outcome.processing_time is not None:
            duration = outcome.processing_time
        else:
            duration = self.processing_time.draw(self._time_rng, upload.files)
        findings = (
            outcome.findings
            if outcome is not None and outcome.findings is not None
            else derive_findings(upload.files, upload.min_score, upload.exclude_identical_paper)
        )
        scan_id = f"{self._id_rng.getrandbits(256):064x}"
        scan = Scan(
            scan_id=scan_id,
            user=self.api_keys[key],
            endpoint=endpoint,
            files=tuple(upload.files),
            min_score=upload.min_score,
            exclude_identical_paper=upload.exclude_identical_paper,
            callback_url=upload.callback_url,
            received_at=now,
            ends_at=now + duration,
            fails=outcome is not None and outcome.kind == "failed",
            findings=findings,
            scan_date=datetime.now(UTC).replace(microsecond=0),
            report_id=hashlib.sha256(f"report:{scan_id}".encode()).hexdigest(),
        )
        self.store.add(scan)
        self.counters.scans_billed += 1
        if scan.callback_url is not None:
            self._schedule_callback(scan)
        return scan

    def sandbox_scan(self, upload: Upload) -> str:
        """Free and predefined: always the "successful scan" id; a callback says finished."""
        self.counters.sandbox_scans += 1
        if upload.callback_url is not None:
            self._send_callback(_spec.SANDBOX_FINISHED_ID, upload.callback_url, "finished")
        return _spec.SANDBOX_FINISHED_ID

    def lookup(self, scan_id: str, key: str) -> Scan | None:
        """The scan if this key's account may read it and it is not past retention."""
        scan = self.store.scans.get(scan_id)
        if scan is None or (scan.user is not None and scan.user != self.api_keys[key]):
            return None
        if scan.expired(self.clock.now()):
            return None
        return scan

    # -- callbacks -------------------------------------------------------------------------

    def _schedule_callback(self, scan: Scan) -> None:
        old = self._timers.pop(scan.scan_id, None)
        if old is not None:
            old.cancel()
        if scan.callback_url is None or math.isinf(scan.ends_at):
            return
        delay = max(0.0, self.clock.to_real(scan.ends_at - self.clock.now()))
        loop = asyncio.get_running_loop()
        self._timers[scan.scan_id] = loop.call_later(delay, self._scan_ended, scan)

    def _reschedule_callbacks(self) -> None:
        if not self._timers:
            return
        for scan_id in list(self._timers):
            self._schedule_callback(self.store.scans[scan_id])

    def _scan_ended(self, scan: Scan) -> None:
        self._timers.pop(scan.scan_id, None)
        if scan.callback_url is not None and self.store.scans.get(scan.scan_id) is scan:
            self._send_callback(
                scan.scan_id, scan.callback_url, "failed" if scan.fails else "finished"
            )

    def _send_callback(self, scan_id: str, url: str, status: str) -> None:
        if self._callbacks_to_drop > 0:
            self._callbacks_to_drop -= 1
            self.counters.callbacks_dropped += 1
            self.callbacks.append(
                CallbackRecord(
                    scan_id, url, status, self.clock.now(), delivered=False, dropped=True
                )
            )
            return
        task = asyncio.get_running_loop().create_task(self._deliver(scan_id, url, status))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, scan_id: str, url: str, status: str) -> None:
        sent_at = self.clock.now()
        http_status, error = await self._callback_sender.post(
            url, {"scanId": scan_id, "status": status}
        )
        delivered = http_status is not None and 200 <= http_status < 300
        if delivered:
            self.counters.callbacks_delivered += 1
        else:
            self.counters.callbacks_failed += 1
        self.callbacks.append(
            CallbackRecord(scan_id, url, status, sent_at, delivered, False, http_status, error)
        )
