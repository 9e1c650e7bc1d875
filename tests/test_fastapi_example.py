"""The FastAPI example service, served by uvicorn on loopback, against the emulator.

Real HTTP all the way: httpx uploads files to the service, the service's client scans them on
the emulator, the emulator POSTs callbacks back to the service. The emulator runs 60x (its
minute is our second), so nothing here waits long; every real-time wait has a generous bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request

from examples.fastapi_service.app import RedactCallbackTokens, Settings, create_app
from imagetwin_async import ImagetwinClient
from imagetwin_async import _uploads as uploads
from imagetwin_async._callbacks import CallbackReceiver
from imagetwin_async.emulator import Emulator, Endpoint, Outcome, Scan
from imagetwin_async.fastapi import get_callback_receiver

from ._files import MIB, write_docx, write_image, write_pdf

GENEROUS = 30.0  # seconds: a bound on real-time waits, never slept through
EmulatorFactory = Callable[..., Awaitable[Emulator]]


class _Server(uvicorn.Server):
    # The test owns the process's signals; uvicorn must not take SIGINT from pytest.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@attrs.frozen
class Service:
    url: str
    app: FastAPI
    http: httpx.AsyncClient

    @property
    def receiver(self) -> CallbackReceiver:
        # The dependency the routes use, given the smallest request that names the app.
        return get_callback_receiver(Request({"type": "http", "app": self.app}))

    @property
    def callbacks_url(self) -> str:
        return f"{self.url}/imagetwin/callbacks"


@contextlib.asynccontextmanager
async def service(emu: Emulator, *, max_poll_interval: float) -> AsyncIterator[Service]:
    """The example app under uvicorn, on a port bound first so PUBLIC_URL can name it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = Settings(api_key=emu.api_key, base_url=emu.url, public_url=url)

    def make_client(s: Settings) -> ImagetwinClient:
        # Timings at the emulator's speed; the fallback poll as the test needs it.
        return ImagetwinClient(
            s.api_key,
            base_url=s.base_url,
            speed=emu.clock.speed,
            max_poll_interval=max_poll_interval,
        )

    app = create_app(settings, make_client=make_client)
    server = _Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(GENEROUS):
            while not server.started:
                if task.done():
                    task.result()  # start-up failed: raise why
                await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=url, timeout=GENEROUS) as http:
            yield Service(url, app, http)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, GENEROUS)
        sock.close()


def reads_of(emu: Emulator, scan_id: str) -> int:
    return sum(1 for r in emu.requests if r.endpoint == Endpoint.RESULT and r.scan_id == scan_id)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def upload(svc: Service, path: Path) -> str:
    with path.open("rb") as f:
        response = await svc.http.post("/manuscripts", files={"manuscript": (path.name, f)})
    assert response.status_code == 202, response.text
    scan_id: str = response.json()["scan_id"]
    assert response.headers["location"] == f"/manuscripts/{scan_id}"
    return scan_id


async def result_of(svc: Service, scan_id: str) -> dict[str, Any]:
    """GET until the service has the outcome (202 meanwhile); the final JSON."""
    async with asyncio.timeout(GENEROUS):
        while True:
            response = await svc.http.get(f"/manuscripts/{scan_id}")
            if response.status_code != 202:
                assert response.status_code == 200, response.text
                answer: dict[str, Any] = response.json()
                return answer
            assert response.json()["status"] == "running"
            await asyncio.sleep(0.02)


def assert_is(result: dict[str, Any], scan: Scan) -> None:
    f = scan.findings
    assert result["scan_id"] == scan.scan_id
    assert result["local_duplicate_count"] == f.local_duplicate_count
    assert result["extern_duplicate_count"] == f.extern_duplicate_count
    assert result["alteration_count"] == f.alteration_count
    assert result["highest_score"] == f.highest_score


@pytest.fixture
def no_spooled_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Uploads must stream from Starlette's spooled file: a second copy would fail the test."""

    def refuse(*args: object) -> None:
        raise AssertionError("the upload was copied instead of streamed")

    monkeypatch.setattr(uploads, "_spool", refuse)


async def test_results_come_by_callback_with_one_read_per_scan(
    imagetwin_emulator_factory: EmulatorFactory, tmp_path: Path, no_spooled_copies: None
) -> None:
    emu = await imagetwin_emulator_factory(speed=60, processing_time=60.0)  # 1 s real
    files = [
        write_pdf(tmp_path / "big-paper.pdf", pages=3, size=3 * MIB),  # spooled to disk
        write_docx(tmp_path / "thesis.docx", pages=2),
        write_image(tmp_path / "blot.png", seed=7),
    ]
    # Fallback polling every 60 s: every read the test sees is a callback's doing.
    async with service(emu, max_poll_interval=60.0) as svc:
        scan_ids = [await upload(svc, path) for path in files]
        assert (await svc.http.get(f"/manuscripts/{scan_ids[0]}")).status_code == 202
        results = [await result_of(svc, scan_id) for scan_id in scan_ids]
        status = (await svc.http.get("/status")).json()
    for path, scan_id, answer in zip(files, scan_ids, results, strict=True):
        assert answer["status"] == "finished"
        assert_is(answer["result"], emu.scans[scan_id])
        assert reads_of(emu, scan_id) == 1
        assert emu.scans[scan_id].files[0].sha256 == sha256(path)  # streamed intact
    assert [(c.delivered, c.http_status) for c in emu.callbacks] == [(True, 204)] * 3
    assert status["callbacks"]["accepted"] == 3
    assert status["polling"]["reads"] == 3


async def test_a_failed_scan_is_reported_after_one_read(
    imagetwin_emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await imagetwin_emulator_factory(speed=60, processing_time=6.0)
    emu.script(Outcome.failed(), file_name="broken.pdf")
    async with service(emu, max_poll_interval=60.0) as svc:
        scan_id = await upload(svc, write_pdf(tmp_path / "broken.pdf"))
        answer = await result_of(svc, scan_id)
    assert answer["status"] == "failed"
    assert answer["result"] is None
    assert [c.status for c in emu.callbacks] == ["failed"]
    assert reads_of(emu, scan_id) == 1


async def test_a_lost_callback_is_covered_by_polling(
    imagetwin_emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await imagetwin_emulator_factory(speed=60, processing_time=6.0)
    emu.drop_callbacks()  # the next one
    async with service(emu, max_poll_interval=0.5) as svc:
        lost = await upload(svc, write_pdf(tmp_path / "lost.pdf"))
        kept = await upload(svc, write_image(tmp_path / "kept.png", seed=3))
        answers = [await result_of(svc, lost), await result_of(svc, kept)]
        accepted = svc.receiver.stats.accepted
    assert [a["status"] for a in answers] == ["finished", "finished"]
    assert_is(answers[0]["result"], emu.scans[lost])
    assert emu.counters.callbacks_dropped == 1
    assert accepted == 1  # the other scan's callback did come
    # Polled every max_poll_interval while a callback is awaited: one read, two on a slow day.
    assert 1 <= reads_of(emu, lost) <= 3
    assert reads_of(emu, kept) == 1


async def test_forged_callbacks_are_harmless(
    imagetwin_emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await imagetwin_emulator_factory(speed=60)
    emu.script(Outcome.never(), file_name="slow.pdf")
    async with service(emu, max_poll_interval=60.0) as svc:
        scan_id = await upload(svc, write_pdf(tmp_path / "slow.pdf"))
        receiver = svc.receiver
        good = f"{svc.callbacks_url}/{receiver.token}"
        forged = {"scanId": scan_id, "status": "finished"}
        post = svc.http.post

        async def chunked_flood() -> AsyncIterator[bytes]:
            for _ in range(100):
                yield b" " * 1024

        answers = [
            (await post(f"{svc.callbacks_url}/{'A' * 43}", json=forged)).status_code,
            (await post(f"{svc.callbacks_url}/", json=forged)).status_code,
            (await post(good, content=b"{not json")).status_code,
            (await post(good, json={"scanId": "../result", "status": "finished"})).status_code,
            (await post(good, json={**forged, "pad": "x" * 5000})).status_code,
            (await post(good, content=chunked_flood())).status_code,
            (await post(good, json={**forged, "scanId": "f" * 64})).status_code,  # unknown
        ]
        assert answers == [404, 404, 400, 400, 413, 413, 204]
        assert reads_of(emu, scan_id) == 0
        assert receiver.stats.unknown_scan == 1

        # A well-formed forgery with the right token, and replays of it: one read in all, and
        # the scan stays running, whatever the body claimed.
        for _ in range(3):
            assert (await post(good, json=forged)).status_code == 204
        async with asyncio.timeout(GENEROUS):
            while reads_of(emu, scan_id) < 1:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # room for a wrong second read to show up
        assert reads_of(emu, scan_id) == 1
        assert (await svc.http.get(f"/manuscripts/{scan_id}")).status_code == 202
        assert (receiver.stats.accepted, receiver.stats.duplicate) == (1, 2)

        # The genuine callback, inside the duplicate window, is ignored too: the price of
        # the forgery is that this scan falls back to polling (here, 60 s away).
        emu.finish_scan(scan_id)
        async with asyncio.timeout(GENEROUS):
            while not emu.callbacks:
                await asyncio.sleep(0.01)
        assert emu.callbacks[0].http_status == 204
        assert receiver.stats.duplicate == 3
        assert reads_of(emu, scan_id) == 1


async def test_a_replayed_callback_after_the_result_costs_nothing(
    imagetwin_emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await imagetwin_emulator_factory(speed=60, processing_time=6.0)
    async with service(emu, max_poll_interval=60.0) as svc:
        scan_id = await upload(svc, write_pdf(tmp_path / "paper.pdf"))
        before = await result_of(svc, scan_id)
        good = f"{svc.callbacks_url}/{svc.receiver.token}"
        for status in ("finished", "failed", "finished"):
            response = await svc.http.post(good, json={"scanId": scan_id, "status": status})
            assert response.status_code == 204
        after = await result_of(svc, scan_id)
    assert after == before
    assert after["status"] == "finished"
    assert reads_of(emu, scan_id) == 1


async def test_uploads_the_api_would_refuse_are_refused_before_billing(
    imagetwin_emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await imagetwin_emulator_factory(speed=60)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a manuscript")
    async with service(emu, max_poll_interval=60.0) as svc:
        with notes.open("rb") as f:
            response = await svc.http.post("/manuscripts", files={"manuscript": ("notes.txt", f)})
        missing = await svc.http.get("/manuscripts/" + "0" * 64)
    assert response.status_code == 422
    assert ".txt" in response.json()["detail"]
    assert missing.status_code == 404
    assert emu.counters.scans_billed == 0


def test_the_access_log_never_shows_the_token() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "POST", "/imagetwin/callbacks/s3cr3t-t0ken?x=1", "1.1", 204),
        None,
    )
    assert RedactCallbackTokens().filter(record)
    assert "s3cr3t" not in record.getMessage()
    assert "/imagetwin/callbacks/***" in record.getMessage()
