"""Fixtures for the emulator's own tests: real files of every kind, an authorised session."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from imagetwin_async.emulator import Emulator

# The plugin is loaded through the package's pytest11 entry point once installed; importing
# its fixtures here makes these tests run from a plain checkout too.
from imagetwin_async.emulator.pytest_plugin import (  # noqa: F401
    imagetwin_emulator,
    imagetwin_emulator_factory,
    imagetwin_emulator_thread,
    pytest_configure,
)

Files = list[tuple[str, bytes]]


def docx_bytes(pages: int | None = 3, padding: int = 0) -> bytes:
    """A zip with the parts a .docx has; ``padding`` bytes prepended (zip readers allow it)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as docx:
        docx.writestr("[Content_Types].xml", "<Types/>")
        docx.writestr("word/document.xml", "<w:document/>")
        if pages is not None:
            docx.writestr("docProps/app.xml", f"<Properties><Pages>{pages}</Pages></Properties>")
    return b"\0" * padding + out.getvalue()


def form(files: Files, *, field: str = "file", **fields: str) -> aiohttp.FormData:
    data = aiohttp.FormData()
    for name, content in files:
        data.add_field(field, content, filename=name, content_type="application/octet-stream")
    for name, value in fields.items():
        data.add_field(name, value)
    return data


@pytest.fixture
async def emu(imagetwin_emulator_factory: Callable[..., Awaitable[Emulator]]) -> Emulator:  # noqa: F811
    """An emulator whose scans finish at once, with the default (sliding) rate limits."""
    return await imagetwin_emulator_factory(processing_time=0.0)


@pytest.fixture
async def http(emu: Emulator) -> AsyncIterator[aiohttp.ClientSession]:
    """A session sending the emulator's key; URLs are absolute."""
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        yield session


Scanner = Callable[..., Awaitable[tuple[int, dict[str, Any]]]]


@pytest.fixture
def post_scan(emu: Emulator, http: aiohttp.ClientSession) -> Scanner:
    """``await post_scan(files, endpoint="scan", field="file", **fields)`` -> (status, JSON)."""

    async def post(
        files: Files, *, endpoint: str = "scan", field: str = "file", **fields: str
    ) -> tuple[int, dict[str, Any]]:
        data = form(files, field=field, **fields)
        async with http.post(f"{emu.url}/{endpoint}", data=data) as response:
            return response.status, await response.json()

    return post


@pytest.fixture
def get_json(http: aiohttp.ClientSession) -> Callable[[str], Awaitable[tuple[int, Any]]]:
    async def get(url: str) -> tuple[int, Any]:
        async with http.get(url) as response:
            return response.status, await response.json()

    return get
