"""The asynchronous work behind ``scan`` and ``wait``: batches, reports and partial results.

Each runner fills a ``RunState`` as outcomes arrive, so that after Ctrl-C (the task is
cancelled mid-batch) the command can still say what was submitted and show what came back.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import attrs

from .._batch import BatchKwargs, ScanKwargs
from .._client import ImagetwinClient
from .._errors import AuthenticationError, ImagetwinError, ScanFailed, ScanNotFound
from .._models import ScanPending, ScanResult
from ._discover import Job
from ._output import Row
from ._progress import BatchDisplay

__all__ = ["RunState", "ScanOptions", "fetch_result", "run_scan", "run_submit", "run_wait"]

_SUBMIT_CONCURRENCY = 20  # uploads open at once in --no-wait; the limiter sets the pace


@attrs.frozen
class ScanOptions:
    """The ``scan`` command's options: the batch's, as ``iter_outcomes`` takes them (so the
    command cannot drift from the client's keywords), and where reports go."""

    batch: BatchKwargs = attrs.field(factory=BatchKwargs)
    report_dir: Path | None = None

    def scan_kwargs(self) -> ScanKwargs:
        """The options ``ImagetwinClient.scan`` takes, for ``--no-wait``."""
        keys = ScanKwargs.__optional_keys__
        return cast(ScanKwargs, {k: v for k, v in self.batch.items() if k in keys})


@attrs.define
class RunState:
    """What a run has done so far; read by the command after the run, or after Ctrl-C."""

    labels: Sequence[str]
    rows: dict[int, Row] = attrs.field(factory=dict)
    display: BatchDisplay | None = None
    # Scans the server accepted whose result is not in yet: billed, so never left out.
    started: dict[int, Row] = attrs.field(factory=dict)

    def finished_rows(self) -> list[Row]:
        """Rows known so far, in input order."""
        return [self.rows[i] for i in sorted(self.rows)]

    def rows_so_far(self) -> list[Row]:
        """Finished rows and, for every scan submitted but not finished, a ``running`` row."""
        merged = {**self.started, **self.rows}
        return [merged[i] for i in sorted(merged)]


async def run_scan(
    client: ImagetwinClient, jobs: Sequence[Job], options: ScanOptions, state: RunState
) -> list[Row]:
    """Scan every job and wait for every result (and report); one row per job, in order."""
    sources = [job.source for job in jobs]
    # iter_outcomes hands back each item object as given: find its job by identity.
    index_of = {id(source): i for i, source in enumerate(sources)}
    progress = state.display.update if state.display is not None else None

    def started(item: object, scan_id: str) -> None:
        index = index_of[id(item)]
        job = jobs[index]
        state.started[index] = Row(job.label, job.files, scan_id, running=True)

    batch: BatchKwargs = {**options.batch, "progress": progress, "on_started": started}
    async for outcome in client.iter_outcomes(sources, **batch):
        index = index_of[id(outcome.source)]
        job = jobs[index]
        row = Row(job.label, job.files, outcome.scan_id, outcome.result, outcome.error)
        if outcome.result is not None and options.report_dir is not None:
            row = await _download(client, row, outcome.result, options.report_dir, job)
        state.rows[index] = row
    return state.finished_rows()


async def _download(
    client: ImagetwinClient, row: Row, result: ScanResult, directory: Path, job: Job
) -> Row:
    stem = Path(job.files[0]).stem if len(job.files) == 1 else _slug(job.label)
    target = directory / f"{stem}-{result.scan_id[:12]}.pdf"
    try:
        path = await client.download_report(result, target)
    except ImagetwinError as exc:
        return attrs.evolve(row, error=exc)
    return attrs.evolve(row, report_file=str(path))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "images"


async def run_submit(
    client: ImagetwinClient, jobs: Sequence[Job], options: ScanOptions, state: RunState
) -> list[Row]:
    """``--no-wait``: start every scan and return its id, without waiting for results."""
    display = state.display
    gate = asyncio.Semaphore(_SUBMIT_CONCURRENCY)
    refused: list[AuthenticationError] = []

    def count(**change: int) -> None:
        if display is not None:
            p = display.progress
            display.update(attrs.evolve(p, **{k: getattr(p, k) + v for k, v in change.items()}))

    async def submit(index: int, job: Job) -> None:
        row = Row(job.label, job.files)
        async with gate:
            try:
                if refused:  # every later scan would be refused the same way
                    raise refused[0]
                started = await client.scan(job.source, **options.scan_kwargs())
            except AuthenticationError as exc:
                refused.append(exc)
                state.rows[index] = attrs.evolve(row, error=exc)
                count(failed=1)
            except ImagetwinError as exc:
                state.rows[index] = attrs.evolve(row, error=exc)
                count(failed=1)
            else:
                state.rows[index] = attrs.evolve(row, scan_id=started.scan_id, running=True)
                # Not waited for: these count as done once accepted.
                count(submitted=1, finished=1)

    await asyncio.gather(*(submit(i, job) for i, job in enumerate(jobs)))
    return state.finished_rows()


async def fetch_result(client: ImagetwinClient, scan_id: str) -> Row:
    """One read of ``scan_id``: a result, "running", or a failed / unknown scan."""
    try:
        answer = await client.get_result(scan_id)
    except (ScanFailed, ScanNotFound) as exc:
        return Row(scan_id, scan_id=scan_id, error=exc)
    if isinstance(answer, ScanPending):
        return Row(scan_id, scan_id=scan_id, running=True)
    return Row(scan_id, scan_id=scan_id, result=answer)


async def run_wait(
    client: ImagetwinClient, scan_ids: Sequence[str], timeout: float | None, state: RunState
) -> list[Row]:
    """Wait for scans started earlier; one row per id, in order."""
    display = state.display
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout

    def count(**change: int) -> None:
        if display is not None:
            p = display.progress
            display.update(attrs.evolve(p, **{k: getattr(p, k) + v for k, v in change.items()}))

    async def one(index: int, scan_id: str) -> None:
        # The scheduler reads a scan it did not see start at once, then polls it. Any error is
        # this id's row: one failed read never costs the other ids their results.
        left = None if deadline is None else max(deadline - loop.time(), 0.0)
        try:
            result = await client.wait_for_result(scan_id, timeout=left)
        except ImagetwinError as exc:
            row = Row(scan_id, scan_id=scan_id, error=exc)
        else:
            row = Row(scan_id, scan_id=scan_id, result=result)
        state.rows[index] = row
        count(running=-1, **({"failed": 1} if row.error else {"finished": 1}))

    count(submitted=len(scan_ids), running=len(scan_ids))
    await asyncio.gather(*(one(i, scan_id) for i, scan_id in enumerate(scan_ids)))
    return state.finished_rows()
