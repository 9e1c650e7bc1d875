"""``ImagetwinClient``: every endpoint of the API, typed, rate-limited and safe to retry."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import enum
import os
import warnings
from collections.abc import AsyncGenerator, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeVar, Unpack, cast, overload

import aiohttp
import attrs

from . import _protocol as protocol
from . import _spec
from . import _telemetry as telemetry
from ._batch import BatchItem, BatchKwargs, BatchOptions, BatchRunner, BatchServices
from ._call_checks import check_batch, check_max_retries, check_timeout
from ._errors import ClientClosed, ConfigurationError, InvalidArgument
from ._limits import Limiter, LimitState, RateLimit
from ._models import Outcome, ScanOverview, ScanPending, ScanResult, ScanStarted
from ._modelstore import ModelStore
from ._polling import PollScheduler, read_rate_of
from ._scanning import ScanStarter
from ._session import VIEW_OUTLIVED, ApiKey, RetryPolicy, Transport
from ._spec import SizeUnit
from ._timings import Timings
from ._uploads import Uploadable, cheap_to_prepare, prepare_upload
from ._useragent import user_agent

__all__ = ["DEFAULT_BASE_URL", "ImagetwinClient"]

# A batch's item type: outcomes carry it as their ``source``.
Item = TypeVar("Item", bound=BatchItem)

DEFAULT_BASE_URL = "https://api.imagetwin.ai/v1"
API_KEY_ENV = "IMAGETWIN_API_KEY"
BASE_URL_ENV = "IMAGETWIN_BASE_URL"


class _Unset(enum.Enum):
    UNSET = enum.auto()


# "Take this from ``timings``" for the time-outs, where None already means "no time-out".
_UNSET: Final = _Unset.UNSET


class ImagetwinClient:
    """An asyncio client for the Imagetwin API; one per API key, shared by all your tasks.

    >>> async with ImagetwinClient() as client:            # key from IMAGETWIN_API_KEY
    ...     started = await client.scan("paper.pdf", min_score=0.5)
    ...     result = await client.wait_for_result(started.scan_id)

    Every timing is a parameter, so tests can run it a hundred times faster against the
    emulator: ``speed=60`` matches an emulator at ``speed=60`` (or ``**emu.client_kwargs()``),
    ``timings=Timings(...)`` sets them all at once, and each keyword below overrides one
    (defaults: ``Timings()``, the vendor's limits and a 5 s first poll). ``scan_limit`` /
    ``result_limit`` take a ``RateLimit`` or any ``Limiter`` (one shared through Redis, say).
    Pass ``session`` to use your own ``aiohttp.ClientSession`` (the client then leaves it open;
    ``timeout`` and ``connect_timeout`` still apply to every request). ``base_url`` defaults to
    ``IMAGETWIN_BASE_URL``, else the real API. Endpoint methods take ``timeout=`` to bound each
    attempt of that one call instead of the client's ``timeout`` (and ``max_retries=``, where
    retrying makes sense); ``with_options(...)`` gives a view of the client with other
    time-outs and retries that shares its session, rate limiters and poll scheduler.
    ``model_store`` (a ``ModelStore``, e.g. ``FileModelStore()``) keeps what the poll scheduler
    learned about scan durations across runs, so the next run polls well from its first scan.
    ``max_retry_after``: the longest Retry-After waited for; a longer one raises
    ``RateLimited`` (or ``ServiceUnavailable``) at once with the server's value.
    ``limiter_outage_timeout``: how long a shared limiter that cannot be reached is retried
    (nothing is sent meanwhile) before ``LimiterUnavailable`` is raised.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        scan_limit: RateLimit | Limiter | None = None,
        result_limit: RateLimit | Limiter | None = None,
        poll_interval: float | None = None,
        max_poll_interval: float | None = None,
        max_retries: int = 5,
        backoff_base: float | None = None,
        backoff_cap: float | None = None,
        timeout: float | _Unset | None = _UNSET,
        connect_timeout: float | _Unset | None = _UNSET,
        session: aiohttp.ClientSession | None = None,
        timings: Timings | None = None,
        speed: float = 1.0,
        model_store: ModelStore | None = None,
        max_retry_after: float = 300.0,
        limiter_outage_timeout: float = 30.0,
        size_unit: SizeUnit = "MB",
    ) -> None:
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        if not key:
            raise ConfigurationError(
                f"no API key: pass api_key=... or set {API_KEY_ENV} "
                "(generate one at app.imagetwin.ai/account)"
            )
        # Keywords given override the (scaled) timings, as given: they are real seconds.
        overrides: dict[str, Any] = {}
        for name, limit in (("scan_limit", scan_limit), ("result_limit", result_limit)):
            if isinstance(limit, RateLimit):
                overrides[name] = limit
        for name, seconds in (
            ("poll_interval", poll_interval),
            ("max_poll_interval", max_poll_interval),
            ("backoff_base", backoff_base),
            ("backoff_cap", backoff_cap),
        ):
            if seconds is not None:
                overrides[name] = seconds
        for name, limit_s in (("timeout", timeout), ("connect_timeout", connect_timeout)):
            if limit_s is not _UNSET:
                overrides[name] = limit_s
        if size_unit not in ("MB", "MiB"):
            raise ConfigurationError(f"size_unit must be 'MB' or 'MiB', got {size_unit!r}")
        self.timings: Timings = attrs.evolve((timings or Timings()).scaled(speed), **overrides)
        """The timings in force: ``timings`` scaled by ``speed``, with the keywords applied
        (``scan_limit`` / ``result_limit``: the limits the limiters in use enforce, also when a
        ``Limiter`` was passed in)."""
        t = self.timings
        # None: IMAGETWIN_BASE_URL (an emulator or proxy set in the environment), else the API.
        if base_url is None:
            base_url = os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        self.base_url = base_url
        self.closed: bool = False
        # How the reference's "MB" is read: "MB" (10**6, stricter, default) or "MiB" (2**20).
        self.size_unit: SizeUnit = size_unit
        self._scan_limiter = _as_limiter(scan_limit, t.scan_limit, "POST /scan")
        self._result_limiter = _as_limiter(result_limit, t.result_limit, "GET /result")
        # A Limiter passed in enforces its own limit: the timings say that one, not a default.
        self.timings = t = attrs.evolve(
            t,
            scan_limit=_limit_of(self._scan_limiter, t.scan_limit),
            result_limit=_limit_of(self._result_limiter, t.result_limit),
        )
        self._retry = RetryPolicy(
            max_retries,
            t.backoff_base,
            t.backoff_cap,
            max_retry_after=max_retry_after,
            limiter_outage_timeout=limiter_outage_timeout,
        )
        # A view (``with_options``) shares everything above and below; only its timings,
        # retries, transport view and scan starter are its own.
        self._is_view = False
        self._transport = Transport(
            base_url=base_url,
            api_key=ApiKey(key),
            limiters={"scan": self._scan_limiter, "result": self._result_limiter},
            retry=self._retry,
            timeout=aiohttp.ClientTimeout(total=t.timeout, connect=t.connect_timeout),
            session=session,
            user_agent=user_agent(),
        )
        self._scheduler = PollScheduler(
            self.get_result,
            poll_interval=t.poll_interval,
            max_poll_interval=t.max_poll_interval,
            # Paced at the result budget, so its reads never pile into one window.
            read_rate=read_rate_of(self._result_limiter),
            model_store=model_store,
        )
        self._starter = ScanStarter(self._transport, self._scheduler)

    def __repr__(self) -> str:
        view = ""
        if self._is_view:
            t = self.timings
            view = (
                f" view timeout={t.timeout!r} connect_timeout={t.connect_timeout!r}"
                f" max_retries={self._retry.max_retries}"
            )
        return f"<{type(self).__name__} base_url={self.base_url!r} api_key='***'{view}>"

    async def __aenter__(self) -> Self:
        if self._is_view and self._transport.outlived:
            raise ClientClosed(VIEW_OUTLIVED)
        self.closed = False
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop polling (waiters get ``ScanCancelled``) and close the HTTP session we own.

        The client can be used again afterwards (``async with`` it once more): it reopens
        what it needs. ``closed`` says whether it was closed since last entered. Closing a
        client ends its views (``with_options``): using one raises ``ClientClosed``.

        Closing a view closes nothing it shares with its client (the session, the poll
        scheduler go on); the view itself raises ``ClientClosed`` until entered again.
        """
        if self._is_view:
            self.closed = True
            return
        await self._scheduler.close()
        await self._transport.close()
        self.closed = True

    def with_options(
        self,
        *,
        timeout: float | _Unset | None = _UNSET,
        connect_timeout: float | _Unset | None = _UNSET,
        max_retries: int | None = None,
        max_retry_after: float | None = None,
    ) -> Self:
        """A view of this client with other time-outs or retries, as openai's SDK has it.

        >>> quick = client.with_options(timeout=10, max_retries=1)
        >>> answer = await quick.get_result(scan_id)          # this call: 10 s, one retry
        >>> await client.with_options(max_retries=0).scan("paper.pdf")

        A view is cheap (make one per request if you like) and shares everything that must
        stay one per key: the HTTP session, the rate limiters (so the budget and the
        zero-429 pacing hold across all views), the poll scheduler, the service clock. Its
        own: ``timeout`` / ``connect_timeout`` (seconds per attempt, None for none; they
        apply with a session you passed in too), ``max_retries`` and ``max_retry_after``
        (see the constructor). Options not given are this client's (or this view's).
        A keyword on the call itself wins over the view: call > view > client.

        ``max_retries`` counts resends of requests that provably did nothing: a 429, a
        connection that was refused, a 502/503/504 for reads. For ``scan`` (and a batch's
        scans) that rule is the money rule: a scan POST is resent only when the answer proves
        no scan started (429, refused connection, 503/504 with Retry-After); one that may have
        started a scan is never resent, whatever ``max_retries`` says (``AmbiguousSubmission``).

        ``wait_for_result`` on a view waits through the shared scheduler, whose reads use the
        client's options. Closing the view (``async with`` it, or ``close``) closes nothing of
        the client's; closing the client ends every view of it (``ClientClosed``).
        """
        self._check_usable()
        changes: dict[str, Any] = {}
        for name, limit_s in (("timeout", timeout), ("connect_timeout", connect_timeout)):
            if limit_s is not _UNSET:
                changes[name] = limit_s
        timings = attrs.evolve(self.timings, **changes)
        retry = self._retry
        if max_retries is not None:
            if isinstance(max_retries, bool):
                raise ConfigurationError(f"max_retries must be a whole number, got {max_retries}")
            retry = attrs.evolve(retry, max_retries=max_retries)
        if max_retry_after is not None:
            retry = attrs.evolve(retry, max_retry_after=max_retry_after)
        view = copy.copy(self)
        view.timings = timings
        view._retry = retry
        view._transport = self._transport.derive(
            retry=retry,
            timeout=aiohttp.ClientTimeout(total=timings.timeout, connect=timings.connect_timeout),
        )
        view._starter = ScanStarter(view._transport, self._scheduler)
        view._is_view = True
        view.closed = False
        return view

    def _check_usable(self) -> None:
        """``ClientClosed`` for a view that was closed, or whose client was."""
        if not self._is_view:
            return
        if self._transport.outlived:
            raise ClientClosed(VIEW_OUTLIVED)
        if self.closed:
            raise ClientClosed(
                "this client view (with_options) was closed; enter it again, or make a new one"
            )

    def _for_call(
        self, timeout: float | None, max_retries: int | None = None
    ) -> tuple[Transport, aiohttp.ClientTimeout | None]:
        """The transport and time-out of one call: its own options over the client's."""
        self._check_usable()
        call_timeout = self._call_timeout(timeout)
        retries = check_max_retries(max_retries)
        if retries is None or retries == self._retry.max_retries:
            return self._transport, call_timeout
        return self._transport.derive(
            retry=attrs.evolve(self._retry, max_retries=retries)
        ), call_timeout

    # ---- rate-limit state --------------------------------------------------------------

    @property
    def limits(self) -> dict[Literal["scan", "result"], LimitState]:
        """Requests left and time to the next free slot, per endpoint group.

        >>> client.limits["scan"].available, client.limits["scan"].next_slot_in
        """
        return {"scan": self._scan_limiter.snapshot(), "result": self._result_limiter.snapshot()}

    @property
    def scheduler(self) -> PollScheduler:
        """The poll scheduler shared by every waiter on this client."""
        return self._scheduler

    # ---- endpoints ----------------------------------------------------------------------

    async def scan(
        self,
        files: Uploadable,
        *,
        min_score: float | None = None,
        callback_url: str | None = None,
        exclude_identical_paper: bool | None = None,
        sandbox: bool = False,
        block: bool = True,
        timeout: float | None = None,
        max_retries: int | None = None,
    ) -> ScanStarted:
        """Start one (billed) scan of a document or of up to 25 images.

        ``files`` is a path to a .pdf/.docx or an image, a sequence of image paths, or content
        with a name (``FileContent``, or a FastAPI ``UploadFile``). Everything is checked before
        any byte is sent (``InvalidUpload``). ``block=False`` raises ``RateLimitBusy`` instead
        of waiting for a free slot. A POST that may have started a scan is never retried:
        that case raises ``AmbiguousSubmission``. ``timeout`` bounds each attempt of this call
        in seconds (default: the client's ``timeout``). ``max_retries`` (default: the
        client's) counts only resends the money rule allows: a POST whose answer proves no scan
        started (429, a refused connection, 503/504 with Retry-After); a POST that may have
        started a scan is never resent, whatever ``max_retries`` says.
        """
        transport, call_timeout = self._for_call(timeout, max_retries)
        starter = self._starter if transport is self._transport else self._starter_on(transport)
        request = protocol.build_scan_request(
            min_score=min_score,
            callback_url=callback_url,
            exclude_identical_paper=exclude_identical_paper,
            sandbox=sandbox,
        )
        # Checking reads the files (a PDF's page count): off the event loop, unless it is
        # small content in memory, where the hop to a thread costs more than the check.
        if cheap_to_prepare(files):
            upload = prepare_upload(files, size_unit=self.size_unit)
        else:
            upload = await asyncio.to_thread(prepare_upload, files, size_unit=self.size_unit)
        return await starter.start(request, upload, block=block, timeout=call_timeout)

    def _starter_on(self, transport: Transport) -> ScanStarter:
        return ScanStarter(transport, self._scheduler)

    def _call_timeout(self, timeout: float | None) -> aiohttp.ClientTimeout | None:
        """A per-call time-out, or None for the client's own."""
        if timeout is None:
            return None
        if isinstance(timeout, bool) or not timeout > 0:
            raise InvalidArgument(f"timeout must be > 0 seconds, got {timeout!r}")
        connect = self.timings.connect_timeout
        return aiohttp.ClientTimeout(
            total=timeout, connect=min(timeout, connect) if connect is not None else None
        )

    async def scan_pdf(self, path: str | os.PathLike[str]) -> ScanStarted:
        """Deprecated endpoint ``/scanPdf``: one PDF. Use ``scan`` instead."""
        return await self._legacy_scan("scanPdf", path)

    async def scan_images(self, paths: Sequence[str | os.PathLike[str]]) -> ScanStarted:
        """Deprecated endpoint ``/scanImages``: up to 25 images. Use ``scan`` instead."""
        return await self._legacy_scan("scanImages", paths)

    async def _legacy_scan(
        self, endpoint: protocol.LegacyEndpoint, files: Uploadable
    ) -> ScanStarted:
        warnings.warn(
            f"the /{endpoint} endpoint is deprecated by Imagetwin; use ImagetwinClient.scan",
            DeprecationWarning,
            stacklevel=3,
        )
        self._check_usable()
        request = protocol.build_scan_request(legacy=endpoint)
        upload = await asyncio.to_thread(
            prepare_upload, files, legacy=endpoint, size_unit=self.size_unit
        )
        return await self._starter.start(request, upload)

    async def get_result(
        self,
        scan_id: str,
        *,
        block: bool = True,
        timeout: float | None = None,
        max_retries: int | None = None,
    ) -> ScanResult | ScanPending:
        """One read of a scan's result: ``ScanResult`` when done, ``ScanPending`` while running.

        Raises ``ScanNotFound`` (404) and ``ScanFailed`` (500). ``timeout`` bounds each attempt
        of this call in seconds (default: the client's ``timeout``); ``max_retries``: how often
        this read is sent again after a 429, a 502/503/504 or a network failure (default: the
        client's).
        """
        transport, call_timeout = self._for_call(timeout, max_retries)
        request = protocol.build_result_request(scan_id)
        telemetry.note_read(scan_id)
        response = await transport.send(request, block=block, timeout=call_timeout)
        return protocol.read_result(
            response.status, response.headers, response.body, request=request
        )

    async def wait_for_result(self, scan_id: str, *, timeout: float | None = None) -> ScanResult:
        """Wait for a scan to finish, through the poll scheduler shared by all waiters.

        Raises ``PollTimeout`` after ``timeout`` seconds (the scan may still finish), and
        ``ScanFailed`` / ``ScanNotFound`` as the result endpoint says.
        """
        self._check_usable()
        protocol.validate_scan_id(scan_id)
        with telemetry.waiting(scan_id):  # a span, the scans-waiting gauge, reads per scan
            return await self._scheduler.wait(scan_id, timeout=check_timeout(timeout))

    def notify_finished(self, scan_id: str) -> bool:
        """A hint that ``scan_id`` ended (a callback arrived): poll it now.

        Trusts nothing: the next read decides. Returns False for scans nobody waits for.
        """
        self._check_usable()
        return self._scheduler.hint(scan_id)

    @overload
    async def scan_overview(
        self,
        start_date: dt.date | str,
        end_date: dt.date | str,
        *,
        export_format: Literal["json"] = "json",
        timeout: float | None = None,
        max_retries: int | None = None,
    ) -> ScanOverview: ...

    @overload
    async def scan_overview(
        self,
        start_date: dt.date | str,
        end_date: dt.date | str,
        *,
        export_format: Literal["csv"],
        timeout: float | None = None,
        max_retries: int | None = None,
    ) -> str: ...

    async def scan_overview(
        self,
        start_date: dt.date | str,
        end_date: dt.date | str,
        *,
        export_format: Literal["json", "csv"] = "json",
        timeout: float | None = None,
        max_retries: int | None = None,
    ) -> ScanOverview | str:
        """Scans performed between two UTC dates, both included: a ``ScanOverview`` for
        ``json``, the server's text for ``csv``. ``timeout``, ``max_retries``: as for
        ``get_result``."""
        transport, call_timeout = self._for_call(timeout, max_retries)
        request = protocol.build_overview_request(start_date, end_date, export_format)
        response = await transport.send(request, timeout=call_timeout)
        return protocol.read_overview(
            response.status, response.headers, response.body, request=request
        )

    async def download_report(
        self,
        result: ScanResult | str,
        path: str | os.PathLike[str],
        *,
        timeout: float | None = None,
    ) -> Path:
        """Stream a scan's PDF report to ``path`` (a directory, existing or ending in ``/``:
        ``<scan_id>.pdf`` inside it, created if needed).

        ``result`` is a ``ScanResult`` or the report URL. The API key is not sent: the link
        is public and served by another host. ``timeout`` bounds the download in seconds
        (default: the client's ``timeout``). A download is not retried.
        """
        transport, call_timeout = self._for_call(timeout)
        url = result.pdf_report if isinstance(result, ScanResult) else result
        if not isinstance(url, str) or not url:
            raise InvalidArgument("this result has no report URL")
        # "reports/" names a directory even before it exists.
        names_dir = os.fspath(path).endswith(("/", os.sep))
        scan_id = result.scan_id if isinstance(result, ScanResult) else None
        is_dir = names_dir or await asyncio.to_thread(Path(path).is_dir)
        target = protocol.report_target(path, is_dir=is_dir, scan_id=scan_id, url=url)
        return await transport.download(
            url, target, max_bytes=_spec.MAX_REPORT_BYTES, timeout=call_timeout
        )

    # ---- batches ------------------------------------------------------------------------

    async def submit_and_wait(
        self, batch: Iterable[Item], **options: Unpack[BatchKwargs]
    ) -> list[Outcome[Item]]:
        """Scan every item and wait for every result: one ``ScanOutcome`` per item, in order
        (a ``ScanSuccess`` or a ``ScanFailure``, its ``source`` typed as the items are).

        Keyword arguments (all optional; ``BatchKwargs``)::

            min_score=None, callback_url=None, exclude_identical_paper=None, sandbox=False
                                    # as for ``scan``, applied to every item
            timeout=None            # seconds for the whole batch
            progress=None           # called with a ``BatchProgress`` at every change
            on_started=None         # called with (item, scan_id) once a scan exists
            submit_concurrency=20   # uploads open at once (the scan limiter sets the pace)
            journal=None            # a path or a ``Journal``: resumable, never paid twice
            ambiguous="settle"      # "settle" | "report" | "resubmit", see below
            max_unanswered_scans=4  # scan POSTs awaiting an answer at once (items in doubt)
            settle_delay=30.0       # how late scan-overview may list a lost POST's scan

        Submissions are paced by the scan limiter; results come through the shared poll
        scheduler. One item's failure never loses another's result; ``timeout`` bounds the
        whole batch (unfinished items get ``PollTimeout`` / ``ScanCancelled``). Bad options
        raise before anything is sent; a bad item becomes that item's ``InvalidUpload``
        outcome.

        ``journal`` makes the batch resumable: re-run it after a crash and nothing is paid for
        twice. ``ambiguous`` says what to do with items whose POST an earlier run sent without
        hearing back: ``"settle"`` (default) asks scan-overview and adopts or resends only
        where it tells without doubt, reporting the rest as ``AmbiguousSubmission``;
        ``"report"`` reports them all; ``"resubmit"`` sends them again (they may be billed
        twice). A crash leaves at most ``max_unanswered_scans`` items in doubt; settling
        waits ``settle_delay`` after a lost POST before it believes an empty window.
        """
        self._check_usable()
        runner = BatchRunner(self._batch_services(), check_batch(batch), BatchOptions(**options))
        # The runner makes only ScanSuccess / ScanFailure, each with its item as source.
        return cast("list[Outcome[Item]]", await runner.run())

    def iter_outcomes(
        self, batch: Iterable[Item], **options: Unpack[BatchKwargs]
    ) -> AsyncGenerator[Outcome[Item], None]:
        """Like ``submit_and_wait`` (the same keyword arguments), but yields each outcome as
        soon as it is known.

        >>> async for outcome in client.iter_outcomes(paths, min_score=0.5):
        ...     print(outcome.source, outcome.ok)

        Leaving the loop early cancels the items still in progress (scans already started go
        on running on the server). To have that happen at once rather than when the iterator
        is collected, close it: ``async with contextlib.aclosing(client.iter_outcomes(...))``.
        """
        self._check_usable()
        runner = BatchRunner(self._batch_services(), check_batch(batch), BatchOptions(**options))
        return cast("AsyncGenerator[Outcome[Item], None]", runner.iterate())

    def _batch_services(self) -> BatchServices:
        """What a batch runs on: this client's scan starter, scheduler and scan-overview."""
        return BatchServices(
            start_scan=self._starter.start,
            wait=self._scheduler.wait,
            overview=self.scan_overview,
            request_deadline=self.timings.request_deadline,
            service_clock=self._transport.service_clock,
            answer_times=self._transport.answer_times,
            limiters={"scan": self._scan_limiter, "result": self._result_limiter},
            durations=self._scheduler,
            size_unit=self.size_unit,
            base_url=self.base_url,
        )


def _as_limiter(given: RateLimit | Limiter | None, timed: RateLimit, name: str) -> Limiter:
    """The limiter for one endpoint group: a ``Limiter`` as given, else built from the limit."""
    if given is None or isinstance(given, RateLimit):
        return timed.build(name=name)
    return given


def _limit_of(limiter: Limiter, assumed: RateLimit) -> RateLimit:
    """The ``RateLimit`` a limiter enforces: its own (ours and the Redis ones keep it as
    ``.limit``), else what its snapshot says, else ``assumed``."""
    inner = getattr(limiter, "limit", None)
    if isinstance(inner, RateLimit):
        return inner
    try:
        state = limiter.snapshot()
        return RateLimit(state.requests, per=state.per)
    except Exception:  # a custom limiter that cannot tell (yet): the timings' limit
        return assumed
