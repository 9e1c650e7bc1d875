"""Client options a deployment relies on: time-outs with the caller's session, per-call
time-outs, IMAGETWIN_BASE_URL, and the User-Agent that names the SDK.

The adversary is a stalled server (a hung gateway): it accepts the connection and never answers.
"""

from __future__ import annotations

import asyncio
import platform
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from imagetwin_async import (
    ImagetwinClient,
    InvalidArgument,
    LimitState,
    RateLimit,
    ScanPending,
    TransportError,
)
from imagetwin_async._limits import Slot

KEY = "sk-options-test-1234"
SCAN_ID = "a" * 64


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[web.Request]]]:
    """An API that answers 202 at once, except for scan ids starting ffff: those hang a minute."""
    seen: list[web.Request] = []

    async def result(request: web.Request) -> web.Response:
        seen.append(request)
        if request.match_info["scan_id"].startswith("ffff"):
            await asyncio.sleep(60)
        return web.json_response({"status": "running"}, status=202)

    async def report(request: web.Request) -> web.StreamResponse:
        # A report host that sends its headers and a first chunk, then stalls.
        response = web.StreamResponse(headers={"Content-Type": "application/pdf"})
        await response.prepare(request)
        await response.write(b"%PDF-1.7\n")
        await asyncio.sleep(60)
        return response

    app = web.Application()
    app.router.add_get("/v1/result/{scan_id}", result)
    app.router.add_get("/reports/{name}", report)
    async with TestServer(app, host="127.0.0.1") as srv:
        yield str(srv.make_url("/v1")), seen


async def timed_read(client: ImagetwinClient, scan_id: str, **kwargs: float) -> float:
    started = time.monotonic()
    with pytest.raises(TransportError):
        await client.get_result(scan_id, **kwargs)
    return time.monotonic() - started


async def test_timeout_applies_even_on_the_callers_session(
    server: tuple[str, list[web.Request]],
) -> None:
    url, _ = server
    async with (
        aiohttp.ClientSession() as session,  # its own default time-out is 5 minutes
        ImagetwinClient(KEY, base_url=url, session=session, timeout=0.3, max_retries=0) as client,
    ):
        assert await timed_read(client, "ffff" + "0" * 60) < 3.0
        assert not session.closed


async def test_a_per_call_timeout_overrides_the_clients(
    server: tuple[str, list[web.Request]],
) -> None:
    url, _ = server
    async with ImagetwinClient(KEY, base_url=url, timeout=120, max_retries=0) as client:
        assert await timed_read(client, "ffff" + "1" * 60, timeout=0.3) < 3.0
        # ... and only that call's: the next one, without it, is answered normally.
        assert isinstance(await client.get_result(SCAN_ID), ScanPending)


async def test_a_report_download_takes_a_per_call_timeout(
    server: tuple[str, list[web.Request]], tmp_path: Path
) -> None:
    """A report host that stalls mid-file: the call's own time-out ends it, nothing is left."""
    url, _ = server
    report_url = url.removesuffix("/v1") + "/reports/x.pdf"
    async with ImagetwinClient(KEY, base_url=url, timeout=120, max_retries=0) as client:
        started = time.monotonic()
        with pytest.raises(TransportError):
            await client.download_report(report_url, tmp_path / "r.pdf", timeout=0.3)
        assert time.monotonic() - started < 3.0
        with pytest.raises(InvalidArgument):
            await client.download_report(report_url, tmp_path / "r.pdf", timeout=-1)
    assert list(tmp_path.iterdir()) == []


async def test_a_per_call_timeout_must_be_positive() -> None:
    async with ImagetwinClient(KEY, base_url="http://127.0.0.1:9/v1") as client:
        with pytest.raises(InvalidArgument):
            await client.get_result(SCAN_ID, timeout=0)


async def test_base_url_comes_from_the_environment(
    server: tuple[str, list[web.Request]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user who exported IMAGETWIN_BASE_URL (an emulator, a proxy) must not reach the real API."""
    url, seen = server
    monkeypatch.setenv("IMAGETWIN_BASE_URL", url)
    async with ImagetwinClient(KEY) as client:
        assert client.base_url == url
        assert isinstance(await client.get_result(SCAN_ID), ScanPending)
    assert len(seen) == 1
    # An explicit argument still wins.
    assert ImagetwinClient(KEY, base_url="https://proxy.example/v1").base_url.startswith(
        "https://proxy.example"
    )


async def test_every_request_names_the_sdk_python_and_aiohttp(
    server: tuple[str, list[web.Request]],
) -> None:
    url, seen = server
    async with ImagetwinClient(KEY, base_url=url) as client:
        await client.get_result(SCAN_ID)
    agent = seen[0].headers["User-Agent"]
    assert re.fullmatch(r"imagetwin-async/\S+ python/\S+ aiohttp/\S+", agent), agent
    assert f"python/{platform.python_version()}" in agent
    assert f"aiohttp/{aiohttp.__version__}" in agent
    assert KEY not in agent


def test_the_timings_name_the_limits_the_limiters_passed_in_enforce() -> None:
    """A deployment that passes its own limiters (shared through Redis, say) reads
    ``client.timings`` to see what it runs at: never the vendor default it replaced."""
    mine = RateLimit(5, per=10.0).build(name="POST /scan")
    client = ImagetwinClient(KEY, base_url="http://127.0.0.1:9/v1", scan_limit=mine)
    assert client.timings.scan_limit == RateLimit(5, per=10.0)
    assert client.timings.result_limit == RateLimit(60, per=60.0)  # the default, in force

    class Custom:
        """A limiter of the user's own that says only what its snapshot says."""

        async def acquire(self, *, block: bool = True) -> Slot:
            raise NotImplementedError

        def on_rate_limited(self, retry_after: float | None) -> float:
            return 0.0

        def on_success(self) -> None:
            pass

        def snapshot(self) -> LimitState:
            return LimitState(
                requests=7, per=30.0, available=7, in_flight=0, next_slot_in=0.0, paused_for=0.0
            )

    custom = ImagetwinClient(KEY, base_url="http://127.0.0.1:9/v1", result_limit=Custom())
    assert custom.timings.result_limit == RateLimit(7, per=30.0)
    # A view keeps them.
    assert custom.with_options(timeout=5).timings.result_limit == RateLimit(7, per=30.0)
