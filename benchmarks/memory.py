"""Memory: peak RSS above the idle client with 10 uploads of 25 MiB in flight, and with
10,000 scans waiting.

    python benchmarks/memory.py [--quick]

The emulator runs in a subprocess (its memory does not count; rate limits off, scans that
never finish). Every measurement runs in a fresh child process of its own, which imports
everything, opens its client and sends one small request (the idle client), reads its RSS,
resets the kernel's peak-RSS mark (``/proc/self/clear_refs``), does the work, and reads the
peak (``VmHWM``). Where the peak cannot be reset (not Linux), ``ru_maxrss`` is used instead.

- uploads: 10 valid 25 MiB PDFs (a small PDF, a sparse hole, its trailer again), scanned
  at once by ``ImagetwinClient.scan``; by the naive client letting aiohttp stream the open
  file; and by the naive client reading each file first (``read_bytes``), as many do.
- waiting: ``--waiting`` scans (10,000) started beforehand by the parent; the child waits for
  them all (``wait_for_result`` on their ids, or the naive loop: sleep 10 s, read) for 12 s,
  long enough for both to start reading.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from _common import NaiveClient, header, table, write_padded_pdf, write_pdfs

from imagetwin_async import ImagetwinClient

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
UPLOAD_SIZE = 25 * MIB
UPLOADS = 10
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
    b"\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00"
    b"\x00\x00IEND\xaeB`\x82"
)


# ---- measuring RSS ------------------------------------------------------------------------


def status_kib(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def rss_mib() -> float:
    kib = status_kib("VmRSS")
    if kib is None:  # not Linux: the peak so far is the best we have
        return peak_mib()
    return kib / 1024


def reset_peak() -> str:
    """Reset the peak-RSS mark if the kernel allows; name the method the peak is read by."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return "ru_maxrss (peak since process start: not resettable here)"
    return "VmHWM after clear_refs=5 (peak since the reset)"


def peak_mib() -> float:
    kib = status_kib("VmHWM")
    if kib is not None:
        return kib / 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)


# ---- the children -------------------------------------------------------------------------


async def child(scenario: str, url: str, directory: Path, waiting: int) -> dict[str, Any]:
    """Run one scenario in this (fresh) process; the figures as a dict."""
    small = directory / "small" / "paper0000.pdf"
    big = sorted((directory / "big").glob("*.pdf"))
    ids = (directory / "ids.txt").read_text().split() if scenario.endswith("wait") else []
    if scenario.startswith("ours"):
        client = ImagetwinClient("test-key", base_url=url)
        async with client:
            started = await client.scan(small)
            await client.get_result(started.scan_id)
            idle, method = rss_mib(), reset_peak()
            if scenario == "ours-upload":
                await asyncio.gather(*(client.scan(path) for path in big))
            else:
                await wait_a_while([client.wait_for_result(i) for i in ids])
            peak, end = peak_mib(), rss_mib()
    else:
        async with NaiveClient(url, "test-key", speed=1.0, poll_every=10.0) as naive:
            await naive.scan(small)
            idle, method = rss_mib(), reset_peak()
            if scenario == "naive-upload":
                await asyncio.gather(*(naive.scan(path) for path in big))
            elif scenario == "naive-read-upload":
                await asyncio.gather(*(naive.scan(path, read_whole=True) for path in big))
            else:
                await wait_a_while([naive.wait_for_result(i) for i in ids])
            peak, end = peak_mib(), rss_mib()
    return {"idle": idle, "peak": peak, "end": end, "method": method}


async def wait_a_while(waits: list[Any], seconds: float = 12.0) -> None:
    """Wait on all of them for ``seconds`` (they never finish), then cancel."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# ---- the parent ---------------------------------------------------------------------------


def start_emulator() -> tuple[subprocess.Popen[str], str]:
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
            "1e9",  # never finishes within the run
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    return process, line.split(" at ", 1)[1].split(" ", 1)[0]


async def start_scans(url: str, n: int) -> list[str]:
    """Start ``n`` scans of a tiny PNG (the emulator lets them run for ever)."""
    ids: list[str] = []
    connector = aiohttp.TCPConnector(limit=32)
    headers = {"Authorization": "Bearer test-key"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:

        async def one() -> None:
            form = aiohttp.FormData()
            form.add_field("file", PNG, filename="fig.png", content_type="image/png")
            async with http.post(f"{url}/scan", data=form) as response:
                response.raise_for_status()
                ids.append((await response.json())["scanId"])

        for start in range(0, n, 500):
            await asyncio.gather(*(one() for _ in range(min(500, n - start))))
    return ids


def run_child(scenario: str, url: str, directory: Path, waiting: int) -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, __file__, "--child", scenario, url, str(directory), str(waiting)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


SCENARIOS = [
    ("ours-upload", "uploads", "ours (scan, streamed from disk)"),
    ("naive-upload", "uploads", "naive (aiohttp streams the open file)"),
    ("naive-read-upload", "uploads", "naive (path.read_bytes() first)"),
    ("ours-wait", "waiting", "ours (wait_for_result)"),
    ("naive-wait", "waiting", "naive (sleep 10 s, read; a task each)"),
]


def main(args: argparse.Namespace) -> None:
    waiting = 1_000 if args.quick else args.waiting
    header(
        "Memory: RSS above the idle client (MiB), emulator in another process",
        [
            f"uploads: {UPLOADS} x {UPLOAD_SIZE // MIB} MiB PDFs at once; waiting: "
            f"{waiting:,} scans that never finish, waited on for 12 s",
            "idle: RSS after one small request; peak and end: the child's peak RSS during "
            "the work and its RSS at the end",
        ],
    )
    started = time.perf_counter()
    process, url = start_emulator()
    rows = []
    methods = set()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            (directory / "small").mkdir()
            (directory / "big").mkdir()
            write_pdfs(directory / "small", 1)
            for i in range(UPLOADS):
                write_padded_pdf(directory / "big" / f"big{i}.pdf", UPLOAD_SIZE, index=i)
            ids = asyncio.run(start_scans(url, waiting))
            (directory / "ids.txt").write_text("\n".join(ids))
            for scenario, work, label in SCENARIOS:
                figures = run_child(scenario, url, directory, waiting)
                methods.add(figures["method"])
                what = f"{UPLOADS} x 25 MiB uploads" if work == "uploads" else f"{waiting:,} wait"
                rows.append(
                    [
                        what,
                        label,
                        figures["idle"],
                        figures["peak"],
                        figures["peak"] - figures["idle"],
                        figures["end"] - figures["idle"],
                    ]
                )
    finally:
        process.terminate()
        process.wait()
    print(table(["work", "client", "idle", "peak", "peak - idle", "end - idle"], rows, left=2))
    print(f"\npeak measured by: {', '.join(sorted(methods))}")
    print(f"({time.perf_counter() - started:.0f} s real)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        scenario, url, directory, waiting = sys.argv[2:6]
        figures = asyncio.run(child(scenario, url, Path(directory), int(waiting)))
        print(json.dumps(figures))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 waiting scans")
    parser.add_argument("--waiting", type=int, default=10_000, help="scans waiting at once")
    main(parser.parse_args())
