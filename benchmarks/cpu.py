"""CPU per request: our client against bare aiohttp, and what one scheduling decision costs.

    python benchmarks/cpu.py [--requests 2000] [--concurrency 20] [--rounds 7] [--waiting 50000]

(a) Client CPU per request (this process's user + system time, ``time.process_time``),
    against the emulator in another process pinned to another core (rate limits off, scans
    done at once): a result read, and a scan POST of a one-page PDF held in memory. Ours
    (``get_result``, ``scan(FileContent(...))``, both limits ``RateLimit.unlimited()``) next to
    bare aiohttp doing the same requests (``session.get`` / a ``FormData`` with the bytes, and
    the JSON read). ``concurrency`` requests at once. The two sides take turns, ``--rounds``
    rounds each (raw, ours, raw, ours, ...: a neighbour's load falls on both alike), and the
    median round of each side is reported with the ratio of the medians; ``spread`` is the
    lowest and highest ratio of a round of ours to the raw round beside it.
(b) The poll scheduler with ``--waiting`` scans watched: CPU per decision (pick the next scan,
    then schedule its next read, as a "still running" answer does), cold (nothing learned) and
    learned; and ``DurationModel.observe`` per finished scan. No I/O: the picks are called
    directly.
(c) Memory of ``RateLimit(n).build()`` for n up to 10**9 (``tracemalloc``), and CPU per
    acquire + release with 100,000 slots cooling.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import time
import tracemalloc
from collections.abc import Awaitable, Callable

import aiohttp
from _common import header, pdf_bytes, table
from emulator_throughput import start_emulator

from imagetwin_async import FileContent, ImagetwinClient, RateLimit, ScanPending, ScanResult
from imagetwin_async._polling import DurationModel, PollScheduler, _Watch

# ---- (a) client CPU per request ---------------------------------------------------------


async def cpu_per_request(
    requests: int, concurrency: int, one: Callable[[], Awaitable[object]]
) -> float:
    """Microseconds of this process's CPU per request, ``concurrency`` at once."""
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await one()

    await one()  # warm: connections, lazy imports
    start = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - start) / requests * 1e6


def padded_pdf_bytes(size: int) -> bytes:
    """A one-page PDF of ``size`` bytes, the size of a typical short paper's (a small PDF, a
    run of padding where images would be, then its trailer again; readers start at the end)."""
    data = pdf_bytes(2)
    tail = b"\n" + data[data.rindex(b"startxref") :]
    return data + b" " * (size - len(data) - len(tail)) + tail


async def client_cpu(url: str, requests: int, concurrency: int, rounds: int) -> list[list[object]]:
    pdf = pdf_bytes(1)
    paper = padded_pdf_bytes(100_000)
    headers = {"Authorization": "Bearer test-key"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with (
        aiohttp.ClientSession(connector=connector, headers=headers) as http,
        ImagetwinClient(
            "test-key",
            base_url=url,
            scan_limit=RateLimit.unlimited(),
            result_limit=RateLimit.unlimited(),
        ) as client,
    ):
        scan_id = (await client.scan(FileContent("p.pdf", pdf))).scan_id

        async def raw_read() -> object:
            async with http.get(f"{url}/result/{scan_id}") as response:
                return await response.json()

        async def ours_read() -> object:
            return await client.get_result(scan_id)

        async def raw_post() -> object:
            form = aiohttp.FormData()
            form.add_field("file", pdf, filename="p.pdf", content_type="application/pdf")
            async with http.post(f"{url}/scan", data=form) as response:
                return await response.json()

        async def ours_post() -> object:
            return await client.scan(FileContent("p.pdf", pdf))

        async def raw_paper() -> object:
            form = aiohttp.FormData()
            form.add_field("file", paper, filename="p.pdf", content_type="application/pdf")
            async with http.post(f"{url}/scan", data=form) as response:
                return await response.json()

        async def ours_paper() -> object:
            return await client.scan(FileContent("p.pdf", paper))

        rows: list[list[object]] = []
        for label, raw, ours, target in (
            ("GET /result (done)", raw_read, ours_read, 1.2),
            (f"POST /scan from bytes ({len(pdf)} B PDF)", raw_post, ours_post, 1.5),
            (f"POST /scan from bytes ({len(paper) // 1000} kB PDF)", raw_paper, ours_paper, 1.5),
        ):
            raws: list[float] = []
            ourses: list[float] = []
            for _ in range(rounds):  # interleaved: both sides see the same neighbours
                raws.append(await cpu_per_request(requests, concurrency, raw))
                ourses.append(await cpu_per_request(requests, concurrency, ours))
            raw_us, ours_us = statistics.median(raws), statistics.median(ourses)
            ratios = sorted(o / r for r, o in zip(raws, ourses, strict=True))
            rows.append(
                [
                    label,
                    raw_us,
                    ours_us,
                    ours_us - raw_us,
                    f"{ours_us / raw_us:.2f}",
                    f"{ratios[0]:.2f}-{ratios[-1]:.2f}",
                    target,
                ]
            )
        return rows


# ---- (b) scheduling decisions -------------------------------------------------------------


def _known_model() -> DurationModel:
    rng = random.Random(1)
    model = DurationModel()
    for _ in range(200):
        d = rng.lognormvariate(math.log(60.0), 0.5)
        model.observe(d * 0.8, d * 1.1)
    return model


async def decisions(waiting: int, learned: bool, picks: int) -> float:
    """Microseconds per decision: pick the next due scan, then schedule its next read."""

    async def never(scan_id: str) -> ScanResult | ScanPending:
        return ScanPending(scan_id)

    # No longest gap, so every pick weighs the candidates (a scan the model cannot score,
    # overdue by a whole max_poll_interval, is taken at once, which costs less).
    scheduler = PollScheduler(
        never, model=_known_model() if learned else None, max_poll_interval=math.inf
    )
    loop = asyncio.get_running_loop()
    rng = random.Random(2)
    start = loop.time()
    for i in range(waiting):
        scan_id = f"s{i}"
        scheduler.note_started(scan_id)
        scheduler._started[scan_id] = (start - rng.uniform(0, 600), None)
        scheduler._watch(scan_id)
    assert scheduler._task is not None
    scheduler._task.cancel()  # we drive the picks ourselves
    now = start + 3600.0  # every scan is due: the heaviest case
    cpu = time.process_time()
    for _ in range(picks):
        watch = scheduler._pick(now)
        assert isinstance(watch, _Watch)
        watch.last_read = watch.seen_running = now  # a "still running" answer
        scheduler._schedule(watch, now)
        now += 1e-3
    per = (time.process_time() - cpu) / picks * 1e6
    await scheduler.close()
    return per


def observe_cost(n: int) -> float:
    rng = random.Random(3)
    spans = []
    for _ in range(n):
        d = rng.lognormvariate(math.log(60.0), 0.5)
        spans.append((d * 0.8, d * 1.1))
    model = DurationModel()
    cpu = time.process_time()
    for low, high in spans:
        model.observe(low, high)
    return (time.process_time() - cpu) / n * 1e6


# ---- (c) limiter ----------------------------------------------------------------------------


def limiter_memory(requests: int) -> int:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        limiter = RateLimit(requests).build(clock=lambda: 0.0)
        size = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    del limiter
    return size


async def acquire_cost(slots: int, cooling: int) -> float:
    clock = [0.0]
    limiter = RateLimit(slots, per=1e9).build(clock=lambda: clock[0])
    for _ in range(cooling):  # these stay cooling: per is huge
        (await limiter.acquire(block=False)).release()
    n = 20_000
    cpu = time.process_time()
    for _ in range(n):
        (await limiter.acquire(block=False)).release()
    return (time.process_time() - cpu) / n * 1e6


def main(args: argparse.Namespace) -> None:
    header(
        "CPU: our client against bare aiohttp, scheduling decisions, limiter cost",
        [
            "CPU: this process's user + system time (time.process_time), not wall time",
            f"(a) {args.concurrency} requests at once, {args.requests} per round, "
            f"{args.rounds} interleaved rounds per side, medians; emulator in another process",
        ],
    )
    process, url = start_emulator()
    try:
        rows = asyncio.run(client_cpu(url, args.requests, args.concurrency, args.rounds))
    finally:
        process.terminate()
        process.wait()
    print("(a) client CPU per request, microseconds")
    print(
        table(["request", "aiohttp us", "ours us", "extra us", "ratio", "spread", "target"], rows)
    )
    if args.only_requests:
        return
    print()
    b_rows: list[list[object]] = []
    for waiting in sorted({1_000, args.waiting}):
        for learned in (False, True):
            # Fewer picks than scans: every pick finds a due scan (each goes back with a gap).
            per = asyncio.run(decisions(waiting, learned, min(args.picks, waiting // 2)))
            b_rows.append([waiting, "learned" if learned else "cold", per, 20.0])
    print("(b) one scheduling decision (pick + schedule), every scan due, microseconds")
    print(table(["waiting", "model", "us / decision", "target"], b_rows))
    print(f"DurationModel.observe: {observe_cost(5_000):.1f} us per finished scan (window 200)")
    print()
    c_rows: list[list[object]] = [
        [f"RateLimit({n:.0e}).build()", limiter_memory(n)] for n in (20, 10**6, 10**9)
    ]
    print("(c) limiter")
    print(table(["what", "bytes allocated"], c_rows))
    for cooling in (0, 100_000):
        per = asyncio.run(acquire_cost(10**6, cooling))
        print(f"acquire + release, 10**6 slots, {cooling:,} cooling: {per:.2f} us")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--waiting", type=int, default=50_000)
    parser.add_argument("--picks", type=int, default=20_000)
    parser.add_argument("--only-requests", action="store_true", help="(a) only")
    main(parser.parse_args())
