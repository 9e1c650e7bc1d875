"""The live progress display of a batch, and its time-to-go estimate.

    with BatchDisplay(console, estimate=lambda p: ...) as display:
        await client.submit_and_wait(jobs, progress=display.update)

It draws on stderr (stdout stays free for ``--json`` / ``--csv``) and only when that is a
terminal, unless forced. Everything runs on the event loop: rich's own refresh thread is off,
and a small task redraws twice a second so the estimate counts down between changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from .._batch import BatchProgress
from .._limits import LimitState

__all__ = ["BatchDisplay", "estimate_seconds_left", "format_duration", "not_yet_submitted"]

_REDRAW_EVERY = 0.5  # seconds


def not_yet_submitted(progress: BatchProgress) -> int:
    """Items neither accepted by the server nor failed before it accepted them."""
    failed_after_submission = progress.submitted - progress.running - progress.finished
    failed_before = progress.failed - failed_after_submission
    return progress.total - progress.submitted - failed_before


def estimate_seconds_left(
    progress: BatchProgress,
    scan_limit: LimitState,
    *,
    typical_scan: float,
    since_last_submission: float,
) -> float:
    """Seconds until the batch is done, at the scan rate limit.

    The items still to submit go out ``requests`` per ``per`` seconds once the free slots are
    used (a 429 pause first); the last one then takes a typical scan. With everything
    submitted, what is left is the typical scan time less the age of the newest scan.
    """
    waiting = not_yet_submitted(progress)
    if waiting > 0:
        backlog = waiting - scan_limit.available
        span = scan_limit.paused_for
        if backlog > 0:
            windows = (backlog - 1) // scan_limit.requests
            span += (scan_limit.next_slot_in or 0.0) + windows * scan_limit.per
        return span + typical_scan
    if progress.running > 0:
        return max(typical_scan - since_last_submission, 0.0)
    return 0.0


def format_duration(seconds: float) -> str:
    """``45 s``, ``3 min 20 s``, ``2 h 05 min``: coarse, as an estimate should read."""
    seconds = math.ceil(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s" if minutes < 10 else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class BatchDisplay:
    """A rich progress bar with the batch's counters and the time to go.

    ``estimate(progress, since_last_submission)`` gives seconds left (None: unknown). A
    disabled display (``enabled=False``) only keeps the counts.
    """

    def __init__(
        self,
        console: Console,
        *,
        estimate: Callable[[BatchProgress, float], float | None],
        total: int,
        description: str = "Scanning",
        enabled: bool = True,
    ) -> None:
        self.progress = BatchProgress(total=total)
        self._estimate = estimate
        self._enabled = enabled
        self._last_submission = time.monotonic()
        self._bar = Progress(
            SpinnerColumn(finished_text="[green]✓"),
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=None),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TextColumn("[cyan]{task.fields[eta]}"),
            TimeElapsedColumn(),
            console=console,
            auto_refresh=False,  # redrawn from the loop, never from rich's thread
            transient=False,
            expand=True,
        )
        self._task: TaskID = self._bar.add_task(
            description, total=total, counts=self._counts(), eta=""
        )
        self._ticker: asyncio.Task[None] | None = None

    def update(self, progress: BatchProgress) -> None:
        """The ``progress`` callback of ``submit_and_wait`` / ``iter_outcomes``."""
        if progress.submitted > self.progress.submitted:
            self._last_submission = time.monotonic()
        self.progress = progress
        self._redraw()

    def _counts(self) -> str:
        p = self.progress
        failed = f"[red]failed {p.failed}[/]" if p.failed else "failed 0"
        return (
            f"submitted {p.submitted}  running {p.running}  [green]done {p.finished}[/]  {failed}"
        )

    def _eta(self) -> str:
        p = self.progress
        if p.done >= p.total:
            return ""
        seconds = self._estimate(p, time.monotonic() - self._last_submission)
        if seconds is None:
            return ""
        if seconds < 1:  # overdue by the estimate: the last results are due any moment
            return "finishing…"
        return f"~{format_duration(seconds)} left"

    def _redraw(self) -> None:
        if not self._enabled:
            return
        self._bar.update(
            self._task, completed=self.progress.done, counts=self._counts(), eta=self._eta()
        )
        self._bar.refresh()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(_REDRAW_EVERY)
            self._redraw()

    def __enter__(self) -> Self:
        if self._enabled:
            self._bar.start()
            self._redraw()
            with contextlib.suppress(RuntimeError):  # no running loop: no countdown
                self._ticker = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._enabled:
            self._redraw()
            self._bar.stop()
