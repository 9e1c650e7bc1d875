"""Run an Emulator on its own event loop in a background thread, for synchronous code."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Self, TypeVar

from ._emulator import ClientKwargs, Emulator

__all__ = ["ThreadedEmulator"]

T = TypeVar("T")


class ThreadedEmulator:
    """An Emulator serving from a daemon thread; the options are ``Emulator``'s.

        with ThreadedEmulator(speed=60) as emu:
            auth = {"Authorization": f"Bearer {emu.api_key}"}
            requests.post(f"{emu.url}/scan", headers=auth, files=...)
            emu.call(lambda e: e.inject_fault("503", endpoint="scan"))

    Reading ``emulator`` attributes from the calling thread is fine for assertions; change
    state through ``call`` so it happens on the emulator's loop.
    """

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._emulator: Emulator | None = None

    @property
    def emulator(self) -> Emulator:
        if self._emulator is None:
            raise RuntimeError("the emulator is not running")
        return self._emulator

    @property
    def url(self) -> str:
        return self.emulator.url

    @property
    def api_key(self) -> str:
        return self.emulator.api_key

    def client_kwargs(self) -> ClientKwargs:
        """``ImagetwinClient(**emu.client_kwargs())``: see ``Emulator.client_kwargs``."""
        return self.emulator.client_kwargs()

    def start(self) -> Self:
        started: Future[Emulator] = Future()
        loop = asyncio.new_event_loop()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                emulator = loop.run_until_complete(Emulator(**self._options).start())
            except BaseException as exc:
                started.set_exception(exc)
                loop.close()
                return
            started.set_result(emulator)
            loop.run_forever()
            loop.run_until_complete(emulator.stop())
            # Handlers still holding an answer back (a "delay" fault) would otherwise be
            # destroyed pending when the loop closes, with a warning on stderr.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=serve, name="imagetwin-emulator", daemon=True)
        self._thread.start()
        self._emulator = started.result()
        self._loop = loop
        return self

    def call(self, function: Callable[[Emulator], T]) -> T:
        """Run ``function(emulator)`` on the emulator's loop and return its result."""
        if self._loop is None:
            raise RuntimeError("the emulator is not running")
        emulator = self.emulator

        async def run() -> T:
            return function(emulator)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop = self._thread = self._emulator = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
