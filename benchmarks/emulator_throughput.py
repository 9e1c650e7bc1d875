"""How many scan POSTs and result GETs a second the emulator serves on one core.

    python benchmarks/emulator_throughput.py [--seconds 5] [--concurrency 64]

The emulator runs in a subprocess (``python -m imagetwin_async.emulator``) pinned to one CPU,
with rate limits off and scans that finish at once; the client is aiohttp in this process,
pinned to another CPU where there is one. With only one client process, the figures are a
lower bound: on a two-core machine the client can be the bottleneck (its CPU is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from pypdf import PdfWriter

ROOT = Path(__file__).resolve().parents[1]
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
    b"\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00"
    b"\x00\x00IEND\xaeB`\x82"
)


def one_page_pdf() -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(width=595, height=842)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def start_emulator() -> tuple[subprocess.Popen[str], str]:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpu = cpus[-1] if cpus else None

    def pin() -> None:
        if server_cpu is not None:
            os.sched_setaffinity(0, {server_cpu})

    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "imagetwin_async.emulator",
            "--port",
            "0",
            "--rate-limit",
            "off",
            "--processing-time",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=pin,  # noqa: PLW1509 - only sets CPU affinity, before exec
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    url = line.split(" at ", 1)[1].split(" ", 1)[0]
    if len(cpus) > 1:
        os.sched_setaffinity(0, set(cpus[:-1]))  # keep the client off the server's core
    return process, url


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (Linux); NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    name: str,
    seconds: float,
    concurrency: int,
    request: Callable[[], Awaitable[int]],
    server_pid: int,
) -> float:
    done = 0
    errors = 0
    deadline = time.perf_counter() + seconds
    cpu_start = time.process_time()
    server_start = cpu_seconds(server_pid)

    async def worker() -> None:
        nonlocal done, errors
        while time.perf_counter() < deadline:
            status = await request()
            done += 1
            errors += status != 200

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    client_cpu = (time.process_time() - cpu_start) / elapsed
    server_cpu = cpu_seconds(server_pid) - server_start
    rate = done / elapsed
    # Requests per second of server CPU: what one free core would serve; steady even when
    # other processes compete for the machine and wall-clock rates wobble.
    print(
        f"{name:<30} {rate:>7,.0f} req/s wall, {done / server_cpu:>7,.0f} req/s per server "
        f"CPU-second  (server CPU {server_cpu / elapsed:.0%}, client CPU {client_cpu:.0%}, "
        f"{done} requests, {errors} non-200)"
    )
    return rate


async def main(seconds: float, concurrency: int) -> None:
    process, url = start_emulator()
    pdf = one_page_pdf()
    try:
        connector = aiohttp.TCPConnector(limit=concurrency)
        headers = {"Authorization": "Bearer test-key"}
        async with aiohttp.ClientSession(connector=connector, headers=headers) as http:

            async def post(name: str, content: bytes) -> int:
                form = aiohttp.FormData()
                form.add_field("file", content, filename=name, content_type="image/png")
                async with http.post(f"{url}/scan", data=form) as response:
                    await response.read()
                    return response.status

            async with http.post(f"{url}/scan", data={"x": "y"}) as warmup:
                await warmup.read()
            form = aiohttp.FormData()
            form.add_field("file", PNG, filename="fig.png")
            async with http.post(f"{url}/scan", data=form) as response:
                scan_id = (await response.json())["scanId"]

            async def get() -> int:
                async with http.get(f"{url}/result/{scan_id}") as response:
                    await response.read()
                    return response.status

            print(f"emulator {url}, one core, limits off; client: aiohttp, {concurrency} at once")
            pid = process.pid
            await measure(
                "POST /scan (1 PNG, 70 B)", seconds, concurrency, lambda: post("f.png", PNG), pid
            )
            await measure(
                f"POST /scan (1-page PDF, {len(pdf)} B)",
                seconds,
                concurrency,
                lambda: post("p.pdf", pdf),
                pid,
            )
            await measure("GET /result (finished)", seconds, concurrency, get, pid)
    finally:
        process.terminate()
        process.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.concurrency))
