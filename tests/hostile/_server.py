"""A lying server: a raw HTTP/1.1 server in a thread, scripted per request by the test.

aiohttp's own test server would refuse to tell the lies we need (a malformed status line, a
Content-Length that is wrong, a body dripped a byte at a time), so this one writes the bytes
itself. Every answer closes its connection; the client is the only thing under test.

    with HostileServer() as server:
        server.answer = lambda seen: Answer(429, headers=(("Retry-After", "86400"),))
        ...  # point a client at server.url + "/v1"
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import urllib.parse
import zlib
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import attrs

__all__ = ["Answer", "HostileServer", "Seen", "gzip_bomb"]


@attrs.frozen
class Seen:
    """One request as the server read it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes


@attrs.frozen
class Answer:
    """What to send back. ``json`` wins over ``body``; ``raw`` replaces the whole answer."""

    status: int = 200
    json: Any = None
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    gzip: bool = False
    content_length: int | None = None  # a lie, when set
    delay: float = 0.0  # before the status line
    drip: float | None = None  # seconds between body bytes
    hang: bool = False  # never answer at all
    hang_after_headers: bool = False  # headers, then silence
    raw: bytes | None = None

    def payload(self) -> bytes:
        data = json.dumps(self.json).encode() if self.json is not None else self.body
        return gzip.compress(data) if self.gzip else data


def gzip_bomb(size: int) -> bytes:
    """A gzip stream of ``size`` zero bytes: about a thousand times smaller than it inflates."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1024 * 1024)
    out = [compressor.compress(block) for _ in range(size // len(block))]
    out.append(compressor.flush())
    return b"".join(out)


class HostileServer:
    """Answers every request with ``self.answer(seen)``; keeps what it saw in ``self.seen``."""

    def __init__(self) -> None:
        self.answer: Callable[[Seen], Answer] = lambda seen: Answer(404, json={"message": "?"})
        self.seen: list[Seen] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()

    def __enter__(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def requests_to(self, prefix: str) -> list[Seen]:
        return [s for s in self.seen if s.path.startswith(prefix)]

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            seen = await _read_request(reader)
            if seen is None:
                return
            self.seen.append(seen)
            await _write_answer(writer, self.answer(seen))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._handlers.discard(task)
            writer.close()


async def _read_request(reader: asyncio.StreamReader) -> Seen | None:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                await reader.readline()
                break
            chunks.append(await reader.readexactly(size))
            await reader.readline()
        body = b"".join(chunks)
    else:
        body = b""
    url = urllib.parse.urlsplit(target)
    query = dict(urllib.parse.parse_qsl(url.query))
    return Seen(method, urllib.parse.unquote(url.path), query, headers, body)


async def _write_answer(writer: asyncio.StreamWriter, answer: Answer) -> None:
    if answer.delay:
        await asyncio.sleep(answer.delay)
    if answer.hang:
        await asyncio.sleep(3600)
    if answer.raw is not None:
        writer.write(answer.raw)
        await writer.drain()
        return
    body = answer.payload()
    names = {name.lower() for name, _ in answer.headers}
    lines = [f"HTTP/1.1 {answer.status} Whatever"]
    lines += [f"{name}: {value}" for name, value in answer.headers]
    if "content-type" not in names:
        lines.append("Content-Type: application/json")
    if "content-length" not in names:
        length = answer.content_length if answer.content_length is not None else len(body)
        lines.append(f"Content-Length: {length}")
    if answer.gzip:
        lines.append("Content-Encoding: gzip")
    lines.append("Connection: close")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    await writer.drain()
    if answer.hang_after_headers:
        await asyncio.sleep(3600)
    if answer.drip is None:
        writer.write(body)
        await writer.drain()
        return
    for i in range(len(body)):
        writer.write(body[i : i + 1])
        await writer.drain()
        await asyncio.sleep(answer.drip)
