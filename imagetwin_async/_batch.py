"""``submit_and_wait`` and ``iter_outcomes``: whole batches at the full rate budget.

Each item is checked first (off the event loop: counting PDF pages reads the file), then
submitted through the client's scan limiter, then waited for through the shared poll
scheduler. Submissions are bounded (``submit_concurrency``) so a batch of ten thousand items
holds at most that many uploads open, while the limiter, not this module, sets the pace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Final

import attrs

from ._errors import (
    AuthenticationError,
    ImagetwinError,
    PollTimeout,
    ScanCancelled,
)
from ._models import ScanOutcome, ScanResult
from ._protocol import Request, build_scan_request
from ._uploads import Uploadable, prepare_upload

if TYPE_CHECKING:
    from ._client import ImagetwinClient

__all__ = ["BatchItem", "BatchOptions", "BatchProgress", "BatchRunner"]

logger = logging.getLogger("imagetwin_async.batch")

BatchItem = Uploadable
_DEFAULT_SUBMIT_CONCURRENCY: Final = 20


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


@attrs.frozen
class BatchOptions:
    """The scan options and limits of one batch (validated once, before anything is sent)."""

    min_score: float | None = None
    callback_url: str | None = None
    exclude_identical_paper: bool | None = None
    sandbox: bool = False
    timeout: float | None = None
    progress: Callable[[BatchProgress], None] | None = None
    submit_concurrency: int = _DEFAULT_SUBMIT_CONCURRENCY

    def request(self) -> Request:
        return build_scan_request(
            min_score=self.min_score,
            callback_url=self.callback_url,
            exclude_identical_paper=self.exclude_identical_paper,
            sandbox=self.sandbox,
        )


class BatchRunner:
    """Runs one batch on a client. Made by ``ImagetwinClient.submit_and_wait`` /
    ``iter_outcomes``; several may run at once on one client, sharing its limiters and
    scheduler."""

    def __init__(
        self, client: ImagetwinClient, items: Sequence[BatchItem], options: BatchOptions
    ) -> None:
        self._client = client
        self._items = list(items)
        self._options = options
        self._request = options.request()  # bad options raise here, before anything is sent
        self._progress = BatchProgress(total=len(self._items))
        self._stop_submitting: ImagetwinError | None = None

    async def run(self) -> list[ScanOutcome]:
        outcomes: list[ScanOutcome | None] = [None] * len(self._items)
        async for index, outcome in self._run():
            outcomes[index] = outcome
        assert all(o is not None for o in outcomes)
        return outcomes  # type: ignore[return-value]

    async def iterate(self) -> AsyncIterator[ScanOutcome]:
        async for _, outcome in self._run():
            yield outcome

    async def _run(self) -> AsyncIterator[tuple[int, ScanOutcome]]:
        loop = asyncio.get_running_loop()
        deadline = None if self._options.timeout is None else loop.time() + self._options.timeout
        done: asyncio.Queue[tuple[int, ScanOutcome]] = asyncio.Queue()
        gate = asyncio.Semaphore(max(1, self._options.submit_concurrency))
        self._report()
        tasks = [
            loop.create_task(self._one(index, item, gate, deadline, done))
            for index, item in enumerate(self._items)
        ]
        try:
            for _ in tasks:
                yield await done.get()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _one(
        self,
        index: int,
        item: BatchItem,
        gate: asyncio.Semaphore,
        deadline: float | None,
        done: asyncio.Queue[tuple[int, ScanOutcome]],
    ) -> None:
        scan_id: str | None = None
        try:
            async with asyncio.timeout_at(deadline):
                upload = await asyncio.to_thread(prepare_upload, item)
                async with gate:
                    if self._stop_submitting is not None:
                        raise self._stop_submitting
                    started = await self._client._start_scan(self._request, upload)
                scan_id = started.scan_id
                self._count(submitted=1, running=1)
                result = await self._client.scheduler.wait(scan_id)
        except TimeoutError:
            error: ImagetwinError = (
                PollTimeout("the batch timed out before this scan finished", scan_id=scan_id)
                if scan_id is not None
                else ScanCancelled("the batch timed out before this item was submitted")
            )
            self._finish(index, item, scan_id, error, done)
        except AuthenticationError as exc:
            # Every later item would be refused the same way: stop submitting, fail them fast.
            self._stop_submitting = exc
            self._finish(index, item, scan_id, exc, done)
        except ImagetwinError as exc:
            self._finish(index, item, scan_id, exc, done)
        else:
            self._finish(index, item, scan_id, result, done)

    def _finish(
        self,
        index: int,
        item: BatchItem,
        scan_id: str | None,
        outcome: ScanResult | ImagetwinError,
        done: asyncio.Queue[tuple[int, ScanOutcome]],
    ) -> None:
        running = -1 if scan_id is not None else 0
        if isinstance(outcome, ScanResult):
            self._count(finished=1, running=running)
            done.put_nowait((index, ScanOutcome(item, scan_id, result=outcome)))
        else:
            logger.debug("batch item %d failed: %s", index, outcome)
            self._count(failed=1, running=running)
            done.put_nowait((index, ScanOutcome(item, scan_id, error=outcome)))

    def _count(
        self, *, submitted: int = 0, running: int = 0, finished: int = 0, failed: int = 0
    ) -> None:
        p = self._progress
        self._progress = attrs.evolve(
            p,
            submitted=p.submitted + submitted,
            running=p.running + running,
            finished=p.finished + finished,
            failed=p.failed + failed,
        )
        self._report()

    def _report(self) -> None:
        if self._options.progress is not None:
            self._options.progress(self._progress)
