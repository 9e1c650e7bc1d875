"""Shared fixtures: sample files, a mocked API (aioresponses), a client pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from imagetwin_async import ImagetwinClient, RateLimit

from ._files import png_bytes, write_pdf
from ._mock import mocked

API = "https://api.imagetwin.test/v1"
KEY = "sk-test-0123456789abcdef"


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
