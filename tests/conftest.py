"""Shared fixtures: sample files, a mocked API (aioresponses), a client pointed at it."""

from __future__ import annotations

import asyncio
import signal
import uuid
import warnings
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from imagetwin_async import ImagetwinClient, RateLimit

from ._files import png_bytes, write_pdf
from ._mock import mocked
from ._services import require_redis

API = "https://api.imagetwin.test/v1"
KEY = "sk-test-0123456789abcdef"

# A runner may start the suite with SIGINT ignored (a background job of a shell without job
# control is); every child would inherit that, Python would install no KeyboardInterrupt
# handler, and the tests that Ctrl-C a child would hang. A *handled* signal is reset to the
# default in a child at exec, so handling it here gives the children a normal Ctrl-C.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, Any, Any]:
    """Close the event loop looptime makes around a sync test on Python 3.12 and 3.13.

    looptime asks the policy for the current loop around every test; with none set (a sync
    test), ``get_event_loop()`` there creates one that nobody closes, and its sockets later
    surface as a ResourceWarning in an unrelated test (an error: warnings are errors here).
    """
    result = yield
    # pytest-asyncio marks the tests it runs (auto mode); their loop is its business.
    if pyfuncitem.get_closest_marker("asyncio") is None:
        policy = asyncio.get_event_loop_policy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                loop = policy.get_event_loop()
            except RuntimeError:
                loop = None
        if loop is not None and not loop.is_running() and not loop.is_closed():
            loop.close()
            policy.set_event_loop(None)
    return result


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis that answers (``IMAGETWIN_REDIS_URL``): skipped without one, failed in CI."""
    return require_redis()


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A Redis key prefix of this test's own; whatever the test left under it is deleted."""
    name = f"imagetwin-test-{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    stale = list(client.scan_iter(match=f"{name}:*"))
    if stale:
        client.delete(*stale)
    client.close()


@pytest.fixture
def pdf(tmp_path: Path) -> Path:
    return write_pdf(tmp_path / "paper.pdf", pages=3)


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    paths = []
    for i, name in enumerate(["fig1.png", "fig2.png", "fig3.png"]):
        path = tmp_path / name
        path.write_bytes(png_bytes(i))
        paths.append(path)
    return paths


@pytest.fixture
def api() -> Iterator[mocked]:
    with mocked() as m:
        yield m


@pytest.fixture
async def client() -> AsyncIterator[ImagetwinClient]:
    async with ImagetwinClient(
        KEY,
        base_url=API,
        # Fast timings: nothing in these tests should wait for real.
        scan_limit=RateLimit(20, per=60.0),
        result_limit=RateLimit(60, per=60.0),
        poll_interval=0.01,
        max_poll_interval=0.05,
        backoff_base=0.001,
        backoff_cap=0.01,
        max_retries=3,
    ) as c:
        yield c
