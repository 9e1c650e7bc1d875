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
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final, Literal, Protocol, TypedDict

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
from ._journal import Journal, JournalEntry
from ._journal_open import open_journal
from ._models import Outcome, ScanFailure, ScanOverview, ScanResult, ScanStarted, ScanSuccess
from ._modelstore import JournalModelStore, MetaStore, ModelStore
from ._pacing import UnansweredScans
from ._protocol import Request, build_scan_request, nothing_started
from ._recovery import Recovery, bind_to_service, settled_note
from ._servicetime import ServiceClock
from ._session import BeforeSend
from ._settlement import Decision, Settlement
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
# Scan POSTs on their way at once: a crash leaves at most this many items in doubt. Measured
# (benchmarks/batch_throughput.py, README): 4 costs nothing against the rate limit.
_DEFAULT_MAX_UNANSWERED: Final = 4
# How long after a POST's connection ended the service may still register its scan or leave
# it out of scan-overview: settling waits this long before it believes an empty window.
_DEFAULT_SETTLE_DELAY: Final = 30.0


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
    on_started: Callable[[Any, str], None] | None
    submit_concurrency: int
    journal: str | os.PathLike[str] | Journal | None
    ambiguous: AmbiguousPolicy
    max_unanswered_scans: int
    settle_delay: float


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
    # Called with (item, scan_id) once an item's scan is known to exist (new or resumed), so a
    # caller can list every billed scan even if the batch is then cancelled.
    on_started: Callable[[Any, str], None] | None = None
    submit_concurrency: int = _DEFAULT_SUBMIT_CONCURRENCY
    journal: str | os.PathLike[str] | Journal | None = None
    ambiguous: AmbiguousPolicy = "settle"
    max_unanswered_scans: int = _DEFAULT_MAX_UNANSWERED
    settle_delay: float = _DEFAULT_SETTLE_DELAY

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
    sent a POST may still reach the server (``Timings.request_deadline``). ``service_clock``:
    the service's clock as the transport's answers date it; ``answer_times``: recent answer
    times (monotonic) per endpoint group; ``limiters``: the client's, per group (a resumed
    journal seeds them). ``durations``: the scheduler, to start from the durations a journal
    kept (when the journal has a meta store). ``size_unit``: how uploads read the reference's
    "MB" (``ImagetwinClient.size_unit``). ``base_url``: the service the scans are made on; a
    journal records it and refuses to serve another (``None``: not checked).
    """

    start_scan: StartScan
    wait: Callable[[str], Awaitable[ScanResult]]
    overview: Callable[[dt.datetime, dt.datetime], Awaitable[ScanOverview]]
    request_deadline: float
    service_clock: ServiceClock = attrs.field(factory=ServiceClock)
    answer_times: Mapping[str, Iterable[float]] = attrs.field(factory=dict)
    limiters: Mapping[str, object] = attrs.field(factory=dict)
    durations: WarmStart | None = None
    size_unit: SizeUnit = "MB"
    base_url: str | None = None


class WarmStart(Protocol):
    """The poll scheduler's side of keeping learned durations in a batch's journal."""

    async def warm_start(self, store: ModelStore) -> bool: ...

    async def save_model(self, store: ModelStore | None = None) -> None: ...


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
        self._recovery: Recovery | None = None
        self._pacing = UnansweredScans(options.max_unanswered_scans, self._spacing)
        # Settling: decisions of this run, new POSTs held until in-doubt windows closed, and
        # items waiting to be settled once nothing else of the batch is in progress.
        self._decisions: dict[str, Decision] = {}
        self._hold_until = -float("inf")
        self._active = len(self._items)
        self._late: dict[str, asyncio.Future[Decision]] = {}
        self._late_task: asyncio.Task[None] | None = None

    async def run(self) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(self._items)
        async for index, outcome in self._run():
            outcomes[index] = outcome
        return [o for o in outcomes if o is not None]

    async def iterate(self) -> AsyncGenerator[Outcome, None]:
        # aclosing: when the caller leaves its loop early, closing this generator closes the
        # run at once (cancelling what is left), not whenever the inner one is collected.
        async with contextlib.aclosing(self._run()) as run:
            async for _, outcome in run:
                yield outcome

    # ---- the run ---------------------------------------------------------------------------

    async def _run(self) -> AsyncGenerator[tuple[int, Outcome], None]:
        loop = asyncio.get_running_loop()
        if self._options.timeout is not None:
            self._deadline = loop.time() + self._options.timeout
        owned = False
        if self._options.journal is not None:
            self._journal, owned = await open_journal(self._options.journal)
            if self._services.base_url is not None:
                # Before anything is read from it (or written): another service's results
                # are not ours.
                try:
                    await bind_to_service(self._journal, self._services.base_url)
                except BaseException:
                    if owned:
                        await self._journal.close()
                    raise
            self._record = _Recorder(self._journal)
        durations = self._journal_durations()
        if durations is not None:
            await durations[0].warm_start(durations[1])
        tasks: list[asyncio.Task[None]] = []
        preparer: asyncio.Task[None] | None = None
        keeper: asyncio.Task[None] | None = None
        finished = False
        try:
            if self._journal is not None:
                keeper = await self._recover(self._journal)
            done: asyncio.Queue[tuple[int, Outcome]] = asyncio.Queue()
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
            extra = [t for t in (preparer, keeper, self._late_task) if t is not None]
            running = [*tasks, *extra]
            for task in running:
                task.cancel()
            try:
                # return_exceptions: whatever one task died of, every task is awaited.
                await asyncio.gather(*running, return_exceptions=True)
            finally:
                await self._end_journal(owned=owned, finished=finished, durations=durations)

    async def _end_journal(
        self, *, owned: bool, finished: bool, durations: tuple[WarmStart, ModelStore] | None
    ) -> None:
        if self._journal is None:
            return
        if not finished:
            self._log_resume_hint()
        if durations is not None:
            await durations[0].save_model(durations[1])
        if owned:
            await self._journal.close()

    def _journal_durations(self) -> tuple[WarmStart, ModelStore] | None:
        # A journal with a meta store keeps what the scheduler learned: a resumed batch (or
        # the next batch on the same journal) polls well from its first scan.
        scheduler, journal = self._services.durations, self._journal
        if scheduler is None or journal is None or not isinstance(journal, MetaStore):
            return None
        return scheduler, JournalModelStore(journal)

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
        done: asyncio.Queue[tuple[int, Outcome]],
    ) -> None:
        state = _ItemState()
        try:
            async with asyncio.timeout_at(self._deadline):
                outcome = await self._process(item, prepared, state)
        except TimeoutError:
            outcome = ScanFailure(item, state.scan_id, error=_timed_out(state))
        except AuthenticationError as exc:
            # Every later item would be refused the same way: stop submitting, fail them fast.
            self._stop_submitting = exc
            outcome = ScanFailure(item, state.scan_id, error=exc)
        except ScanFailed as exc:
            if state.key and state.scan_id is not None:
                await self._record.failed(state.key, f"{type(exc).__name__}: {exc}")
            outcome = ScanFailure(item, state.scan_id, error=exc)
        except ScanNotFound as exc:
            # Not recorded: the server handed out this id (and billed it); a 404 for it may be
            # a lagging replica or a lying proxy, and a re-run asks again instead of keeping a
            # paid result lost for good.
            outcome = ScanFailure(item, state.scan_id, error=exc)
        except ImagetwinError as exc:
            outcome = ScanFailure(item, state.scan_id, error=exc)
        except Exception as exc:  # a bug must cost this item, not stall the whole batch
            logger.exception("batch item %d failed unexpectedly", index)
            error = ImagetwinError(f"unexpected {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            outcome = ScanFailure(item, state.scan_id, error=error)
        self._finish(index, outcome, done, ran=state.counted)

    async def _process(
        self, item: BatchItem, prepared: asyncio.Future[_Prepared], state: _ItemState
    ) -> Outcome:
        prep = await prepared
        state.key = prep.key
        entry = self._entries.get(prep.key) if self._journal is not None else None
        decision = self._decisions.get(prep.key)
        resent: str | None = None
        if entry is not None and entry.state == "sending" and decision is not None:
            if decision.kind is Settlement.UNCALIBRATED:
                decision = await self._settle_late(prep.key)
            if decision.kind is Settlement.ADOPT and decision.scan_id:
                entry = attrs.evolve(entry, state="started", scan_id=decision.scan_id)
                entry = attrs.evolve(entry, note=self._note(decision))
            elif decision.kind is Settlement.RESEND:
                entry, resent = None, self._note(decision)
            else:
                prep.upload.close()
                return ScanFailure(item, None, error=_ambiguous_error(entry, decision))
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
                state.scan_id, note = await self._send(item, prep, state)
                note = note or resent
            finally:
                prep.upload.close()
        state.counted = True
        self._started(item, state.scan_id)
        self._count(submitted=1, running=1)
        result = await self._services.wait(state.scan_id)
        await self._record.finished(prep.key, result)
        return ScanSuccess(item, state.scan_id, result=result, note=note)

    async def _send(
        self, item: BatchItem, prep: _Prepared, state: _ItemState
    ) -> tuple[str, str | None]:
        """POST the item (again, if settling proves its lost POST started nothing): its new
        scan id, and a note when settling decided what became of a lost answer."""
        note: str | None = None
        while True:
            try:
                return await self._send_once(prep, state), note
            except AmbiguousSubmission as exc:
                if self._recovery is None or self._options.ambiguous != "settle" or not prep.key:
                    raise
                self._recovery.lost(prep.key)
                decision = await self._settle_late(prep.key)
                if decision.kind is Settlement.ADOPT and decision.scan_id:
                    return decision.scan_id, self._note(decision)
                if decision.kind is not Settlement.RESEND:
                    raise _ambiguous_error(None, decision, label=prep.label) from exc
                note = self._note(decision)
                logger.warning("%s: %s", prep.label, note)
                # The upload was closed with the lost POST: open the item afresh.
                prep = attrs.evolve(prep, upload=await asyncio.to_thread(prepare_upload, item))

    async def _send_once(self, prep: _Prepared, state: _ItemState) -> str:
        """POST the item, recording each step in the journal; its new scan id."""
        async with self._gate, self._pacing.slot():
            if self._stop_submitting is not None:
                raise self._stop_submitting
            # New POSTs wait until every window still to be settled this run has closed.
            if (hold := self._hold_until - time.monotonic()) > 0:
                await asyncio.sleep(hold)
            journal, recovery = self._journal, self._recovery
            token: int | None = None

            async def before_send() -> None:
                nonlocal token
                if token is None:
                    token = await self._pacing.before_send()
                if journal is not None and recovery is not None:
                    sent_at, until = recovery.send_times()
                    await journal.sending(prep.key, prep.label, sent_at, until)
                state.on_the_wire = True

            try:
                started = await self._services.start_scan(
                    self._request, prep.upload, before_send=before_send
                )
            except ImagetwinError as exc:
                if state.on_the_wire and nothing_started(exc):
                    await self._record.forget(prep.key)
                # Otherwise the journal keeps "sending", and the next run settles it.
                elif token is not None:
                    self._pacing.answered(token, lost=True)
                state.on_the_wire = False
                raise
            finally:
                if token is not None:
                    self._pacing.answered(token)
            # (Cancelled mid-upload, on_the_wire stays set: the time-out says "may have started".)
            state.on_the_wire = False
        # Recorded, but not at the price of the scan id: a failed write leaves "sending",
        # which the next run settles through scan-overview.
        answered_at = recovery.answer_time() if recovery is not None else None
        await self._record.started(prep.key, started.scan_id, answered_at)
        return started.scan_id

    async def _recover(self, journal: Journal) -> asyncio.Task[None]:
        """Read the journal, date the service's clock, count what the runs before spent of
        the rate budget and settle their in-doubt items; returns the task that keeps the
        spent budget recorded."""
        services = self._services
        recovery = self._recovery = Recovery(
            journal,
            services.service_clock,
            self._read_overview,
            request_timeout=services.request_deadline,
            settle_delay=self._options.settle_delay,
        )
        # Read first: another run's in-doubt items are dated from when this run first saw
        # them (their run dead by then), before the calibrating overview read.
        self._entries = await journal.entries()
        recovery.note_seen(self._entries)
        await recovery.calibrate()
        loop = asyncio.get_running_loop()
        await recovery.seed(self._entries, services.limiters, loop.time)
        keeper = loop.create_task(recovery.keep_rates(services.answer_times, services.limiters))
        try:
            if self._options.ambiguous == "settle":
                self._decisions = await recovery.settle(self._entries)
                self._hold_until = recovery.hold_until(self._decisions)
                self._entries = await journal.entries()
                recovery.note_seen(self._entries)
        except BaseException:
            keeper.cancel()  # the caller's clean-up never saw it: end it here
            await asyncio.gather(keeper, return_exceptions=True)
            raise
        return keeper

    async def _read_overview(self, start: dt.date, end: dt.date) -> ScanOverview:
        def midnight(day: dt.date) -> dt.datetime:
            return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)

        return await self._services.overview(midnight(start), midnight(end))

    def _note(self, decision: Decision) -> str:
        return settled_note(decision, self._recovery.waited if self._recovery else 0.0)

    def _spacing(self) -> float:
        """Seconds between POSTs awaiting an answer, for scan-overview to tell them apart:
        its dates are whole seconds, and our reading of the service's clock is this fuzzy."""
        if self._recovery is None:
            return 0.0
        clock = self._services.service_clock.offset
        zone = self._recovery.zone.offset if self._recovery.zone.calibrated else None
        fuzz = (clock.width() if clock is not None else 1.0) + (zone.width() if zone else 1.0)
        return 1.0 + fuzz + 0.1

    async def _settle_late(self, key: str) -> Decision:
        """Settle ``key`` once nothing else of the batch is in progress (its scans are then
        known, none is on its way): see ``_recovery``."""
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._late[key] = future
        self._active -= 1
        try:
            self._maybe_settle_late()
            return await future
        finally:
            self._active += 1
            self._late.pop(key, None)

    def _maybe_settle_late(self) -> None:
        if self._active > 0 or all(f.done() for f in self._late.values()):
            return
        if self._late_task is not None and not self._late_task.done():
            return
        self._late_task = asyncio.get_running_loop().create_task(self._run_late_settle())

    async def _run_late_settle(self) -> None:
        waiting = {key: future for key, future in self._late.items() if not future.done()}
        assert self._journal is not None
        assert self._recovery is not None
        try:
            # Every item in doubt takes part (an earlier one's scan may lie in a window of
            # this run's): a scan is adopted only if no other in-doubt item could own it.
            entries = await self._journal.entries()
            self._recovery.note_seen(entries)
            decisions = await self._recovery.settle(entries)
        except Exception as exc:  # a failing journal or overview: report, never guess
            logger.warning("could not settle in-doubt items: %s", exc)
            decisions = {}
        for key, future in waiting.items():
            if not future.done():
                future.set_result(
                    decisions.get(key)
                    or Decision(Settlement.REPORT, "it could not be settled in this run")
                )
        # An item whose answer was lost while this ran waits for the next round.
        asyncio.get_running_loop().call_soon(self._maybe_settle_late)

    # ---- bookkeeping ------------------------------------------------------------------

    def _finish(
        self,
        index: int,
        outcome: Outcome,
        done: asyncio.Queue[tuple[int, Outcome]],
        *,
        ran: bool,
    ) -> None:
        self._active -= 1
        self._maybe_settle_late()
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

    def _started(self, item: BatchItem, scan_id: str) -> None:
        if self._options.on_started is None:
            return
        try:
            self._options.on_started(item, scan_id)
        except Exception:  # a broken listener must not break the batch
            logger.exception("the batch's on_started callback failed")

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

    async def started(self, key: str, scan_id: str, answered_at: float | None = None) -> None:
        if self._journal is not None and key:
            journal = self._journal
            await _logged("started", lambda: journal.started(key, scan_id, answered_at=answered_at))

    async def finished(self, key: str, result: ScanResult) -> None:
        if self._journal is not None and key:
            journal = self._journal
            await _logged("finished", lambda: journal.finished(key, result))

    async def failed(self, key: str, error: str) -> None:
        if self._journal is not None and key:
            journal = self._journal
            await _logged("failed", lambda: journal.failed(key, error))

    async def forget(self, key: str) -> None:
        if self._journal is not None and key:
            journal = self._journal
            await _logged("forget", lambda: journal.forget(key))


async def _logged(step: str, write: Callable[[], Awaitable[None]]) -> None:
    try:
        # Called in here: a store whose method does not even take the call fails here too.
        await write()
    except Exception:  # any store's failure, not only ours (JournalError)
        logger.exception("the journal could not record %s for an item", step)


def _known_outcome(
    item: BatchItem, entry: JournalEntry | None, ambiguous: AmbiguousPolicy
) -> Outcome | None:
    """The outcome the journal already holds for this item, if any (no request needed)."""
    if entry is None:
        return None
    if entry.state == "done" and entry.result is not None:
        return ScanSuccess(item, entry.scan_id, result=entry.result, note="from the journal")
    if entry.state == "failed":
        said = entry.error or "ScanFailed: the scan failed (recorded in the journal)"
        kind, _, message = said.partition(": ")
        error: ScanFailed | ScanNotFound = (
            ScanNotFound(message, status=404, endpoint="GET /result/{scanId}")
            if kind == "ScanNotFound"
            else ScanFailed(message or said, status=500, endpoint="GET /result/{scanId}")
        )
        return ScanFailure(item, entry.scan_id, error=error, note="from the journal")
    if entry.state == "sending" and ambiguous != "resubmit":
        return ScanFailure(item, None, error=_ambiguous_error(entry))
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


def _ambiguous_error(
    entry: JournalEntry | None, decision: Decision | None = None, *, label: str = ""
) -> AmbiguousSubmission:
    label = entry.label if entry is not None else label
    window = None
    if decision is not None and decision.window is not None:
        window = (
            dt.datetime.fromtimestamp(decision.window.lo, dt.UTC),
            dt.datetime.fromtimestamp(decision.window.hi, dt.UTC),
        )
    if window is not None:
        when = f"sent between {window[0]:%Y-%m-%d %H:%M:%S} and {window[1]:%H:%M:%S} UTC"
    elif entry is not None:
        when = "sent at " + dt.datetime.fromtimestamp(entry.sent_at, dt.UTC).isoformat(
            timespec="seconds"
        )
    else:
        when = "sent"
    candidates = decision.candidates if decision is not None else ()
    why = f" ({decision.reason})" if decision is not None else ""
    which = (
        f"It may have started one of these scans: {', '.join(candidates)}."
        if candidates
        else "scan-overview lists no scan it can have started, but cannot prove it yet."
    )
    return AmbiguousSubmission(
        f"{label}: {when} (service time) with no answer, and scan-overview could not tell "
        f"whether it started a scan{why}. {which} Settle it with `imagetwin journal settle`, "
        "or re-run with ambiguous='resubmit' to send it again (it may be billed twice).",
        endpoint="POST /scan",
        candidates=candidates,
        window=window,
    )
