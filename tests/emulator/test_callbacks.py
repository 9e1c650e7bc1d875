"""Callbacks: sent when a scan ends, to a real aiohttp server; failures and drops recorded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from imagetwin_async import _spec
from imagetwin_async.emulator import Emulator, Outcome

from .._files import png_bytes
from .conftest import Scanner, form


class Receiver:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.arrived = asyncio.Event()
        self.status = 200

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        self.headers.append(dict(request.headers))
        self.arrived.set()
        return web.Response(status=self.status)

    async def wait(self, count: int = 1) -> None:
        async with asyncio.timeout(5):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield receiver, str(server.make_url("/hook"))
    finally:
        await server.close()


@pytest.fixture
async def fast(imagetwin_emulator_factory: Callable[..., Awaitable[Emulator]]) -> Emulator:
    return await imagetwin_emulator_factory(speed=100, processing_time=5.0)  # 0.05 s


async def post(emu: Emulator, files: list[tuple[str, bytes]], **fields: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.post(f"{emu.url}/scan", data=form(files, **fields)) as r,
    ):
        assert r.status == 200
        return dict(await r.json())


async def test_finished_callback(fast: Emulator, receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    body = await post(fast, [("a.png", png_bytes())], callbackUrl=url)
    assert hook.received == []  # not before the scan ends
    await hook.wait()
    assert hook.received == [{"scanId": body["scanId"], "status": "finished"}]
    assert "Authorization" not in hook.headers[0]
    await asyncio.sleep(0.01)
    [record] = fast.callbacks
    assert (record.scan_id, record.delivered, record.http_status) == (body["scanId"], True, 200)
    assert fast.counters.callbacks_delivered == 1


async def test_failed_callback(fast: Emulator, receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    fast.script(Outcome.failed())
    body = await post(fast, [("a.png", png_bytes())], callbackUrl=url)
    await hook.wait()
    assert hook.received == [{"scanId": body["scanId"], "status": "failed"}]


async def test_receiver_errors_are_recorded(fast: Emulator, receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    hook.status = 500
    await post(fast, [("a.png", png_bytes())], callbackUrl=url)
    await hook.wait()
    await asyncio.sleep(0.02)
    [record] = fast.callbacks
    assert (record.delivered, record.http_status) == (False, 500)
    assert fast.counters.callbacks_failed == 1


async def test_unreachable_receiver_is_recorded(fast: Emulator) -> None:
    await post(fast, [("a.png", png_bytes())], callbackUrl="http://127.0.0.1:9/hook")
    async with asyncio.timeout(5):
        while not fast.callbacks:
            await asyncio.sleep(0.01)
    [record] = fast.callbacks
    assert not record.delivered
    assert record.http_status is None
    assert record.error


async def test_dropped_callbacks(fast: Emulator, receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    fast.drop_callbacks(1)
    first = await post(fast, [("a.png", png_bytes())], callbackUrl=url)
    await asyncio.sleep(0.1)
    second = await post(fast, [("b.png", png_bytes(1))], callbackUrl=url)
    await hook.wait()
    assert hook.received == [{"scanId": second["scanId"], "status": "finished"}]
    assert fast.callbacks[0].scan_id == first["scanId"]
    assert fast.callbacks[0].dropped
    assert fast.counters.callbacks_dropped == 1


async def test_never_finishing_scan_calls_back_when_finished_by_hand(
    fast: Emulator, receiver: tuple[Receiver, str]
) -> None:
    hook, url = receiver
    fast.script(Outcome.never())
    body = await post(fast, [("a.png", png_bytes())], callbackUrl=url)
    await asyncio.sleep(0.1)
    assert hook.received == []
    fast.finish_scan(body["scanId"], Outcome.failed())
    await hook.wait()
    assert hook.received == [{"scanId": body["scanId"], "status": "failed"}]


async def test_speed_change_reschedules_callbacks(
    imagetwin_emulator_factory: Callable[..., Awaitable[Emulator]], receiver: tuple[Receiver, str]
) -> None:
    hook, url = receiver
    emu = await imagetwin_emulator_factory(processing_time=600.0)  # ten minutes at speed 1
    await post(emu, [("a.png", png_bytes())], callbackUrl=url)
    emu.configure(speed=10_000)  # now 0.06 s
    await hook.wait()


async def test_sandbox_calls_back_finished(
    emu: Emulator, post_scan: Scanner, receiver: tuple[Receiver, str]
) -> None:
    hook, url = receiver
    await post_scan([("a.png", png_bytes())], endpoint="sandbox/scan", callbackUrl=url)
    await hook.wait()
    assert hook.received == [{"scanId": _spec.SANDBOX_FINISHED_ID, "status": "finished"}]
