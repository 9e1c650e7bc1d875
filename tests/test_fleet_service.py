"""The example service under `uvicorn --workers 3` with Redis: real processes, real callbacks.

The emulator's callback for each scan lands on whichever worker the kernel hands the
connection to; the upload's handler (``?wait=``) must get its result at once all the same, with
one result read per scan, and a worker SIGKILLed mid-run must not stop the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from imagetwin_async.emulator import Endpoint, ThreadedEmulator
from imagetwin_async.redis import limiter_key

from ._files import write_pdf

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
# A new connection per request, so the kernel spreads them over the workers as it would
# spread separate clients' (keep-alive would pin this client to one worker).
FRESH = httpx.Limits(max_keepalive_connections=0)
SPEED = 30.0  # a 60 s fallback poll lasts 2 s: a callback that misses its waiter shows


@contextlib.contextmanager
def fleet_service(redis_url: str, workers: int) -> Iterator[tuple[ThreadedEmulator, str]]:
    api_key = f"sk-fleet-test-{uuid.uuid4().hex}"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with ThreadedEmulator(speed=SPEED, processing_time=30.0, api_keys=(api_key,)) as emu:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "IMAGETWIN_API_KEY": api_key,
            "IMAGETWIN_BASE_URL": emu.url,
            "PUBLIC_URL": f"http://127.0.0.1:{port}",
            "IMAGETWIN_CALLBACK_TOKEN": "t" * 32,
            "IMAGETWIN_REDIS_URL": redis_url,
            "IMAGETWIN_EMULATOR_SPEED": str(SPEED),
        }
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "examples.fastapi_service.app:create_app"),
                *("--factory", "--workers", str(workers), "--port", str(port)),
                *("--log-level", "warning"),
            ],
            cwd=ROOT,
            env=env,
        )
        try:
            yield emu, f"http://127.0.0.1:{port}"
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            client = redis.Redis.from_url(redis_url)
            for group in ("scan", "result", "fleet"):
                stale = list(client.scan_iter(match=f"{limiter_key(api_key, group)}*"))
                if stale:
                    client.delete(*stale)
            client.close()


async def workers_up(http: httpx.AsyncClient, workers: int) -> set[int]:
    pids: set[int] = set()
    async with asyncio.timeout(60):
        while len(pids) < workers:
            with contextlib.suppress(httpx.HTTPError):
                pids.add((await http.get("/status")).json()["pid"])
            await asyncio.sleep(0.02)
    return pids


async def upload(http: httpx.AsyncClient, path: Path) -> dict[str, Any]:
    while True:
        response = await http.post(
            "/manuscripts",
            params={"wait": 30},
            files={"manuscript": (path.name, path.read_bytes(), "application/pdf")},
        )
        if response.status_code != 429:  # the service's own back-pressure: try again
            answer: dict[str, Any] = response.json()
            answer["at"] = time.monotonic()
            return answer
        await asyncio.sleep(0.1)


def papers(tmp_path: Path, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        path = write_pdf(tmp_path / f"paper{i}.pdf", pages=1)
        with path.open("ab") as out:
            out.write(f"% {uuid.uuid4().hex}\n".encode())
        paths.append(path)
    return paths


def test_three_workers_every_callback_reaches_its_waiter(redis_url: str, tmp_path: Path) -> None:
    async def run(emu: ThreadedEmulator, url: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=FRESH) as http:
            await workers_up(http, 3)
            return list(await asyncio.gather(*(upload(http, p) for p in papers(tmp_path, 12))))

    with fleet_service(redis_url, 3) as (emu, url):
        answers = asyncio.run(run(emu, url))

        def late_and_reads(e: Any) -> tuple[list[float], int, int]:
            now_emulated, now_real = e.clock.now(), time.monotonic()
            late = [
                a["at"] - (now_real - (now_emulated - e.scans[a["scan_id"]].ends_at) / SPEED)
                for a in answers
            ]
            reads = sum(1 for r in e.requests if r.endpoint == Endpoint.RESULT)
            return late, reads, sum(e.counters.rate_limited.values())

        late, reads, throttled = emu.call(late_and_reads)
    assert [a["status"] for a in answers] == ["finished"] * 12
    assert max(late) < 1.0  # the fallback poll would come 2 s after the scan started
    assert reads == 12  # one read per scan, fleet-wide
    assert throttled == 0


def test_a_worker_sigkilled_mid_run_does_not_stop_the_others(
    redis_url: str, tmp_path: Path
) -> None:
    async def run(url: str) -> tuple[list[Any], int]:
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=FRESH) as http:
            victim = min(await workers_up(http, 3))
            files = papers(tmp_path, 12)
            first = [asyncio.create_task(upload(http, p)) for p in files[:6]]
            await asyncio.sleep(0.3)
            os.kill(victim, signal.SIGKILL)
            rest = [asyncio.create_task(upload(http, p)) for p in files[6:]]
            done = await asyncio.gather(*first, *rest, return_exceptions=True)
            return done, victim

    with fleet_service(redis_url, 3) as (emu, url):
        outcomes, _ = asyncio.run(run(url))
        billed = emu.call(lambda e: e.counters.scans_billed)
    answered = [o for o in outcomes if isinstance(o, dict)]
    lost = [o for o in outcomes if not isinstance(o, dict)]
    assert all(isinstance(o, httpx.HTTPError) for o in lost)  # held by the killed worker
    assert len(lost) <= 6  # only uploads that worker held when it died
    assert {a["status"] for a in answered} == {"finished"}
    assert len(answered) <= billed <= len(outcomes)  # never a scan paid twice
    assert len({a["scan_id"] for a in answered}) == len(answered)
