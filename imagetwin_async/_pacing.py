"""Few scan POSTs in doubt at once: bound those awaiting an answer, and space them.

A POST whose answer is lost (a crash, a dropped connection) leaves its item in doubt until
scan-overview settles it. ``UnansweredScans`` keeps at most ``limit`` POSTs on their way at
once, so a crash leaves at most that many items in doubt; and, when ``spacing`` is set, sends
a POST only once every POST still unanswered went out at least ``spacing`` seconds before (or
has been answered), so scan-overview's whole-second dates tell their scans apart. POSTs
answered quickly (the usual case) are never held back by the spacing.

    >>> pacing = UnansweredScans(limit=4, spacing=lambda: 1.5)
    >>> async with pacing.slot():          # before the rate limiter: a place on the wire
    ...     token = await pacing.before_send()   # the slot is held: wait out the spacing
    ...     try: await send()
    ...     finally: pacing.answered(token)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable

__all__ = ["UnansweredScans"]


class UnansweredScans:
    """At most ``limit`` scan POSTs unanswered at once, ``spacing()`` s apart (see module)."""

    def __init__(
        self,
        limit: int,
        spacing: Callable[[], float] = lambda: 0.0,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1:
            raise ValueError(f"the unanswered scans bound must be >= 1, got {limit!r}")
        self._places = asyncio.Semaphore(limit)
        self._spacing = spacing
        self._monotonic = monotonic
        self._out: dict[int, float] = {}  # token -> when it went out (monotonic)
        self._last_lost = -float("inf")  # when the latest POST whose answer was lost went out
        self._tokens = itertools.count()
        self._changed = asyncio.Event()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._places:
            yield

    async def before_send(self) -> int:
        """Wait until no unanswered POST went out less than ``spacing`` ago; a token for
        ``answered``."""
        while True:
            spacing = self._spacing()
            latest = max(self._out.values(), default=self._last_lost)
            wait = max(latest, self._last_lost) + spacing - self._monotonic()
            if wait <= 0:
                token = next(self._tokens)
                self._out[token] = self._monotonic()
                return token
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), wait)

    def answered(self, token: int, *, lost: bool = False) -> None:
        """The POST has its answer (or proof that it started nothing): it no longer holds
        others back. ``lost``: its answer will never come (it stays in doubt), so the next
        POST still keeps its distance from it."""
        sent = self._out.pop(token, None)
        if sent is None:
            return
        if lost:
            self._last_lost = max(self._last_lost, sent)
        self._changed.set()

    @property
    def unanswered(self) -> int:
        return len(self._out)
