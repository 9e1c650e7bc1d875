"""The callback receiver: parsing, tokens, size limits, duplicates, aiohttp wiring, and the
whole loop against the emulator (callbacks cut polling to one read per scan; a lost callback
is covered by polling; a callback that beats its waiter is remembered)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from fastapi import FastAPI, Request

from imagetwin_async import (
    CallbackNotice,
    ConfigurationError,
    ImagetwinClient,
    ScanResult,
)
from imagetwin_async._callbacks import (
    DEFAULT_MAX_BODY,
    CallbackReceiver,
    parse_callback,
    read_limited,
)
from imagetwin_async.emulator import Emulator, Endpoint, Outcome, Scan
from imagetwin_async.fastapi import (
    callback_router,
    get_callback_receiver,
    get_callback_url,
    get_imagetwin_client,
    imagetwin_lifespan,
    use_client,
)

from ._files import png_bytes, write_pdf

SCAN_ID = "d904c90756d6653f27ce9fc27847a5bf61e35b4cb288d0a301e879cbef3e4579"
PUBLIC = "https://my.service/imagetwin/callbacks"
TOKEN = "t" * 43
# Real time on a loaded CI machine: generous bounds, never slept through.
GENEROUS = 30.0


def body(scan_id: object = SCAN_ID, status: object = "finished", **extra: object) -> bytes:
    return json.dumps({"scanId": scan_id, "status": status, **extra}).encode()


class FakeClient:
    """Records hints; ``waiting`` says which scans someone waits for."""

    def __init__(self, *waiting: str) -> None:
        self.waiting = set(waiting)
        self.hints: list[str] = []

    def notify_finished(self, scan_id: str) -> bool:
        self.hints.append(scan_id)
        return scan_id in self.waiting


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---- parse_callback -----------------------------------------------------------------------


def test_parse_accepts_the_documented_bodies_and_unknown_keys() -> None:
    assert parse_callback(body()) == CallbackNotice(SCAN_ID, "finished")
    assert parse_callback(body(status="failed")) == CallbackNotice(SCAN_ID, "failed")
    assert parse_callback(
        body(scan_id="1625b21d-0492-44b5-83bb-76161ab116eb", extra=1)
    ).scan_id == ("1625b21d-0492-44b5-83bb-76161ab116eb")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'"finished"',
        b"null",
        b'{"status": "finished"}',
        body(scan_id=None),
        body(scan_id=42),
        body(scan_id=""),
        body(scan_id="../../admin"),
        body(scan_id="a" * 129),
        body(scan_id="abc def"),
        body(status="done"),
        body(status=None),
        body(status="FINISHED"),
        b"[" * 100_000,  # deep nesting: RecursionError inside json, refused like the rest
    ],
)
def test_parse_refuses_anything_else(raw: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies by what is wrong
        parse_callback(raw)


async def test_read_limited_stops_after_limit_plus_one() -> None:
    pulled = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(1000):
            pulled += 1
            yield b"x" * 1000

    data = await read_limited(chunks(), 4096)
    assert len(data) == 4097
    assert pulled == 5  # the rest of a huge body is never read


# ---- configuration --------------------------------------------------------------------------


def test_callback_url_is_public_url_plus_a_fresh_secret() -> None:
    first = CallbackReceiver(FakeClient(), PUBLIC + "/")
    second = CallbackReceiver(FakeClient(), PUBLIC)
    assert first.callback_url == f"{PUBLIC}/{first.token}"
    assert first.path == "/imagetwin/callbacks"
    assert len(first.token) >= 43
    assert first.token != second.token
    assert first.token not in repr(first)


def test_a_given_token_is_kept() -> None:
    assert CallbackReceiver(FakeClient(), PUBLIC, token=TOKEN).callback_url == f"{PUBLIC}/{TOKEN}"


@pytest.mark.parametrize(
    ("public_url", "options"),
    [
        ("my.service/callbacks", {}),
        ("ftp://my.service/callbacks", {}),
        ("https:///callbacks", {}),
        (PUBLIC + "?x=1", {}),
        (PUBLIC + "#frag", {}),
        (PUBLIC, {"token": "short"}),
        (PUBLIC, {"token": "with/slash" + "x" * 30}),
        (PUBLIC, {"token": "ä" * 30}),
        (PUBLIC, {"max_body": 10}),
    ],
)
def test_bad_configuration_is_refused(public_url: str, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        CallbackReceiver(FakeClient(), public_url, **options)


def test_duplicate_window_defaults_to_the_clients_fallback_poll_interval() -> None:
    client = ImagetwinClient("k", poll_interval=1.0, max_poll_interval=7.0)
    assert CallbackReceiver(client, PUBLIC).rehint_after == 7.0


# ---- the framework-free core ------------------------------------------------------------------


def test_check_refuses_a_wrong_token_and_a_declared_oversize() -> None:
    receiver = CallbackReceiver(FakeClient(), PUBLIC, token=TOKEN)
    assert receiver.check(TOKEN[:-1] + "u", 80) == 404
    assert receiver.check("", 80) == 404
    assert receiver.check("ü" * 43, 80) == 404  # non-ASCII: no TypeError from compare_digest
    assert receiver.check(TOKEN, DEFAULT_MAX_BODY + 1) == 413
    assert receiver.check(TOKEN, DEFAULT_MAX_BODY) is None
    assert receiver.check(TOKEN, None) is None  # chunked: receive() checks what was read
    assert receiver.stats.wrong_token == 3
    assert receiver.stats.too_large == 1


def test_receive_hints_the_scan_and_ignores_the_status() -> None:
    client = FakeClient(SCAN_ID)
    receiver = CallbackReceiver(client, PUBLIC)
    # "failed" or "finished", the client reads the result to find out: both are one hint.
    assert receiver.receive(body(status="failed")) == 204
    assert client.hints == [SCAN_ID]
    assert receiver.stats.accepted == 1


def test_receive_answers_unknown_scans_like_known_ones() -> None:
    client = FakeClient()
    receiver = CallbackReceiver(client, PUBLIC)
    # The same 204: the answer must not tell a prober which scan ids exist here.
    assert receiver.receive(body()) == 204
    assert receiver.stats.unknown_scan == 1
    assert receiver.stats.accepted == 0


def test_receive_refuses_bad_and_oversized_bodies_without_a_hint() -> None:
    client = FakeClient(SCAN_ID)
    receiver = CallbackReceiver(client, PUBLIC)
    assert receiver.receive(b"{") == 400
    assert receiver.receive(body(pad="x" * DEFAULT_MAX_BODY)) == 413
    assert client.hints == []
    assert (receiver.stats.bad_body, receiver.stats.too_large, receiver.stats.rejected) == (1, 1, 2)


def test_a_replay_within_the_window_costs_nothing_after_it_a_hint() -> None:
    clock = FakeClock()
    client = FakeClient(SCAN_ID)
    receiver = CallbackReceiver(client, PUBLIC, rehint_after=60.0, clock=clock)
    for _ in range(5):
        assert receiver.receive(body()) == 204
    assert client.hints == [SCAN_ID]
    assert receiver.stats.duplicate == 4
    clock.now += 60.0
    receiver.receive(body())
    assert client.hints == [SCAN_ID, SCAN_ID]


def test_the_duplicate_filter_is_bounded() -> None:
    clock = FakeClock()
    ids = [f"{i:064x}" for i in range(10_050)]
    receiver = CallbackReceiver(FakeClient(*ids), PUBLIC, clock=clock)
    for scan_id in ids:
        receiver.receive(body(scan_id=scan_id))
    assert len(receiver._hinted) <= 10_000
    assert receiver.stats.accepted == len(ids)


# ---- aiohttp wiring -------------------------------------------------------------------------


@pytest.fixture
async def served() -> AsyncIterator[tuple[TestClient[Any, Any], FakeClient, CallbackReceiver]]:
    client = FakeClient(SCAN_ID)
    receiver = CallbackReceiver(client, PUBLIC, token=TOKEN)
    app = web.Application()
    receiver.add_routes(app)
    async with TestClient(TestServer(app)) as http:
        yield http, client, receiver


async def test_aiohttp_route_accepts_a_good_callback(
    served: tuple[TestClient[Any, Any], FakeClient, CallbackReceiver],
) -> None:
    http, client, _ = served
    response = await http.post(f"/imagetwin/callbacks/{TOKEN}", data=body())
    assert response.status == 204
    assert client.hints == [SCAN_ID]


async def test_aiohttp_route_refuses_forgeries_without_a_hint(
    served: tuple[TestClient[Any, Any], FakeClient, CallbackReceiver],
) -> None:
    http, client, receiver = served
    path = f"/imagetwin/callbacks/{TOKEN}"

    async def huge() -> AsyncIterator[bytes]:  # chunked: no Content-Length to refuse early
        for _ in range(64):
            yield b" " * 1024

    answers = [
        (await http.post(f"/imagetwin/callbacks/{'x' * 43}", data=body())).status,
        (await http.post("/imagetwin/callbacks/", data=body())).status,
        (await http.get(path)).status,
        (await http.post(path, data=b"{not json")).status,
        (await http.post(path, data=body(pad="x" * 5000))).status,
        (await http.post(path, data=huge())).status,
    ]
    assert answers == [404, 404, 405, 400, 413, 413]
    assert client.hints == []
    assert receiver.stats.wrong_token == 1
    assert receiver.stats.too_large == 2


async def test_aiohttp_routes_take_another_path() -> None:
    client = FakeClient(SCAN_ID)
    receiver = CallbackReceiver(client, PUBLIC, token=TOKEN)
    app = web.Application()
    app.add_routes(receiver.routes("/hooks/"))
    async with TestClient(TestServer(app)) as http:
        assert (await http.post(f"/hooks/{TOKEN}", data=body())).status == 204
    assert client.hints == [SCAN_ID]


# ---- the whole loop: emulator -> aiohttp receiver -> scheduler -> one read ------------------


@asynccontextmanager
async def receiving(
    make_client: Callable[[], ImagetwinClient],
) -> AsyncIterator[tuple[ImagetwinClient, CallbackReceiver]]:
    """A client and an aiohttp callback server on a loopback port bound before the URL is known."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    async with make_client() as client:
        receiver = CallbackReceiver(client, f"http://127.0.0.1:{port}/imagetwin/callbacks")
        app = web.Application()
        receiver.add_routes(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        try:
            yield client, receiver
        finally:
            await runner.cleanup()


def fast_client(emu: Emulator, *, max_poll_interval: float) -> Callable[[], ImagetwinClient]:
    # Timings at the emulator's speed; the fallback poll as the test needs it (real seconds).
    return lambda: ImagetwinClient(**emu.client_kwargs(), max_poll_interval=max_poll_interval)


def sample_files(tmp_path: Path, count: int) -> list[Path]:
    paths = [write_pdf(tmp_path / "paper0.pdf", pages=2)]
    for i in range(1, count):
        path = tmp_path / f"fig{i}.png"
        path.write_bytes(png_bytes(i))
        paths.append(path)
    return paths


def matches(result: ScanResult | None, scan: Scan) -> bool:
    """The client's result is the emulator's record of that scan."""
    f = scan.findings
    return result is not None and (
        result.scan_id,
        result.alteration_count,
        result.local_duplicate_count,
        result.extern_duplicate_count,
        result.ai_image_count,
        result.highest_score,
    ) == (
        scan.scan_id,
        f.alteration_count,
        f.local_duplicate_count,
        f.extern_duplicate_count,
        f.ai_image_count,
        f.highest_score,
    )


def reads_of(emu: Emulator, scan_id: str) -> int:
    return sum(1 for r in emu.requests if r.endpoint == Endpoint.RESULT and r.scan_id == scan_id)


async def until(condition: Callable[[], bool], timeout: float = GENEROUS) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


EmulatorFactory = Callable[..., Awaitable[Emulator]]


async def test_callbacks_make_one_read_per_scan(
    imagetwin_emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await imagetwin_emulator_factory(speed=60, processing_time=6.0)  # 0.1 s real
    # Fallback polling every 60 s: any read before that is the callback's doing.
    async with receiving(fast_client(emu, max_poll_interval=60.0)) as (client, receiver):
        outcomes = await client.submit_and_wait(
            sample_files(tmp_path, 4), callback_url=receiver.callback_url, timeout=GENEROUS
        )
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    for outcome in outcomes:
        assert outcome.scan_id is not None
        assert reads_of(emu, outcome.scan_id) == 1
        assert matches(outcome.result, emu.scans[outcome.scan_id])


async def test_a_lost_callback_is_covered_by_polling(
    imagetwin_emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await imagetwin_emulator_factory(speed=60, processing_time=6.0)
    emu.drop_callbacks(None)  # every one of them
    async with receiving(fast_client(emu, max_poll_interval=0.5)) as (client, receiver):
        outcomes = await client.submit_and_wait(
            sample_files(tmp_path, 3), callback_url=receiver.callback_url, timeout=GENEROUS
        )
    assert all(o.ok for o in outcomes)
    assert emu.counters.callbacks_dropped == 3
    assert receiver.stats.accepted == 0
    for outcome in outcomes:
        assert outcome.scan_id is not None
        # Polled only at max_poll_interval while a callback is expected: a read or two each.
        assert 1 <= reads_of(emu, outcome.scan_id) <= 3


async def test_a_callback_before_anyone_waits_is_remembered(
    imagetwin_emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await imagetwin_emulator_factory(speed=60, processing_time=6.0)
    (paper,) = sample_files(tmp_path, 1)
    async with receiving(fast_client(emu, max_poll_interval=60.0)) as (client, receiver):
        started = await client.scan(paper, callback_url=receiver.callback_url)
        await until(lambda: receiver.stats.accepted == 1)  # nobody waits yet
        async with asyncio.timeout(GENEROUS / 2):  # far less than the 60 s fallback poll
            result = await client.wait_for_result(started.scan_id)
    assert result.scan_id == started.scan_id
    assert reads_of(emu, started.scan_id) == 1


async def test_a_forged_callback_costs_one_read_and_never_a_result(
    imagetwin_emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await imagetwin_emulator_factory(speed=60)
    emu.script(Outcome.never())
    (paper,) = sample_files(tmp_path, 1)
    async with (
        receiving(fast_client(emu, max_poll_interval=60.0)) as (client, receiver),
        aiohttp.ClientSession() as http,
    ):
        started = await client.scan(paper, callback_url=receiver.callback_url)
        waiter = asyncio.create_task(client.wait_for_result(started.scan_id))
        forged = {"scanId": started.scan_id, "status": "finished"}
        for _ in range(3):  # the forgery, then two replays of it
            async with http.post(receiver.callback_url, json=forged) as response:
                assert response.status == 204
        await until(lambda: reads_of(emu, started.scan_id) == 1)
        await asyncio.sleep(0.2)  # room for a wrong second read to show up
        assert reads_of(emu, started.scan_id) == 1
        assert not waiter.done()  # a 202 came back: still running, whatever the body said
        assert (receiver.stats.accepted, receiver.stats.duplicate) == (1, 2)
        waiter.cancel()


# ---- the FastAPI helpers (the example's tests run them under uvicorn) --------------------------


async def test_fastapi_router_with_its_own_receiver_and_path() -> None:
    client = FakeClient(SCAN_ID)
    receiver = CallbackReceiver(client, PUBLIC, token=TOKEN)
    app = FastAPI()
    app.include_router(callback_router(receiver, path="/hooks"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
        answers = [
            (await http.post(f"/hooks/{TOKEN}", content=body())).status_code,
            (await http.post(f"/hooks/{'x' * 43}", content=body())).status_code,
            (await http.post(f"/hooks/{TOKEN}", content=body(pad="x" * 5000))).status_code,
            (await http.post(f"/imagetwin/callbacks/{TOKEN}", content=body())).status_code,
        ]
    assert answers == [204, 404, 413, 404]
    assert client.hints == [SCAN_ID]
    assert "/hooks/{token}" not in app.openapi()["paths"]  # for Imagetwin, not API users


async def test_fastapi_use_client_warns_when_callbacks_cannot_arrive(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wired, prefixed, bare = FastAPI(), FastAPI(), FastAPI()
    wired.include_router(callback_router())
    prefixed.include_router(callback_router(), prefix="/api")
    with caplog.at_level(logging.WARNING, logger="imagetwin_async.fastapi"):
        for app, public_url in [
            (wired, PUBLIC),
            (prefixed, "https://my.service/api/imagetwin/callbacks"),
            (wired, "https://my.service/behind/a/proxy/imagetwin/callbacks"),  # prefix stripped
            (prefixed, PUBLIC),  # mismatch
            (bare, PUBLIC),  # no route
        ]:
            async with use_client(app, ImagetwinClient("k"), public_url=public_url) as receiver:
                assert receiver is not None
                assert app.state.imagetwin_client.__class__ is ImagetwinClient
    assert len(caplog.records) == 2
    assert "missing" in caplog.records[1].getMessage()


def test_fastapi_dependencies_say_what_is_missing() -> None:
    request = Request({"type": "http", "app": FastAPI()})
    with pytest.raises(RuntimeError, match="lifespan"):
        get_imagetwin_client(request)
    with pytest.raises(RuntimeError, match="public_url"):
        get_callback_receiver(request)
    assert get_callback_url(request) is None  # no callbacks: scans are polled


async def test_fastapi_lifespan_owns_one_client_for_the_apps_life(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("IMAGETWIN_REDIS_URL", raising=False)  # one process, not a fleet
    app = FastAPI()
    app.include_router(callback_router())
    made: list[ImagetwinClient] = []

    def make() -> ImagetwinClient:
        made.append(ImagetwinClient("k"))
        return made[-1]

    request = Request({"type": "http", "app": app})
    async with imagetwin_lifespan(make, public_url=PUBLIC, token=TOKEN)(app):
        assert get_imagetwin_client(request) is made[0]
        assert get_callback_url(request) == f"{PUBLIC}/{TOKEN}"
        assert get_callback_receiver(request).client is made[0]
    assert len(made) == 1
    assert made[0].closed  # closed with the app
    with pytest.raises(RuntimeError):
        get_imagetwin_client(request)
