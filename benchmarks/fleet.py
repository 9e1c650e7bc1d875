"""The example service as a fleet: uvicorn with 1 and with 4 workers, one API key, Redis.

    flock /tmp/imagetwin-heavy.lock .venv/bin/python benchmarks/fleet.py \\
        [--redis-url redis://127.0.0.1:6379/15] [--uploads 100] [--speed 20] [--kill]

An emulator (a thread of this process, the vendor's limits, ``--speed`` times faster, scans
taking ``--processing-time`` emulated seconds, callbacks on) serves ``examples.fastapi_service``
run by ``uvicorn --workers N`` with ``IMAGETWIN_REDIS_URL`` and one shared callback token. The
uploads arrive at the full scan rate (20 an emulated minute), each ``POST /manuscripts?wait=``
held by its handler until the scan's result is in; the load balancer (the kernel, for uvicorn's
shared socket) picks the worker, and the emulator's callback lands on any worker.

Per run, from the emulator's records and the answers:
- callbacks reaching the waiting worker: scans answered within half the fallback poll interval
  of their end (a callback that missed its waiter leaves the scan to the fallback poll, a whole
  ``max_poll_interval`` later), and the workers' own hint counters;
- result reads per scan (GET /result received by the emulator / scans), API 429s, and the
  service's own 429s (``RateLimitBusy``: no scan slot free for that upload, as the limiter keeps
  a margin after each answer; the uploader retries at the emulator's pace), and how many
  uploads saw one;
- the median time from a scan's end to its handler's answer, in real milliseconds.

``--kill`` adds runs with 4 workers in which the fleet's scheduler (the worker holding the
lease) is SIGKILLed halfway: the uploads it held are lost with it (their handler died), every
other upload must still get its answer. Reported: seconds from the SIGKILL until a new term
holds the lease in Redis ("elected"), and until the first result read of the API after it
("read", made by the new scheduler; the emulator's request log).

``--no-callbacks`` adds 1- and 4-worker runs that only poll (and, with ``--kill``, a 4-worker
one whose scheduler is killed): one process waiting for every scan is the baseline of the
fleet's one schedule.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis
import redis.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, pdf_bytes

from imagetwin_async.emulator import Endpoint, ThreadedEmulator
from imagetwin_async.redis import limiter_key

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-" + "x" * 32
SCANS_PER_MINUTE = 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for_workers(http: httpx.AsyncClient, workers: int, timeout: float = 60.0) -> None:
    pids: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(pids) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(pids)} of {workers} workers answered")
        with contextlib.suppress(httpx.HTTPError):
            pids.add((await http.get("/status")).json()["pid"])
        await asyncio.sleep(0.02)


async def worker_stats(http: httpx.AsyncClient, workers: int) -> dict[int, dict[str, Any]]:
    """Each live worker's /status (the kernel spreads the requests; ask until all answered)."""
    seen: dict[int, dict[str, Any]] = {}
    for _ in range(50 * workers):
        with contextlib.suppress(httpx.HTTPError):
            status = (await http.get("/status")).json()
            seen[status["pid"]] = status
        if len(seen) >= workers:
            break
    return seen


async def upload(
    http: httpx.AsyncClient, index: int, tag: str, retry: float, out: dict[str, Any]
) -> None:
    body = pdf_bytes(hash((tag, index)) & 0xFFFFFFF)
    while True:
        try:
            response = await http.post(
                "/manuscripts",
                params={"wait": 60.0},
                files={"manuscript": (f"paper{index}.pdf", body, "application/pdf")},
            )
        except httpx.HTTPError as exc:  # the worker holding it died
            out["lost"] = type(exc).__name__
            return
        if response.status_code == 429:
            out["busy"] = out.get("busy", 0) + 1
            # Its Retry-After is whole seconds (of the real API); retry at the emulator's pace.
            await asyncio.sleep(retry)
            continue
        out.update(response.json())
        out["answered"] = time.monotonic()
        out["http"] = response.status_code
        return


async def drive(
    args: argparse.Namespace, workers: int, threaded: ThreadedEmulator, kill: bool, callbacks: bool
) -> dict[str, Any]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "IMAGETWIN_API_KEY": threaded.api_key,
        "IMAGETWIN_BASE_URL": threaded.url,
        "PUBLIC_URL": f"http://127.0.0.1:{port}" if callbacks else "",
        "IMAGETWIN_CALLBACK_TOKEN": TOKEN,
        "IMAGETWIN_REDIS_URL": args.redis_url,
        "IMAGETWIN_EMULATOR_SPEED": str(args.speed),
    }
    server = subprocess.Popen(  # noqa: ASYNC220 - started once, before the measured part
        [
            sys.executable,
            "-m",
            "uvicorn",
            "examples.fastapi_service.app:create_app",
            "--factory",
            "--workers",
            str(workers),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=ROOT,
        env=env,
    )
    uploads: list[dict[str, Any]] = [{} for _ in range(args.uploads)]
    killed: int | None = None
    takeover: dict[str, float] = {}
    leader_key = limiter_key(threaded.api_key, "fleet") + ":leader"
    try:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=0)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=600.0, limits=limits
        ) as http:
            await wait_for_workers(http, workers)
            gap = 60.0 / SCANS_PER_MINUTE / args.speed  # the full scan rate, in real seconds
            tag = uuid.uuid4().hex
            start = time.monotonic()
            tasks = []
            for i in range(args.uploads):
                await asyncio.sleep(max(0.0, start + i * gap - time.monotonic()))
                if kill and i == args.uploads // 2:
                    killed = await kill_scheduler(http, workers, args.redis_url, leader_key)
                    takeover_watch = asyncio.create_task(
                        watch_election(args.redis_url, leader_key, killed, takeover)
                    )
                tasks.append(asyncio.create_task(upload(http, i, tag, gap / 2, uploads[i])))
            await asyncio.gather(*tasks)
            if kill:
                await takeover_watch
            stats = await worker_stats(http, workers)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return {"uploads": uploads, "stats": stats, "killed": killed, "takeover": takeover}


async def kill_scheduler(
    http: httpx.AsyncClient, workers: int, redis_url: str, leader_key: str
) -> int:
    """SIGKILL the worker that schedules the fleet's polls (the lease holder); its pid."""
    statuses = await worker_stats(http, workers)
    leaders = [pid for pid, s in statuses.items() if (s.get("fleet") or {}).get("leading")]
    victim = leaders[0] if leaders else random.choice(sorted(statuses))
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        holder = await client.get(leader_key)
    finally:
        await client.aclose()
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    KILLS[victim] = (killed_at, holder)
    return victim


KILLS: dict[int, tuple[float, bytes | str | None]] = {}


async def watch_election(
    redis_url: str, leader_key: str, victim: int, out: dict[str, float]
) -> None:
    """Note when a new term (another token) holds the lease after the SIGKILL."""
    killed_at, holder = KILLS[victim]
    out["killed_at"] = killed_at
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        async with asyncio.timeout(60.0):
            while True:
                token = await client.get(leader_key)
                if token is not None and token != holder:
                    out["elected_at"] = time.monotonic()
                    return
                await asyncio.sleep(0.005)
    finally:
        await client.aclose()


def measure(
    args: argparse.Namespace, workers: int, kill: bool = False, callbacks: bool = True
) -> dict[str, Any]:
    api_key = f"sk-bench-{uuid.uuid4().hex}"
    with ThreadedEmulator(
        speed=args.speed, processing_time=args.processing_time, api_keys=(api_key,)
    ) as threaded:
        run = asyncio.run(drive(args, workers, threaded, kill, callbacks))

        def snapshot(emu: Any) -> dict[str, Any]:
            now_emulated, now_real = emu.clock.now(), time.monotonic()
            reads: dict[str, int] = {}
            read_times = []
            for r in emu.requests:
                if r.endpoint == Endpoint.RESULT and r.scan_id:
                    reads[r.scan_id] = reads.get(r.scan_id, 0) + 1
                    read_times.append(now_real - (now_emulated - r.time) / args.speed)
            return {
                "end_real": {
                    sid: now_real - (now_emulated - s.ends_at) / args.speed
                    for sid, s in emu.scans.items()
                    if s.billed
                },
                "reads": reads,
                "read_times": sorted(read_times),
                "api_429": sum(emu.counters.rate_limited.values()),
                "callbacks": emu.counters.callbacks_delivered,
                "billed": emu.counters.scans_billed,
            }

        emu = threaded.call(snapshot)
    _forget(args.redis_url, api_key)
    uploads = run["uploads"]
    answered = [u for u in uploads if u.get("http") == 200 and u.get("status") == "finished"]
    delays = [u["answered"] - emu["end_real"][u["scan_id"]] for u in answered]
    fallback = 60.0 / args.speed
    prompt = sum(1 for d in delays if d < fallback / 2)
    hints = sum(s["polling"]["hints"] for s in run["stats"].values())
    scans = len(emu["end_real"])
    elected = read = float("nan")
    takeover = run["takeover"]
    if "elected_at" in takeover:
        elected = takeover["elected_at"] - takeover["killed_at"]
        after = [t for t in emu["read_times"] if t >= takeover["elected_at"]]
        read = after[0] - takeover["killed_at"] if after else float("nan")
    return {
        "workers": workers,
        "callbacks_on": callbacks,
        "mean_ms": 1000 * statistics.fmean(delays) if delays else float("nan"),
        "killed": run["killed"] is not None,
        "uploads": len(uploads),
        "answered": len(answered),
        "lost": sum(1 for u in uploads if "lost" in u),
        # Uploads whose handler lived and still got no result: the bar is 0.
        "unanswered": len(uploads) - len(answered) - sum(1 for u in uploads if "lost" in u),
        "elected_s": elected,
        "read_s": read,
        "billed": emu["billed"],
        "callbacks": emu["callbacks"],
        "prompt": prompt,
        "hints": hints,
        "reads_per_scan": sum(emu["reads"].values()) / max(scans, 1),
        "api_429": emu["api_429"],
        "service_429": sum(u.get("busy", 0) for u in uploads),
        "uploads_refused": sum(1 for u in uploads if u.get("busy")),
        "median_ms": 1000 * statistics.median(delays) if delays else float("nan"),
        "p95_ms": 1000 * sorted(delays)[int(0.95 * (len(delays) - 1))] if delays else float("nan"),
    }


def _forget(redis_url: str, api_key: str) -> None:
    client = redis.Redis.from_url(redis_url)
    for group in ("scan", "result", "fleet", "durations"):
        stale = list(client.scan_iter(match=f"{limiter_key(api_key, group)}*"))
        if stale:
            client.delete(*stale)
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--redis-url", default=os.environ.get("IMAGETWIN_REDIS_URL", "redis://127.0.0.1:6379/15")
    )
    parser.add_argument("--uploads", type=int, default=100)
    parser.add_argument("--speed", type=float, default=20.0)
    parser.add_argument("--processing-time", type=float, default=30.0)
    parser.add_argument("--kill", action="store_true", help="add a run with a worker SIGKILLed")
    parser.add_argument(
        "--no-callbacks", action="store_true", help="add 1- and 4-worker runs that only poll"
    )
    args = parser.parse_args()
    runs = [measure(args, 1), measure(args, 4)]
    if args.kill:
        runs.append(measure(args, 4, kill=True))
    polled = []
    if args.no_callbacks:
        polled = [measure(args, 1, callbacks=False), measure(args, 4, callbacks=False)]
        if args.kill:
            polled.append(measure(args, 4, kill=True, callbacks=False))
    one = runs[0]["median_ms"]
    print(f"# {command_line()}")
    print(
        f"# speed x{args.speed:g}, scans {args.processing_time:g} emulated s, uploads at "
        f"{SCANS_PER_MINUTE}/emulated min, fallback poll {60 / args.speed:.1f} s real"
    )
    header = (
        f"{'workers':>8} {'answered':>9} {'lost':>5} {'billed':>7} {'callbacks':>9} "
        f"{'to waiter':>10} {'hints':>6} {'reads/scan':>10} {'API 429':>8} {'svc 429':>12} "
        f"{'median ms':>10} {'p95 ms':>8} {'vs 1':>6}"
    )
    print(header)
    for r in runs:
        label = f"{r['workers']}{' kill' if r['killed'] else ''}"
        reached = 100.0 * r["prompt"] / max(r["answered"], 1)
        print(
            f"{label:>8} {r['answered']:>4}/{r['uploads']:<4} {r['lost']:>5} {r['billed']:>7} "
            f"{r['callbacks']:>9} {reached:>9.1f}% {r['hints']:>6} {r['reads_per_scan']:>10.3f} "
            f"{r['api_429']:>8} {r['service_429']:>5} ({r['uploads_refused']:>3} up) "
            f"{r['median_ms']:>10.1f} "
            f"{r['p95_ms']:>8.1f} {r['median_ms'] / one:>5.2f}x"
        )
    if polled:
        print("# without callbacks (polling only): detection delay = scan end to answer")
        print(
            f"{'workers':>8} {'answered':>9} {'lost':>5} {'unanswered':>10} {'reads/scan':>10} "
            f"{'API 429':>8} {'mean ms':>9} {'median ms':>10} {'mean vs 1':>9} {'reads vs 1':>10}"
        )
        for r in polled:
            label = f"{r['workers']}{' kill' if r['killed'] else ''}"
            print(
                f"{label:>8} {r['answered']:>4}/{r['uploads']:<4} {r['lost']:>5} "
                f"{r['unanswered']:>10} "
                f"{r['reads_per_scan']:>10.3f} {r['api_429']:>8} {r['mean_ms']:>9.1f} "
                f"{r['median_ms']:>10.1f} {r['mean_ms'] / polled[0]['mean_ms']:>8.2f}x "
                f"{r['reads_per_scan'] / polled[0]['reads_per_scan']:>9.2f}x"
            )
    killed = [r for r in runs + polled if r["killed"]]
    if killed:
        print("# the fleet's scheduler SIGKILLed: seconds until a new term holds the lease, and")
        print("# until the API's first result read after it (by the new scheduler)")
        print(f"{'run':>12} {'elected s':>10} {'read s':>8} {'unanswered':>10}")
        for r in killed:
            label = "callbacks" if r["callbacks_on"] else "polling"
            print(f"{label:>12} {r['elected_s']:>10.2f} {r['read_s']:>8.2f} {r['unanswered']:>10}")
    print(json.dumps(runs + polled), file=sys.stderr)


if __name__ == "__main__":
    main()
