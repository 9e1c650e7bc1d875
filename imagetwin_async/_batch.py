"""``submit_and_wait`` and ``iter_outcomes``: whole batches at the full rate budget.

Items are checked in input order by one preparer (off the event loop: counting PDF pages and
hashing read the files), then started through ``BatchServices.start_scan`` (the client's
scan limiter), then waited for through ``BatchServices.wait`` (the shared poll scheduler).
The runner knows the client only through ``BatchServices``, which the client wires.
``submit_concurrency`` bounds the uploads open at once; the limiter, not this module, sets
the pace.

With a journal every step is recorded before the next is taken (see ``_journal``), and a
re-run resumes: results come from the journal, started scans are waited for, and only what
was never sent is sent. Items whose POST may have started a scan without an answer are
settled through scan-overview where it can tell without doubt, and reported otherwise.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import hashlib
import logging
import os
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Final, Literal, Protocol, TypedDict

import attrs

from ._call_checks import check_batch_options
from ._errors import (
    AmbiguousSubmission,
    AuthenticationError,
    ImagetwinError,
    PollTimeout,
    ScanCancelled,
    ScanFailed,
    ScanNotFound,
)
from ._journal import Journal, JournalEntry, open_journal, utc_now
from ._models import ScanOutcome, ScanOverview, ScanResult, ScanStarted
from ._protocol import Request, build_scan_request, nothing_started
from ._session import BeforeSend
from ._spec import SizeUnit
from ._uploads import Upload, Uploadable, prepare_upload

__all__ = [
    "AmbiguousPolicy",
    "BatchItem",
    "BatchKwargs",
    "BatchOptions",
    "BatchProgress",
    "BatchRunner",
    "BatchServices",
    "ScanKwargs",
]

logger = logging.getLogger("imagetwin_async.batch")

BatchItem = Uploadable
AmbiguousPolicy = Literal["settle", "report", "resubmit"]
_DEFAULT_SUBMIT_CONCURRENCY: Final = 20
# Items checked ahead of submission at once (threads: page counting and hashing read files).
_PREPARE_AHEAD: Final = 4
# Clock difference we allow between our wall clock and the server's scan dates.
_CLOCK_SKEW: Final = 30.0


@attrs.frozen
class BatchProgress:
    """Where a batch stands; handed to the ``progress`` callback at every change.

    >>> def show(p: BatchProgress) -> None:
    ...     print(f"{p.submitted}/{p.total} submitted, {p.finished} done, {p.failed} failed")
    """

    total: int
    submitted: int = 0  # accepted by the server (have a scan id)
    running: int = 0  # accepted and still waiting for their result
    finished: int = 0  # have a result
    failed: int = 0  # ended with an error (before or after submission)

    @property
    def done(self) -> int:
        return self.finished + self.failed


class ScanKwargs(TypedDict, total=False):
    """The scan options a batch sends with every item (``ImagetwinClient.scan``'s)."""

    min_score: float | None
    callback_url: str | None
    exclude_identical_paper: bool | None
    sandbox: bool


class BatchKwargs(ScanKwargs, total=False):
    """The keyword arguments of ``submit_and_wait`` / ``iter_outcomes``, typed for callers and
    IDEs; ``BatchOptions`` holds them with their defaults (a test keeps the two the same)."""

    timeout: float | None
    progress: Callable[[BatchProgress], None] | None
    submit_concurrency: int
    journal: str | os.PathLike[str] | Journal | None
    ambiguous: AmbiguousPolicy


@attrs.frozen
class BatchOptions:
    """The scan options and limits of one batch (validated once, before anything is sent):
    ``BatchOptions(**kwargs)`` for the ``BatchKwargs`` a caller gave."""

    min_score: float | None = None
    callback_url: str | None = None
    exclude_identical_paper: bool | None = None
    sandbox: bool = False
    timeout: float | None = None
    progress: Callable[[BatchProgress], None] | None = None
    submit_concurrency: int = _DEFAULT_SUBMIT_CONCURRENCY
    journal: str | os.PathLike[str] | Journal | None = None
    ambiguous: AmbiguousPolicy = "settle"

    def request(self) -> Request:
        return build_scan_request(
            min_score=self.min_score,
            callback_url=self.callback_url,
            exclude_identical_paper=self.exclude_identical_paper,
            sandbox=self.sandbox,
        )


class StartScan(Protocol):
    """Sends one prepared scan POST and returns its answer; closes the upload."""

    def __call__(
        self, request: Request, upload: Upload, *, before_send: BeforeSend
    ) -> Awaitable[ScanStarted]: ...


@attrs.frozen
class BatchServices:
    """What a batch needs from the rest of the SDK; ``ImagetwinClient`` wires it.

    ``start_scan``: one scan POST through the scan limiter (``ScanStarter.start``). ``wait``:
    a scan's result through the shared poll scheduler. ``overview``: scan-overview's JSON
    between two times, to settle ambiguous items. ``request_deadline``: how late after it was
    sent a POST may still reach the server (``Timings.request_deadline``). ``size_unit``: how
    uploads read the reference's "MB" (``ImagetwinClient.size_unit``).
    """

    start_scan: StartScan
    wait: Callable[[str], Awaitable[ScanResult]]
    overview: Callable[[dt.datetime, dt.datetime], Awaitable[ScanOverview]]
    request_deadline: float
    size_unit: SizeUnit = "MB"


@attrs.define
class _ItemState:
    """What one item has got to, for the error a time-out or a failure should report."""

    key: str = ""
    scan_id: str | None = None
    on_the_wire: bool = False  # its POST went out and no answer has come back yet
    counted: bool = False  # counted as submitted and running in the progress


@attrs.frozen
class _Prepared:
    upload: Upload
    key: str  # the journal's name for this item: content, options and occurrence
    label: str


class BatchRunner:
    """Runs one batch. Made by ``ImagetwinClient.submit_and_wait`` / ``iter_outcomes``;
    several may run at once on one client, sharing its limiters and scheduler."""

    def __init__(
        self, services: BatchServices, items: Sequence[BatchItem], options: BatchOptions
    ) -> None:
        check_batch_options(options, journal_type=Journal)
        self._services = services
        self._items = list(items)
        self._options = options
        self._request = options.request()  # bad options raise here, before anything is sent
        self._progress = BatchProgress(total=len(self._items))
        self._stop_submitting: ImagetwinError | None = None
        self._journal: Journal | None = None
        self._record = _Recorder(None)
        self._entries: dict[str, JournalEntry] = {}
        self._gate = asyncio.Semaphore(max(1, options.submit_concurrency))
        self._deadline: float | None = None

    async def run(self) -> list[ScanOutcome]:
        outcomes: list[ScanOutcome | None] = [None] * len(self._items)
        async for index, outcome in self._run():
            outcomes[index] = outcome
        return [o for o in outcomes if o is not None]

    async def iterate(self) -> AsyncGenerator[ScanOutcome, None]:
        # aclosing: when the caller leaves its loop early, closing this generator closes the
        # run at once (cancelling what is left), not whenever the inner one is collected.
        async with contextlib.aclosing(self._run()) as run:
            async for _, outcome in run:
                yield outcome

    # ---- the run ---------------------------------------------------------------------------

    async def _run(self) -> AsyncGenerator[tuple[int, ScanOutcome], None]:
        loop = asyncio.get_running_loop()
        if self._options.timeout is not None:
            self._deadline = loop.time() + self._options.timeout
        owned = False
        if self._options.journal is not None:
            self._journal, owned = await open_journal(self._options.journal)
            self._record = _Recorder(self._journal)
        tasks: list[asyncio.Task[None]] = []
        preparer: asyncio.Task[None] | None = None
        finished = False
        try:
            if self._journal is not None:
                self._entries = await self._journal.entries()
                if self._options.ambiguous == "settle":
                    await self._settle()
            done: asyncio.Queue[tuple[int, ScanOutcome]] = asyncio.Queue()
            prepared = [loop.create_future() for _ in self._items]
            preparer = loop.create_task(self._prepare_all(prepared))
            self._report()
            tasks = [
                loop.create_task(self._one(index, item, prepared[index], done))
                for index, item in enumerate(self._items)
            ]
            for _ in tasks:
                yield await done.get()
            finished = True
        finally:
            running = [*tasks, *([preparer] if preparer else [])]
            for task in running:
                task.cancel()
            try:
                # return_exceptions: whatever one task died of, every task is awaited.
                await asyncio.gather(*running, return_exceptions=True)
            finally:
                if self._journal is not None:
                    if not finished:
                        self._log_resume_hint()
                    if owned:
                        await self._journal.close()

    async def _prepare_all(self, prepared: list[asyncio.Future[_Prepared]]) -> None:
        # Several items are checked (and hashed) at once in threads, so the first burst of
        # uploads is not held up one file at a time; results are taken in input order, so the
        # n-th copy of the same content always gets the same journal key.
        loop = asyncio.get_running_loop()
        items = iter(enumerate(self._items))
        running: collections.deque[tuple[int, asyncio.Future[tuple[Upload, str]]]] = (
            collections.deque()
        )

        def start_next() -> None:
            nxt = next(items, None)
            if nxt is not None:
                running.append((nxt[0], loop.run_in_executor(None, self._check, nxt[1])))

        for _ in range(max(1, min(self._options.submit_concurrency, _PREPARE_AHEAD))):
            start_next()
        seen: dict[str, int] = {}
        try:
            while running:
                index, checking = running.popleft()
                try:
                    upload, fingerprint = await checking
                except ImagetwinError as exc:
                    prepared[index].set_exception(exc)
                    start_next()
                    continue
                start_next()
                key = ""
                if fingerprint:
                    seen[fingerprint] = seen.get(fingerprint, 0) + 1
                    key = f"{fingerprint}#{seen[fingerprint]}"
                label = ", ".join(part.filename for part in upload.parts)
                prepared[index].set_result(_Prepared(upload, key, label))
        finally:
            for _, checking in running:
                checking.cancel()

    def _check(self, item: BatchItem) -> tuple[Upload, str]:
        """Validate an item (and hash it, for the journal); runs in a worker thread."""
        upload = prepare_upload(item, size_unit=self._services.size_unit)
        return upload, self._fingerprint(upload) if self._journal is not None else ""

    def _fingerprint(self, upload: Upload) -> str:
        # What makes two submissions the same scan: the content and the options that change
        # the result. Not the callback URL: it carries a per-process token.
        options = dict(self._request.form_fields)
        parts = [
            upload.sha256(),
            self._request.path,
            options.get("minScore", ""),
            options.get("excludeIdenticalPaper", ""),
        ]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]

    async def _one(
        self,
        index: int,
        item: BatchItem,
        prepared: asyncio.Future[_Prepared],
        done: asyncio.Queue[tuple[int, ScanOutcome]],
    ) -> None:
        state = _ItemState()
        try:
            async with asyncio.timeout_at(self._deadline):
                outcome = await self._process(item, prepared, state)
        except TimeoutError:
            outcome = ScanOutcome(item, state.scan_id, error=_timed_out(state))
        except AuthenticationError as exc:
            # Every later item would be refused the same way: stop submitting, fail them fast.
            self._stop_submitting = exc
            outcome = ScanOutcome(item, state.scan_id, error=exc)
        except (ScanFailed, ScanNotFound) as exc:
            if state.key and state.scan_id is not None:
                await self._record.failed(state.key, f"{type(exc).__name__}: {exc}")
            outcome = ScanOutcome(item, state.scan_id, error=exc)
        except ImagetwinError as exc:
            outcome = ScanOutcome(item, state.scan_id, error=exc)
        except Exception as exc:  # a bug must cost this item, not stall the whole batch
            logger.exception("batch item %d failed unexpectedly", index)
            error = ImagetwinError(f"unexpected {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            outcome = ScanOutcome(item, state.scan_id, error=error)
        self._finish(index, outcome, done, ran=state.counted)

    async def _process(
        self, item: BatchItem, prepared: asyncio.Future[_Prepared], state: _ItemState
    ) -> ScanOutcome:
        prep = await prepared
        state.key = prep.key
        entry = self._entries.get(prep.key) if self._journal is not None else None
        known = _known_outcome(item, entry, self._options.ambiguous)
        if known is not None:
            prep.upload.close()
            return known
        note: str | None = None
        if entry is not None and entry.state == "started" and entry.scan_id:
            prep.upload.close()
            state.scan_id = entry.scan_id
            note = entry.note or "resumed from the journal"
        else:
            try:
                state.scan_id = await self._send(prep, state)
            finally:
                prep.upload.close()
        state.counted = True
        self._count(submitted=1, running=1)
        result = await self._services.wait(state.scan_id)
        await self._record.finished(prep.key, result)
        return ScanOutcome(item, state.scan_id, result=result, note=note)

    async def _send(self, prep: _Prepared, state: _ItemState) -> str:
        """POST the item, recording each step in the journal; its new scan id."""
        async with self._gate:
            if self._stop_submitting is not None:
                raise self._stop_submitting
            journal = self._journal

            async def before_send() -> None:
                if journal is not None:
                    await journal.sending(prep.key, prep.label, utc_now())
                state.on_the_wire = True

            try:
                started = await self._services.start_scan(
                    self._request, prep.upload, before_send=before_send
                )
            except ImagetwinError as exc:
                if state.on_the_wire and nothing_started(exc):
                    await self._record.forget(prep.key)
                # Otherwise the journal keeps "sending", and the next run settles it.
                state.on_the_wire = False
                raise
            # (Cancelled mid-upload, on_the_wire stays set: the time-out says "may have started".)
            state.on_the_wire = False
        # Recorded, but not at the price of the scan id: a failed write leaves "sending",
        # which the next run settles through scan-overview.
        await self._record.started(prep.key, started.scan_id)
        return started.scan_id

    # ---- settling ambiguous items through scan-overview -------------------------------

    async def _settle(self) -> None:
        """Decide what became of items left in "sending" by an earlier run.

        Settled without doubt only: an item adopts a scan when exactly one API scan that no
        journal entry claims lies in its window (sent_at - skew .. sent_at + request timeout
        + skew) and in no other unsettled item's window; an item whose window holds no such
        scan never reached the server and is sent again. Anything else stays ambiguous.

        The rule assumes the journal's runs are the only API scans on this key in that window;
        where other processes scan with the same key at the same time, use "report".
        """
        assert self._journal is not None
        pending = [e for e in self._entries.values() if e.state == "sending"]
        if not pending:
            return
        span = self._services.request_deadline + _CLOCK_SKEW
        windows = {e.key: (e.sent_at - _CLOCK_SKEW, e.sent_at + span) for e in pending}
        first = min(lo for lo, _ in windows.values())
        last = max(hi for _, hi in windows.values())
        try:
            overview = await self._services.overview(
                dt.datetime.fromtimestamp(first, dt.UTC), dt.datetime.fromtimestamp(last, dt.UTC)
            )
        except ImagetwinError as exc:
            logger.warning("could not settle %d ambiguous item(s): %s", len(pending), exc)
            return
        claimed = {e.scan_id for e in self._entries.values() if e.scan_id}
        unclaimed = [s for s in overview.scans if s.api_scan and s.scan_id not in claimed]

        def inside(key: str, when: float) -> bool:
            lo, hi = windows[key]
            return lo <= when <= hi

        # We hold the journal's lock, so the run that sent these is over (finished or dead):
        # any of its POSTs that reached the server was received by now and is listed.
        for entry in pending:
            mine = [s for s in unclaimed if inside(entry.key, s.scan_date.timestamp())]
            if not mine:
                logger.warning(
                    "%s: scan-overview shows no scan from its lost POST; sending it again",
                    entry.label,
                )
                await self._journal.forget(entry.key)
                del self._entries[entry.key]
            elif len(mine) == 1 and not any(
                inside(other.key, mine[0].scan_date.timestamp())
                for other in pending
                if other is not entry
            ):
                scan = mine[0]
                note = f"adopted scan {scan.scan_id} from scan-overview (its answer was lost)"
                logger.warning("%s: %s", entry.label, note)
                await self._journal.started(entry.key, scan.scan_id, note)
                self._entries[entry.key] = attrs.evolve(
                    entry, state="started", scan_id=scan.scan_id, note=note
                )
                unclaimed.remove(scan)

    # ---- bookkeeping ------------------------------------------------------------------

    def _finish(
        self,
        index: int,
        outcome: ScanOutcome,
        done: asyncio.Queue[tuple[int, ScanOutcome]],
        *,
        ran: bool,
    ) -> None:
        running = -1 if ran else 0  # it was counted as running once it had a scan id
        if outcome.ok:
            self._count(finished=1, running=running)
        else:
            logger.debug("batch item %d failed: %s", index, outcome.error)
            self._count(failed=1, running=running)
        done.put_nowait((index, outcome))

    def _count(
        self, *, submitted: int = 0, running: int = 0, finished: int = 0, failed: int = 0
    ) -> None:
        p = self._progress
        self._progress = attrs.evolve(
            p,
            submitted=p.submitted + submitted,
            running=max(0, p.running + running),
            finished=p.finished + finished,
            failed=p.failed + failed,
        )
        self._report()

    def _report(self) -> None:
        if self._options.progress is None:
            return
        try:
            self._options.progress(self._progress)
        except Exception:  # a broken dashboard must not break the batch
            logger.exception("the batch's progress callback failed")

    def _log_resume_hint(self) -> None:
        path = getattr(self._journal, "path", None)
        logger.warning(
            "batch interrupted: %d of %d items done; run it again with the same journal%s to "
            "resume (results are kept, started scans are not paid for again)",
            self._progress.done,
            self._progress.total,
            f" ({path})" if path else "",
        )


class _Recorder:
    """The batch's journal writes, typed; no-ops without a journal or a key (an item that
    failed before it was hashed). A failing write is logged, never allowed to lose an outcome:
    the entry stays where it was, and the next run settles it."""

    def __init__(self, journal: Journal | None) -> None:
        self._journal = journal

    async def started(self, key: str, scan_id: str) -> None:
        if self._journal is not None and key:
            await _logged("started", self._journal.started(key, scan_id))

    async def finished(self, key: str, result: ScanResult) -> None:
        if self._journal is not None and key:
            await _logged("finished", self._journal.finished(key, result))

    async def failed(self, key: str, error: str) -> None:
        if self._journal is not None and key:
            await _logged("failed", self._journal.failed(key, error))

    async def forget(self, key: str) -> None:
        if self._journal is not None and key:
            await _logged("forget", self._journal.forget(key))


async def _logged(step: str, write: Awaitable[None]) -> None:
    try:
        await write
    except Exception:  # any store's failure, not only ours (JournalError)
        logger.exception("the journal could not record %s for an item", step)


def _known_outcome(
    item: BatchItem, entry: JournalEntry | None, ambiguous: AmbiguousPolicy
) -> ScanOutcome | None:
    """The outcome the journal already holds for this item, if any (no request needed)."""
    if entry is None:
        return None
    if entry.state == "done":
        return ScanOutcome(item, entry.scan_id, result=entry.result, note="from the journal")
    if entry.state == "failed":
        said = entry.error or "ScanFailed: the scan failed (recorded in the journal)"
        kind, _, message = said.partition(": ")
        error: ScanFailed | ScanNotFound = (
            ScanNotFound(message, status=404, endpoint="GET /result/{scanId}")
            if kind == "ScanNotFound"
            else ScanFailed(message or said, status=500, endpoint="GET /result/{scanId}")
        )
        return ScanOutcome(item, entry.scan_id, error=error, note="from the journal")
    if entry.state == "sending" and ambiguous != "resubmit":
        return ScanOutcome(item, None, error=_ambiguous_error(entry))
    return None


def _timed_out(state: _ItemState) -> ImagetwinError:
    if state.scan_id is not None:
        return PollTimeout("the batch timed out before this scan finished", scan_id=state.scan_id)
    if state.on_the_wire:
        return AmbiguousSubmission(
            "the batch timed out while this item's upload was on its way: the scan may have "
            "started (and be billed). Check scan_overview, or re-run with a journal.",
            endpoint="POST /scan",
        )
    return ScanCancelled("the batch timed out before this item was submitted")


def _ambiguous_error(entry: JournalEntry) -> AmbiguousSubmission:
    when = dt.datetime.fromtimestamp(entry.sent_at, dt.UTC).isoformat(timespec="seconds")
    return AmbiguousSubmission(
        f"{entry.label}: sent at {when} with no answer, and scan-overview could not tell "
        "whether it started a scan. Check scan_overview, or re-run with ambiguous='resubmit' "
        "to send it again (it may be billed twice).",
        endpoint="POST /scan",
    )
