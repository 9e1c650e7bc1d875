"""A batch with a journal, run as its own process so a test can SIGKILL it anywhere.

    python -m tests._journal_worker BASE_URL API_KEY JOURNAL SKEW JUMP FILE...

``SKEW`` seconds are added to this process's wall clock (``time.time``, ``datetime.now``: a
laptop or VM whose clock is off), and ``JUMP`` more seconds one second into the run (an NTP
step mid-batch); the machine's clock is untouched (time-machine patches this process only).
Prints "ready" once imports are done, then one JSON line of outcomes when the batch ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time

import time_machine

from imagetwin_async import AmbiguousSubmission, ImagetwinClient, RateLimit

SETTLE_DELAY = 0.5  # the emulator lists a scan as soon as it registers it
# The rate limits' window in seconds (20 scans and 60 reads in it), as the emulator's.
PER = float(os.environ.get("KILL_TEST_PER", "1.0"))


async def main(base_url: str, key: str, journal: str, jump: float, files: list[str]) -> None:
    print("ready", flush=True)
    if jump:
        asyncio.get_running_loop().call_later(1.0, _TRAVEL.shift, jump)
    async with ImagetwinClient(
        key,
        base_url=base_url,
        scan_limit=RateLimit(20, per=PER),
        result_limit=RateLimit(60, per=PER),
        poll_interval=0.05,
        max_poll_interval=0.2,
    ) as client:
        outcomes = await client.submit_and_wait(
            files, journal=journal, submit_concurrency=2, settle_delay=SETTLE_DELAY
        )
    print(
        json.dumps(
            [
                {
                    "source": o.source,
                    "scan_id": o.scan_id,
                    "ok": o.ok,
                    "error": type(o.error).__name__ if o.error else None,
                    "candidates": list(o.error.candidates)
                    if isinstance(o.error, AmbiguousSubmission)
                    else [],
                    "note": o.note,
                }
                for o in outcomes
            ]
        ),
        flush=True,
    )


if __name__ == "__main__":
    if os.environ.get("KILL_TEST_WORKER_LOG"):
        logging.basicConfig(level=logging.INFO, format="%(relativeCreated)6.0f %(message)s")
    base_url, key, journal, skew, jump, *files = sys.argv[1:]
    _TRAVEL = time_machine.travel(time.time() + float(skew), tick=True).start()
    asyncio.run(main(base_url, key, journal, float(jump), files))
