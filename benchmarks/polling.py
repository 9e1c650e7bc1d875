"""Polling: how soon a caller has a finished scan's result, within 60 result reads a minute.

    python benchmarks/polling.py [--quick] [--speed 30] [--waiting 100 1000] [--minutes 30]
        [--seed 0] [--seeds 5] [--simulated-only]

(a) Many scans waiting at once. K scans start together on an in-process emulator (log-normal
    processing times; the scans are registered on the emulator directly, so none waits for
    the scan limit), and every one is waited for at once: by our client, told of each start
    (``scheduler.note_started``, as ``scan`` does), by our client given the ids only (as after
    a restart), and by the naive client. Reported: the delay from a scan's end (the
    emulator's ``ends_at``) to the caller having its result, against the round-robin figure
    K/(2R) for R = 1 read a second; reads per scan; 429s.
(b) A realistic stream: a document arrives every 3 s (the full scan rate, 20 a minute) for
    ``--minutes`` emulated minutes, each is scanned and waited for (processing log-normal
    around a minute). Ours against the naive client polling every N s (several N).
(c) A short job: the same for 6 minutes (120 scans), ours cold (a fresh client) and warm
    (a ``FileModelStore`` that a previous run of the same job, on another emulator seed,
    filled), against the naive client.
(d) The same cases in simulated time (``_polling_sim``: the real scheduler and limiter on a
    looptime loop, a sliding-log server), averaged over ``--seeds`` seeds: no noise from a
    busy machine, and the CPU seconds the runs took.

Every run is a process of its own with its own emulator (sliding-window limits, 20 scans and
60 reads a minute), all at once. Times are emulated seconds; ``--speed`` emulated seconds pass
per real second on both sides.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, cast

import _polling_sim as sim
from _common import NaiveClient, header, mean, percentile, table, write_pdfs

from imagetwin_async import FileModelStore, ImagetwinClient
from imagetwin_async.emulator import Emulator, Endpoint, LogNormalTime, UploadedFile
from imagetwin_async.emulator._multipart import Upload

PROCESSING = LogNormalTime(median=60.0, sigma=0.5)
READS_PER_SECOND = 1.0  # R: 60 result reads a minute
WARM_UP = 4.0  # real seconds for the workers to start before the first run
STAGGER = 0.2  # real seconds between run starts


def emulator(speed: float, seed: int) -> Emulator:
    return Emulator(
        speed=speed,
        rate_limit_algorithm="sliding",  # the vendor's limits: 20 scans, 60 reads a minute
        processing_time=PROCESSING,
        seed=seed,
    )


def start_scans(emu: Emulator, k: int) -> list[str]:
    """Start ``k`` scans on the emulator at this instant, as if K POSTs had just landed
    (directly: the emulator's scan limit is not involved)."""
    ids = []
    for i in range(k):
        digest = hashlib.sha256(f"paper {i}".encode()).hexdigest()
        upload = Upload(files=[UploadedFile(f"paper{i}.pdf", 1024, digest, pages=1)])
        ids.append(emu.start_scan(emu.api_key, Endpoint.SCAN, upload).scan_id)
    return ids


def result_reads(emu: Emulator) -> Counter[str | None]:
    return Counter(r.scan_id for r in emu.requests if r.endpoint == Endpoint.RESULT)


async def timed(emu: Emulator, scan_id: str, wait: Awaitable[Any], got: dict[str, float]) -> None:
    await wait
    got[scan_id] = emu.clock.now()


def delays(emu: Emulator, got: dict[str, float]) -> list[float]:
    return [at - emu.scans[scan_id].ends_at for scan_id, at in got.items()]


# ---- (a) K scans waiting at once ---------------------------------------------------------


async def waiting_at_once(k: int, who: str, speed: float, poll_every: float) -> list[object]:
    got: dict[str, float] = {}
    async with emulator(speed, seed=k) as emu:
        guard = 20 * (k / READS_PER_SECOND + 600) / speed
        if who == "naive":
            async with NaiveClient(emu.url, emu.api_key, speed=speed, poll_every=poll_every) as nv:
                ids = start_scans(emu, k)
                async with asyncio.timeout(guard):
                    await asyncio.gather(*(timed(emu, i, nv.wait_for_result(i), got) for i in ids))
        else:
            async with ImagetwinClient(**emu.client_kwargs()) as client:
                ids = start_scans(emu, k)
                if who == "ours":
                    for scan_id in ids:
                        client.scheduler.note_started(scan_id)
                async with asyncio.timeout(guard):
                    await asyncio.gather(
                        *(timed(emu, i, client.wait_for_result(i), got) for i in ids)
                    )
        reads = result_reads(emu)
        limited = emu.counters.rate_limited.get("result", 0)
        finished = max(got.values())
    label = {"ours": "ours", "ids": "ours, ids only", "naive": f"naive, every {poll_every:g} s"}
    waits = delays(emu, got)
    return [
        k,
        label[who],
        k / (2 * READS_PER_SECOND),
        mean(waits),
        percentile(waits, 95),
        f"{sum(reads.values()) / k:.2f}",
        limited,
        finished / 60.0,
    ]


# ---- (b) a stream at the full scan rate --------------------------------------------------


async def stream(
    minutes: float,
    who: str,
    speed: float,
    poll_every: float,
    paths: list[Path],
    seed: int | None = None,
    store: FileModelStore | None = None,
) -> list[object]:
    n = len(paths)
    got: dict[str, float] = {}
    gap = 3.0 / speed  # real seconds between arrivals

    async def ours_one(client: ImagetwinClient, index: int, path: Path) -> None:
        await asyncio.sleep(index * gap)
        started = await client.scan(path)
        await timed(emu, started.scan_id, client.wait_for_result(started.scan_id), got)

    async def naive_one(naive: NaiveClient, index: int, path: Path) -> None:
        await asyncio.sleep(index * gap)
        scan_id = await naive.scan(path)
        await timed(emu, scan_id, naive.wait_for_result(scan_id), got)

    async with emulator(speed, seed=n if seed is None else seed) as emu:
        guard = 3 * (minutes * 60 + 900) / speed
        async with asyncio.timeout(guard):
            if who.startswith("ours"):
                async with ImagetwinClient(**emu.client_kwargs(), model_store=store) as client:
                    await asyncio.gather(*(ours_one(client, i, p) for i, p in enumerate(paths)))
            else:
                async with NaiveClient(
                    emu.url, emu.api_key, speed=speed, poll_every=poll_every
                ) as naive:
                    await asyncio.gather(*(naive_one(naive, i, p) for i, p in enumerate(paths)))
        reads = result_reads(emu)
        limited = emu.counters.rate_limited
        scans = emu.scans
        # K: scans waiting on average (Little's law: summed waits over the run's length).
        first = min(s.received_at for s in scans.values())
        length = max(got.values()) - first
        waiting = sum(got[i] - scans[i].received_at for i in got) / length
        # Reads after the last scan was submitted: the budget idles more and more then.
        last = max(s.received_at for s in scans.values())
        tail = sum(1 for r in emu.requests if r.endpoint == Endpoint.RESULT and r.time > last)
    waits = delays(emu, got)
    return [
        who if who.startswith("ours") else f"naive, every {poll_every:g} s",
        len(got),
        mean(waits),
        percentile(waits, 50),
        percentile(waits, 95),
        max(waits),
        f"{sum(reads.values()) / n:.2f}",
        f"{tail / n:.2f}",
        limited.get("scan", 0),
        limited.get("result", 0),
        waiting,
        waiting / (2 * READS_PER_SECOND),
    ]


# ---- running ------------------------------------------------------------------------------


def run_job(job: tuple[Any, ...]) -> tuple[str, list[object]]:
    """One run in a worker process; sleeps until its start time first."""
    part, size, who, speed, poll_every, directory, start_at, offset = job
    time.sleep(max(0.0, start_at - time.time()))
    if part == "a":
        return part, asyncio.run(waiting_at_once(size, who, speed, poll_every))
    paths = sorted(Path(directory).glob("*.pdf"))[: int(size * 20)]
    seed = len(paths) + 7919 * offset  # --seed 0: the emulator seeds of earlier runs
    if who == "ours, warm":
        # A previous run of the same job (another seed) fills the store; then the measured one.
        store = FileModelStore(Path(directory) / f"durations-{start_at}.json")
        asyncio.run(stream(size, who, speed, poll_every, paths, seed=10_000 + offset, store=store))
        # Warm for real: the measured run starts from what the store holds.
        kept = len(json.loads(store.path.read_text())["observations"])
        assert kept > 0, "the warm-up run saved nothing"
        row = asyncio.run(stream(size, who, speed, poll_every, paths, seed=seed, store=store))
        row[0] = f"{who} ({kept} kept)"
        return part, row
    return part, asyncio.run(stream(size, who, speed, poll_every, paths, seed=seed))


def simulated(seeds: int, everies: list[float]) -> list[list[object]]:
    """(d): each case on every seed, ours against the best naive interval of that seed."""
    rows: list[list[object]] = []
    cases = [("short job, cold", 120, False), ("short job, warm", 120, True)]
    cases.append(("30-min stream, cold", 600, False))
    # Sized documents (1-40 pages, ~20 s a page): the model told the pages, and not told.
    cases.append(("sized docs, pages known", 120, True))
    cases.append(("sized docs, pages unknown", 120, False))
    for label, n, warm in cases:
        started = time.process_time()
        ratios, ours_means, naive_means, reads, tails, limited = [], [], [], [], [], 0
        docs = label.startswith("sized")
        for seed in range(seeds):
            draw = sim.sized() if docs else sim.lognormal()
            model = sim.warm_model(seed=1000 + seed) if warm and not docs else None
            ours = sim.ours(n, seed=seed, model=model, draw=draw, use_features=warm or not docs)
            _, naive = sim.best_naive(n, everies, seed=seed, draw=draw)
            ratios.append(ours.mean / naive.mean)
            ours_means.append(ours.mean)
            naive_means.append(naive.mean)
            reads.append(ours.reads_per_scan)
            tails.append(ours.tail_reads / ours.scans)
            limited += ours.rejected
        rows.append(
            [
                label,
                seeds,
                mean(ours_means),
                mean(naive_means),
                f"{mean(ratios):.3f}",
                f"{statistics.stdev(ratios):.3f}" if len(ratios) > 1 else "-",
                f"{min(ratios):.2f}-{max(ratios):.2f}",
                f"{mean(reads):.2f}",
                f"{mean(tails):.2f}",
                limited,
                f"{time.process_time() - started:.1f}",
            ]
        )
    return rows


A_COLUMNS = ["K", "client", "K/2R s", "mean s", "p95 s", "reads/scan", "429", "all done min"]
B_COLUMNS = [
    "client",
    "scans",
    "mean s",
    "p50 s",
    "p95 s",
    "max s",
    "reads/scan",
    "after last",
    "429 scan",
    "429 result",
    "K waiting",
    "K/2R s",
]


D_COLUMNS = [
    "case",
    "seeds",
    "ours mean s",
    "naive mean s",
    "ratio",
    "sd",
    "range",
    "reads/scan",
    "after last",
    "429",
    "CPU s",
]


def main(args: argparse.Namespace) -> None:
    waiting: list[int] = [100] if args.quick else args.waiting
    minutes: float = 10.0 if args.quick else args.minutes
    header(
        "Polling: delay from a scan's end to the caller having its result (emulated s)",
        [
            f"speed {args.speed:g}; processing log-normal, median {PROCESSING.median:g} s, "
            f"sigma {PROCESSING.sigma:g}; server: sliding window, 60 result reads / 60 s",
            "ours: ImagetwinClient defaults (first poll 5 s, longest gap 60 s), scaled; "
            "naive: sleep N s, then a read through AsyncLimiter(60, 60), until 200",
            "reads/scan: result requests a scan, 429s included; after last: of them, "
            "those made after the last scan was submitted",
        ],
    )
    if args.simulated_only:
        simulated_table(args)
        return
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        write_pdfs(Path(tmp), int(minutes * 20))
        runs: list[tuple[str, float, str, float]] = [
            ("b", minutes, "ours", 0.0),
            *(("b", minutes, "naive", n) for n in args.naive_every),
            ("c", 6.0, "ours, cold", 0.0),
            ("c", 6.0, "ours, warm", 0.0),
            *(("c", 6.0, "naive", n) for n in args.naive_every),
        ]
        for k in sorted(waiting, reverse=True):
            runs += [("a", k, who, args.poll_every) for who in ("ours", "ids", "naive")]
        start_at = time.time() + WARM_UP
        jobs = [
            (part, size, who, args.speed, every, tmp, start_at + i * STAGGER, args.seed)
            for i, (part, size, who, every) in enumerate(runs)
        ]
        with ProcessPoolExecutor(max_workers=len(jobs)) as pool:
            results = list(pool.map(run_job, jobs))
    a_rows = sorted((row for part, row in results if part == "a"), key=lambda r: r[0])
    b_rows = [row for part, row in results if part == "b"]
    c_rows = [row for part, row in results if part == "c"]
    print(f"(a) K scans waiting at once; naive polls every {args.poll_every:g} s")
    print(table(A_COLUMNS, a_rows, left=2))
    print()
    print(f"(b) a stream: one document every 3 s for {minutes:g} min, each scanned and waited for")
    print(table(B_COLUMNS, b_rows))
    means = [cast(float, row[2]) for row in b_rows]  # ours first, then each naive N
    best = min(range(1, len(b_rows)), key=means.__getitem__)
    ratio = means[0] / means[best]
    print(f"\nours' mean delay / best naive mean delay ({b_rows[best][0]}): {ratio:.2f}")
    print()
    print("(c) a short job: 120 documents, one every 3 s, each scanned and waited for")
    print(table(B_COLUMNS, c_rows))
    c_means = [cast(float, row[2]) for row in c_rows]  # cold, warm, then each naive N
    c_best = min(range(2, len(c_rows)), key=c_means.__getitem__)
    for i, target in ((0, 0.85), (1, 0.70)):
        print(
            f"{c_rows[i][0]}: mean delay / best naive ({c_rows[c_best][0]}): "
            f"{c_means[i] / c_means[c_best]:.2f} (target <= {target})"
        )
    print(f"({time.perf_counter() - started:.0f} s real)")
    if args.seeds:
        print()
        simulated_table(args)


def simulated_table(args: argparse.Namespace) -> None:
    print(
        f"(d) simulated time, {args.seeds} seeds each; naive: the best of every "
        f"{', '.join(f'{e:g}' for e in args.naive_every)} s per seed; ratio: ours / naive"
    )
    print(table(D_COLUMNS, simulated(args.seeds, args.naive_every)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="K = 100 and a 10-minute stream")
    parser.add_argument("--speed", type=float, default=30.0, help="emulated s per real s")
    parser.add_argument("--waiting", type=int, nargs="+", default=[100, 1000], metavar="K")
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the stream")
    parser.add_argument("--seed", type=int, default=0, help="emulator seed offset for (b) and (c)")
    parser.add_argument(
        "--seeds", type=int, default=5, help="seeds per simulated case in (d); 0: skip (d)"
    )
    parser.add_argument(
        "--simulated-only", action="store_true", help="only (d): no emulator, no timing noise"
    )
    parser.add_argument(
        "--poll-every", type=float, default=10.0, help="naive poll interval in (a), s"
    )
    parser.add_argument(
        "--naive-every",
        type=float,
        nargs="+",
        default=[5.0, 10.0, 20.0, 30.0],
        help="naive poll intervals tried in (b), s",
    )
    main(parser.parse_args())
