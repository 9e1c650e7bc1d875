"""Rendering a multipart body without a network: for tests of what a scan POST carries."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import aiohttp
import attrs
from aiohttp.abc import AbstractStreamWriter


@attrs.frozen
class RenderedBody:
    """A multipart body as bytes, with the header that goes with it.

    >>> first = await render_body(upload.form_data())
    >>> second = await render_body(upload.form_data())
    >>> first.canonical() == second.canonical()
    True
    """

    content_type: str
    body: bytes = attrs.field(repr=lambda body: f"<{len(body)} bytes>")

    @property
    def boundary(self) -> str:
        return self.content_type.partition("boundary=")[2].strip('"')

    def canonical(self) -> bytes:
        """The body with its random boundary replaced by ``BOUNDARY``: equal across attempts."""
        return self.body.replace(self.boundary.encode(), b"BOUNDARY")


async def write_body(form: aiohttp.FormData, write: Callable[[bytes], object]) -> str:
    """Stream the body of ``form`` into ``write`` chunk by chunk, as aiohttp would send it.

    Returns the Content-Type header (with the boundary). Closes the form's files afterwards,
    as aiohttp does after a request. ``form`` is spent, like a sent form.
    """
    payload = form()
    try:
        await payload.write(_SinkWriter(write))
    finally:
        await payload.close()
    return payload.content_type


async def render_body(form: aiohttp.FormData) -> RenderedBody:
    """The whole body of ``form`` in memory: for tests with small files."""
    buffer = io.BytesIO()
    content_type = await write_body(form, buffer.write)
    return RenderedBody(content_type, buffer.getvalue())


class _SinkWriter(AbstractStreamWriter):
    def __init__(self, write: Callable[[bytes], object]) -> None:
        self._write = write

    async def write(self, chunk: bytes | bytearray | memoryview) -> None:
        self._write(bytes(chunk))

    async def write_eof(self, chunk: bytes = b"") -> None:
        if chunk:
            self._write(chunk)

    async def drain(self) -> None:
        return None

    def enable_compression(self, encoding: str = "deflate", strategy: int | None = None) -> None:
        raise NotImplementedError("a rendered body is never compressed")

    def enable_chunking(self) -> None:
        raise NotImplementedError("a rendered body is never chunked")

    async def write_headers(self, status_line: str, headers: Any) -> None:
        raise NotImplementedError("a rendered body has no HTTP headers")
