"""What the benchmarks share: the naive baseline, sample files, tables.

Every benchmark compares ``ImagetwinClient`` with ``NaiveClient``, the client people write by
hand: ``aiolimiter.AsyncLimiter(20, 60)`` before each scan POST, and each scan polled every
``poll_every`` seconds through ``AsyncLimiter(60, 60)``; a 429 is counted and waited out
(Retry-After, else a fixed delay) before the request is tried again.

Times are scaled by the emulator's ``speed``: ours is ``ImagetwinClient(**emu.client_kwargs())``
(every default timing divided by ``speed``), the baseline gets ``per = 60 / speed`` and its
poll interval divided by ``speed``, so an emulated minute lasts ``60 / speed`` real seconds on
both sides of the wire. Figures are reported in emulated seconds.
"""

from __future__ import annotations

import asyncio
import io
import math
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
from aiolimiter import AsyncLimiter
from pypdf import PdfWriter

SCAN_RATE = (20, 60.0)  # the vendor's limits, emulated seconds
RESULT_RATE = (60, 60.0)


def command_line() -> str:
    """The command that started this run, as one could paste it."""
    return shlex.join(["python", *sys.argv])


def pdf_bytes(index: int) -> bytes:
    """A one-page PDF whose content (a title) differs with ``index``: distinct scans."""
    writer = PdfWriter()
    writer.add_blank_page(width=72, height=72)
    writer.add_metadata({"/Title": f"paper {index}"})
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def write_pdfs(directory: Path, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        path = directory / f"paper{i:04d}.pdf"
        path.write_bytes(pdf_bytes(i))
        paths.append(path)
    return paths


def write_padded_pdf(path: Path, size: int, index: int = 0) -> Path:
    """A valid PDF of exactly ``size`` bytes: a small one, a sparse hole, then its trailer
    again (readers start from the last ``startxref``), so it costs no disk and no memory."""
    data = pdf_bytes(index)
    tail = b"\n" + data[data.rindex(b"startxref") :]
    with path.open("wb") as out:
        out.write(data)
        out.seek(size - len(tail))
        out.write(tail)
    assert path.stat().st_size == size
    return path


class NaiveClient:
    """The baseline: aiolimiter before every request, every scan polled every ``poll_every``
    emulated seconds; 429s are counted and waited out (Retry-After, else ``retry_delay``).

        async with NaiveClient(emu.url, emu.api_key, speed=60, poll_every=10) as naive:
            scan_id = await naive.scan(path)
            result = await naive.wait_for_result(scan_id)
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        speed: float,
        poll_every: float = 10.0,
        retry_delay: float = 5.0,
    ) -> None:
        self.url = url
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._speed = speed
        self.poll_every = poll_every
        self.retry_delay = retry_delay
        self.scan_limiter = AsyncLimiter(SCAN_RATE[0], SCAN_RATE[1] / speed)
        self.result_limiter = AsyncLimiter(RESULT_RATE[0], RESULT_RATE[1] / speed)
        self.rate_limited = {"scan": 0, "result": 0}
        self.reads = 0
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(headers=self._headers)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use `async with NaiveClient(...)`"
        return self._session

    async def _wait_out_429(self, response: aiohttp.ClientResponse, group: str) -> None:
        self.rate_limited[group] += 1
        header = response.headers.get("Retry-After")
        try:
            delay = float(header) if header is not None else self.retry_delay / self._speed
        except ValueError:
            delay = self.retry_delay / self._speed
        await asyncio.sleep(delay)

    async def scan(self, path: Path, *, read_whole: bool = False) -> str:
        """POST one document; ``read_whole`` loads it into memory first (``read_bytes``)
        instead of letting aiohttp stream the open file."""
        while True:
            async with self.scan_limiter:
                with path.open("rb") as file:
                    form = aiohttp.FormData()
                    content = file.read() if read_whole else file
                    form.add_field(
                        "file", content, filename=path.name, content_type="application/pdf"
                    )
                    async with self.session.post(f"{self.url}/scan", data=form) as response:
                        if response.status != 429:
                            response.raise_for_status()
                            return str((await response.json())["scanId"])
            await self._wait_out_429(response, "scan")

    async def wait_for_result(self, scan_id: str) -> dict[str, Any]:
        """Sleep ``poll_every``, read, until the result endpoint answers 200."""
        while True:
            await asyncio.sleep(self.poll_every / self._speed)
            while True:
                async with self.result_limiter:
                    self.reads += 1
                    async with self.session.get(f"{self.url}/result/{scan_id}") as response:
                        if response.status == 200:
                            return dict(await response.json())
                        if response.status == 202:
                            break
                        if response.status != 429:
                            response.raise_for_status()
                await self._wait_out_429(response, "result")


# ---- figures ------------------------------------------------------------------------------


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, left: int = 1) -> str:
    """A plain-text table: the first ``left`` columns left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers], *([_cell(v) for v in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def _cell(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def header(title: str, notes: Sequence[str] = ()) -> None:
    """Print the command line, a title and notes on the settings."""
    print(f"$ {command_line()}")
    print(title)
    for note in notes:
        print(f"  {note}")
    print()
