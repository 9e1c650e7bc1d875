"""Where the commands send their requests: the real API, a URL, or an in-process emulator.

``open_client(connection)`` yields a configured ``ImagetwinClient``. With ``emulator=True`` it
first starts an ``Emulator`` in the same event loop (sped up, with its own key), so a new user
can try every command with no key, and stops it afterwards. ``speed`` scales every client
timing (``ImagetwinClient(speed=...)``: rate windows, polls, back-off) to match an emulator
that runs faster than real time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypedDict

import attrs

from .._client import API_KEY_ENV, DEFAULT_BASE_URL, ImagetwinClient
from .._modelstore import FileModelStore, default_cache_path

__all__ = [
    "BASE_URL_ENV",
    "CACHE_ENV",
    "EMULATOR_SPEED",
    "Connection",
    "MissingKey",
    "open_client",
    "typical_scan_seconds",
]

BASE_URL_ENV = "IMAGETWIN_BASE_URL"
# Where the learned scan durations are kept between runs; set but empty: keep nothing.
CACHE_ENV = "IMAGETWIN_CACHE_DIR"
# The built-in emulator runs 60x real time: a scan of about a minute and a half lasts about
# 1.5 s, so the demo shows the progress display at work and still ends in a few seconds.
EMULATOR_SPEED = 60.0
_EMULATOR_MEDIAN_SCAN = 90.0  # emulated seconds
_EMULATOR_SPREAD = 0.35  # log-normal sigma: scans finish one by one, not all at once
# Before the client has seen scans finish, the time-to-go estimate assumes this (real API).
_TYPICAL_SCAN = 60.0


class _Timeouts(TypedDict, total=False):
    timeout: float


class MissingKey(Exception):
    """No API key was given and none is set in the environment (a usage error)."""


@attrs.frozen
class Connection:
    """The global options that say where to connect (``--api-key``, ``--base-url``, ...)."""

    api_key: str | None = None
    base_url: str = DEFAULT_BASE_URL
    speed: float = 1.0
    emulator: bool = False
    # Seconds for each request (``--request-timeout``); None: the client's default.
    request_timeout: float | None = None

    @property
    def target(self) -> str:
        """Where requests go, for messages."""
        return "the built-in emulator" if self.emulator else self.base_url


def typical_scan_seconds(connection: Connection) -> float:
    """How long a scan usually takes, in real seconds, before any has been seen to finish."""
    if connection.emulator:
        return _EMULATOR_MEDIAN_SCAN / EMULATOR_SPEED
    return _TYPICAL_SCAN / connection.speed


@contextlib.asynccontextmanager
async def open_client(connection: Connection) -> AsyncIterator[ImagetwinClient]:
    """A client for ``connection``; with ``emulator`` set, one talking to a fresh emulator."""
    # Every request's, the poll scheduler's reads included (a view would not reach those);
    # given only when asked, so the client's own timings decide otherwise.
    timeouts: _Timeouts = {}
    if connection.request_timeout is not None:
        timeouts["timeout"] = connection.request_timeout
    if not connection.emulator:
        key = connection.api_key or os.environ.get(API_KEY_ENV)
        if not key:
            raise MissingKey
        async with ImagetwinClient(
            key,
            base_url=connection.base_url,
            speed=connection.speed,
            model_store=_model_store(connection.base_url, connection.speed),
            **timeouts,
        ) as client:
            yield client
        return
    # Imported here: only --emulator needs the server side (and aiohttp.web).
    from ..emulator import Emulator, LogNormalTime  # noqa: PLC0415

    async with (
        Emulator(
            speed=EMULATOR_SPEED,
            processing_time=LogNormalTime(_EMULATOR_MEDIAN_SCAN, _EMULATOR_SPREAD),
        ) as emulator,
        ImagetwinClient(**emulator.client_kwargs(), **timeouts) as client,
    ):
        yield client


def _model_store(base_url: str, speed: float) -> FileModelStore | None:
    """The cache file of scan durations for this service (one per URL and speed: durations
    learned from one service say nothing of another), or None if ``IMAGETWIN_CACHE_DIR=''``."""
    root = os.environ.get(CACHE_ENV)
    if root == "":
        return None
    name = hashlib.sha256(f"{base_url} {speed:g}".encode()).hexdigest()[:16]
    directory = Path(root) if root else default_cache_path().parent
    return FileModelStore(directory / f"durations-{name}.json")
