"""One fleet worker as its own process, so a test can SIGKILL or SIGSTOP it.

    python -m tests._fleet_worker BASE_URL API_KEY REDIS_URL PREFIX LEASE SKEW STATS [SCAN...]

Attaches a ``Fleet`` (``leader_lease=LEASE``) to a client of the emulator at ``BASE_URL`` and
waits for each ``SCAN`` (seen to start now). ``SKEW`` seconds are added to this process's wall
clock (``time.time``, ``datetime.now``: a pod whose clock is off; the monotonic clock is
untouched, as on a real host). Prints "ready" once attached, and rewrites ``STATS`` (JSON: the
fleet's counters, the scans answered, when each API read was sent by ``time.monotonic()``,
one clock for every process of the host) every 20 ms.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import time_machine

from imagetwin_async import ImagetwinClient, RateLimit
from imagetwin_async._polling import PollFn
from imagetwin_async.fleet import Fleet

READS_AT: list[float] = []  # time.monotonic() (one clock for every process on the host)


def timed(read: PollFn) -> PollFn:
    """The API read, noting when each one is sent."""

    async def read_now(scan_id: str) -> Any:
        READS_AT.append(time.monotonic())
        return await read(scan_id)

    return read_now


async def main(
    base_url: str,
    key: str,
    redis_url: str,
    prefix: str,
    lease: float,
    stats: Path,
    scans: list[str],
) -> None:
    client = ImagetwinClient(
        key,
        base_url=base_url,
        scan_limit=RateLimit(20, per=1.0),
        result_limit=RateLimit(60, per=1.0),
        poll_interval=0.05,
        max_poll_interval=0.2,
    )
    client.scheduler.wrap_poll(timed)  # beneath the fleet's: only reads that go out
    async with (
        client,
        Fleet.from_url(redis_url, key, prefix=prefix, leader_lease=lease, waiter_ttl=3.0) as fleet,
        fleet.attach(client),
    ):
        answered: list[str] = []

        async def wait(scan_id: str) -> None:
            await client.wait_for_result(scan_id)
            answered.append(scan_id)

        for scan_id in scans:
            client.scheduler.note_started(scan_id)
        waits = [asyncio.create_task(wait(s)) for s in scans]
        print("ready", flush=True)
        while True:
            state = {
                "stats": attrs.asdict(fleet.stats),
                "answered": answered,
                "reads_at": READS_AT,
                "pid": os.getpid(),
            }
            stats.with_suffix(".tmp").write_text(json.dumps(state))
            stats.with_suffix(".tmp").replace(stats)
            await asyncio.sleep(0.02)
        await asyncio.gather(*waits)  # pragma: no cover - killed before


if __name__ == "__main__":
    base_url, key, redis_url, prefix, lease, skew, stats, *scans = sys.argv[1:]
    time_machine.travel(time.time() + float(skew), tick=True).start()
    asyncio.run(main(base_url, key, redis_url, prefix, float(lease), Path(stats), scans))
