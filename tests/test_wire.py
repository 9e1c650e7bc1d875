"""What actually goes over the wire, against a real local HTTP server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from imagetwin_async import FileContent, ImagetwinClient, _spec

from ._files import png_bytes
from .conftest import KEY


class Recorder:
    """A server that answers 429 once, then 200, and keeps every request's bytes."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []

    async def scan(self, request: web.Request) -> web.Response:
        body = await request.read()
        boundary = request.content_type and request.headers["Content-Type"].split("boundary=")[1]
        # Each FormData draws its own boundary: compare the bodies without it.
        self.bodies.append(body.replace(boundary.encode(), b"BOUNDARY"))
        self.headers.append(dict(request.headers))
        if len(self.bodies) == 1:
            return web.json_response(
                {"message": "slow down"}, status=429, headers={"Retry-After": "0"}
            )
        return web.json_response({"scanId": _spec.SANDBOX_FINISHED_ID, "message": "ok"})


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Recorder]]:
    recorder = Recorder()
    app = web.Application()
    app.router.add_post("/v1/scan", recorder.scan)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/v1", recorder
    await runner.cleanup()


@pytest.mark.parametrize("kind", ["pdf", "images", "bytes", "stream"])
async def test_a_retried_upload_sends_the_same_bytes_again(
    server: tuple[str, Recorder], pdf: Path, images: list[Path], tmp_path: Path, kind: str
) -> None:
    url, recorder = server
    with pdf.open("rb") as stream:  # opened for every kind, closed whatever happens
        files: object = {
            "pdf": pdf,
            "images": images,
            "bytes": FileContent("fig.png", png_bytes(7)),
            "stream": FileContent("paper.pdf", stream),
        }[kind]
        async with ImagetwinClient(
            KEY, base_url=url, backoff_base=0.001, backoff_cap=0.01
        ) as client:
            started = await client.scan(files, min_score=0.5)  # type: ignore[arg-type]
    assert started.scan_id == _spec.SANDBOX_FINISHED_ID
    first, second = recorder.bodies
    assert first == second
    assert b'name="minScore"' in first
    assert len(first) > 100
    assert all(h["Authorization"] == f"Bearer {KEY}" for h in recorder.headers)
