"""Four worker processes, one API key: a limit shared through Redis against one per process.

    python benchmarks/multiprocess_redis.py [--redis-url redis://127.0.0.1:6379/15]
        [--workers 4] [--scans 200] [--speed 60] [--algorithm sliding]

An emulator (in a thread of this process, its rate limit ``--algorithm``, sped up so the
20-a-minute window lasts ``60 / speed`` real seconds) receives ``--scans`` scan POSTs from
``--workers`` OS processes, each an ``ImagetwinClient`` pushing its share at once. Run 1:
every process uses ``redis_limits`` on one Redis key. Run 2: the same processes, each with its
own in-process ``RateLimit(20)`` (what four uvicorn workers do without Redis).

Figures, from the emulator's receipts: 429s answered, scans accepted, and the rate achieved
as a share of the most the key allows, ``floor((scans - 1) / 20) * window`` over the span from
the first accepted scan to the last. The bar for Redis: 0 429s and at least 97%.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import sys
import tempfile
import uuid
from multiprocessing.synchronize import Barrier
from pathlib import Path

import redis

from imagetwin_async import ImagetwinClient, ImagetwinError, Timings
from imagetwin_async.emulator import ThreadedEmulator
from imagetwin_async.redis import redis_limits

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
    b"\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00"
    b"\x00\x00IEND\xaeB`\x82"
)
REQUESTS, MINUTE = 20, 60.0  # the vendor's scan limit, in emulated seconds


def worker(
    mode: str,
    redis_url: str,
    prefix: str,
    base_url: str,
    api_key: str,
    count: int,
    image: str,
    speed: float,
    start: Barrier,
) -> None:
    asyncio.run(_work(mode, redis_url, prefix, base_url, api_key, count, image, speed, start))


async def _work(
    mode: str,
    redis_url: str,
    prefix: str,
    base_url: str,
    api_key: str,
    count: int,
    image: str,
    speed: float,
    start: Barrier,
) -> None:
    timings = Timings().scaled(speed)  # the vendor's limits, on the emulator's clock
    limits = redis_limits(
        redis_url,
        api_key,
        prefix=prefix,
        scan_limit=timings.scan_limit,
        result_limit=timings.result_limit,
    )
    async with limits:
        client = ImagetwinClient(
            api_key,
            base_url=base_url,
            timings=timings,
            scan_limit=limits.scan if mode == "redis" else None,
            result_limit=limits.result if mode == "redis" else None,
        )
        async with client:
            await limits.scan.refresh()  # connect before the start line, not after it
            await asyncio.to_thread(start.wait)

            async def one() -> None:
                with contextlib.suppress(ImagetwinError):  # counted from the emulator's records
                    await client.scan(image)

            await asyncio.gather(*(one() for _ in range(count)))


def run(
    mode: str, emu: ThreadedEmulator, args: argparse.Namespace, image: str, workers: int
) -> dict[str, float]:
    emu.call(lambda e: e.reset())
    prefix = f"imagetwin-bench-{uuid.uuid4().hex}"
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(workers + 1)
    shares = [args.scans // workers + (i < args.scans % workers) for i in range(workers)]
    processes = [
        context.Process(
            target=worker,
            args=(mode, args.redis_url, prefix, emu.url, emu.api_key, n, image, args.speed, start),
        )
        for n in shares
    ]
    for process in processes:
        process.start()
    start.wait()
    for process in processes:
        process.join()
    client = redis.Redis.from_url(args.redis_url)
    stale = list(client.scan_iter(match=f"{prefix}:*"))
    if stale:
        client.delete(*stale)
    client.close()

    records = emu.call(lambda e: list(e.requests))
    accepted = sorted(r.time for r in records if r.endpoint == "scan" and r.status == 200)
    rejected = sum(1 for r in records if r.endpoint == "scan" and r.status == 429)
    span = (accepted[-1] - accepted[0]) / args.speed if len(accepted) > 1 else math.nan
    floor = (len(accepted) - 1) // REQUESTS * MINUTE / args.speed
    return {
        "429s": rejected,
        "accepted": len(accepted),
        "failed": args.scans - len(accepted),
        "span": span,
        "floor": floor,
        "rate": 100.0 * floor / span if span else math.nan,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--scans", type=int, default=200)
    parser.add_argument("--speed", type=float, default=60.0)
    parser.add_argument(
        "--algorithm", default="sliding", choices=["sliding", "fixed", "token_bucket"]
    )
    args = parser.parse_args()
    try:
        redis.Redis.from_url(args.redis_url, socket_connect_timeout=2).ping()
    except (redis.exceptions.RedisError, OSError) as exc:
        print(f"no Redis at {args.redis_url}: {exc}", file=sys.stderr)
        return 1

    with (
        tempfile.TemporaryDirectory() as tmp,
        ThreadedEmulator(
            speed=args.speed, rate_limit_algorithm=args.algorithm, processing_time=0.0
        ) as emu,
    ):
        image = str(Path(tmp) / "figure.png")
        Path(image).write_bytes(PNG)
        results = {
            f"Redis, {args.workers} processes": run("redis", emu, args, image, args.workers),
            f"in-process, {args.workers} proc.": run("local", emu, args, image, args.workers),
            # What this machine's latencies cost a single, perfectly coordinated process.
            "in-process, 1 process": run("local", emu, args, image, 1),
        }

    window = MINUTE / args.speed
    print(
        f"{args.workers} processes, {args.scans} scans, one API key, {args.algorithm} emulator "
        f"at speed {args.speed:g} (a {REQUESTS}-scan window lasts {window:.2f} s)"
    )
    header = ("limiter", "429s", "accepted", "failed", "span s", "floor s", "rate")
    print("{:<24}{:>6}{:>10}{:>8}{:>9}{:>9}{:>8}".format(*header))
    for name, r in results.items():
        print(
            f"{name:<24}{r['429s']:>6}{r['accepted']:>10}{r['failed']:>8}"
            f"{r['span']:>9.2f}{r['floor']:>9.2f}{r['rate']:>7.1f}%"
        )
    shared = results[f"Redis, {args.workers} processes"]
    ok = shared["429s"] == 0 and shared["accepted"] == args.scans and shared["rate"] >= 97.0
    print("bar (0 429s, all accepted, >= 97%):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
