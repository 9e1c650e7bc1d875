"""The multipart body of a scan POST: an ``Upload``'s parts streamed by aiohttp.

``form_data`` builds a fresh ``aiohttp.FormData`` per attempt, because a form is spent once
sent; file parts are streamed in 64 KiB chunks, so a 30 MiB PDF or 25 x 20 MiB images never sit
whole in memory.

    >>> with prepare_upload("paper.pdf") as upload:
    ...     form = form_data(upload, extra_fields=[("minScore", "0.5")])
    ...     await session.post(url, data=form)  # a new form for every attempt

``PartPayload`` leans on private attributes of aiohttp's ``Payload`` (``_size``, ``_consumed``,
``_autoclose``): pinned aiohttp versions are tested.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aiohttp
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

from ._uploads import OpenedPart, Upload, UploadPart, changed_error

__all__ = ["PartPayload", "form_data"]

_CHUNK = 64 * 1024  # aiohttp's own chunk size for file payloads


def form_data(
    upload: Upload,
    field_name: str = "file",
    extra_fields: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
) -> aiohttp.FormData:
    """A fresh multipart form for one attempt: ``extra_fields``, then one part per file.

    Text fields come first so a server that parses the stream sees the options before the
    files. Files on disk are opened now (a file deleted or changed since validation raises
    ``InvalidUpload`` here, before sending) and read in chunks while aiohttp sends them.
    """
    form = aiohttp.FormData(quote_fields=False)
    # quote_fields=False sends file names as raw UTF-8, as curl and browsers do; aiohttp's
    # default percent-encodes them ("my paper.pdf" would arrive as "my%20paper.pdf").
    # Names with control characters were refused in validation, so no header injection.
    fields = extra_fields.items() if isinstance(extra_fields, Mapping) else extra_fields or ()
    for name, value in fields:
        form.add_field(name, value)
    for part, opened in upload.open_parts():
        form.add_field(field_name, PartPayload(part, opened), filename=part.filename)
    return form


class PartPayload(Payload):
    """One file part: reads exactly ``part.size`` bytes from ``start`` on every write.

    Unlike aiohttp's file payloads it never closes a caller's stream (aiohttp closes the body
    after each request, which would break the retry of a FastAPI UploadFile), closes the files
    we opened synchronously (no executor job left behind to trip a ResourceWarning), and
    reports the size validated up front, so the request carries a Content-Length.
    """

    def __init__(self, part: UploadPart, opened: OpenedPart) -> None:
        super().__init__(opened.file, content_type=part.content_type, filename=part.filename)
        self.part = part
        self._opened = opened
        self._size = part.size
        # aiohttp calls close() after sending only when autoclose is False.
        self._autoclose = not opened.owned

    def release(self) -> None:
        self._consumed = True
        self._opened.release()

    def _close(self) -> None:
        if not self._consumed:
            self.release()

    async def close(self) -> None:
        self._close()

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        if self._consumed:
            raise RuntimeError(f"the part for {self.part.source} was already closed")
        file, start = self._opened.file, self._opened.start
        remaining = (
            self.part.size if content_length is None else min(content_length, self.part.size)
        )
        # Disk reads go to a thread so a slow disk never stalls the loop; BytesIO needs none.
        run = _call_inline if isinstance(file, io.BytesIO) else _call_in_thread
        await run(file.seek, start)
        try:
            while remaining > 0:
                chunk: bytes = await run(file.read, min(_CHUNK, remaining))
                if not chunk:
                    raise changed_error(self.part, "shrank")
                if len(chunk) == remaining:
                    # Before the last bytes go out: a file rewritten meanwhile must not reach
                    # the server as a complete (mixed) body. Cut off here, no scan starts.
                    await run(self._opened.verify)
                await writer.write(chunk)
                remaining -= len(chunk)
        finally:
            if not self._opened.owned:  # leave the caller's stream where we found it
                await run(file.seek, start)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self._read_all().decode(encoding, errors)

    async def as_bytes(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        data: bytes = await _call_in_thread(self._read_all)
        return data

    def _read_all(self) -> bytes:
        file = self._opened.file
        file.seek(self._opened.start)
        data = file.read(self.part.size)
        file.seek(self._opened.start)
        return bytes(data)


async def _call_inline(function: Callable[..., Any], *args: Any) -> Any:
    return function(*args)


async def _call_in_thread(function: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)
