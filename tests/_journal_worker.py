"""A batch with a journal, run as its own process so a test can SIGKILL it anywhere.

    python -m tests._journal_worker BASE_URL API_KEY JOURNAL FILE...

Prints "ready" once imports are done, then one JSON line of outcomes when the batch ends.
"""

from __future__ import annotations

import asyncio
import json
import sys

from imagetwin_async import ImagetwinClient, RateLimit


async def main(base_url: str, key: str, journal: str, files: list[str]) -> None:
    print("ready", flush=True)
    async with ImagetwinClient(
        key,
        base_url=base_url,
        scan_limit=RateLimit(20, per=1.0),
        result_limit=RateLimit(60, per=1.0),
        poll_interval=0.05,
        max_poll_interval=0.2,
    ) as client:
        outcomes = await client.submit_and_wait(files, journal=journal, submit_concurrency=2)
    print(
        json.dumps(
            [
                {
                    "source": o.source,
                    "scan_id": o.scan_id,
                    "ok": o.ok,
                    "error": type(o.error).__name__ if o.error else None,
                    "note": o.note,
                }
                for o in outcomes
            ]
        ),
        flush=True,
    )


if __name__ == "__main__":
    base_url, key, journal, *files = sys.argv[1:]
    asyncio.run(main(base_url, key, journal, files))
