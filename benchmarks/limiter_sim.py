"""The limiter alone, in simulated time: span and rejections against three server algorithms.

    .venv/bin/python benchmarks/limiter_sim.py [--seed 1] [--latency 0.2 1.5]

For M in (60, 600) scan POSTs under the vendor's 20 a minute, each client pushes the whole batch
at once through its gate; every request takes a latency drawn from ``--latency`` (an upload)
and the server receives it at a uniformly random moment inside that latency. The receipts are
then replayed against a fixed calendar window (the batch starts 30 s into a minute), a sliding
60 s log and a token bucket of 20. Clients:

- ours:       ``RateLimit(20, per=60.0).build()`` (the default "window" strategy);
- bucket:     ``RateLimit(20, per=60.0, strategy="token_bucket").build()`` (aiolimiter inside);
- aiolimiter: ``AsyncLimiter(20, 60)`` used naively around each send;
- pace 3 s:   one request every 3 s, never a burst.

"span/min" is the submission span over floor((M-1)/20) * 60 s, the least any client can take
against a sliding window. Rejections are not retried (each would be a 429 to handle). Time is
simulated on a looptime loop, so the whole table takes about a second.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from _simulation import (
    Gate,
    aiolimiter_gate,
    fixed_window_server,
    floor_span,
    limiter_gate,
    pacing_gate,
    rejections,
    run_batch,
    sliding_log_server,
    span,
    token_bucket_server,
)

from imagetwin_async import RateLimit

N, PER, START = 20, 60.0, 1000.0


def clients() -> list[tuple[str, Callable[[], Gate]]]:
    return [
        ("ours (window)", limiter_gate(lambda: RateLimit(N, per=PER).build())),
        (
            "ours (token_bucket)",
            limiter_gate(lambda: RateLimit(N, per=PER, strategy="token_bucket").build()),
        ),
        ("aiolimiter(20, 60)", aiolimiter_gate(N, PER)),
        ("pace 3 s", pacing_gate(PER / N)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency", type=float, nargs=2, default=(0.2, 1.5), metavar=("LO", "HI"))
    args = parser.parse_args()
    lo, hi = args.latency
    started = time.perf_counter()
    print(
        f"{N} requests / {PER:g} s; latency uniform {lo:g}-{hi:g} s, receipt uniform inside it;"
        f" seed {args.seed}"
    )
    header = (
        f"{'M':>4}  {'client':<20} {'span s':>8} {'span/min':>9}   rejected: fixed  sliding  bucket"
    )
    print(header)
    print("-" * len(header))
    for m in (60, 600):
        rng = random.Random(args.seed)
        latencies = [rng.uniform(lo, hi) for _ in range(m)]
        receipt_at = [rng.random() for _ in range(m)]
        minimum = floor_span(m, N, PER)
        for label, make_gate in clients():
            requests = run_batch(make_gate, latencies, receipt_at, start=START)
            receipts = [r.receipt for r in requests]
            fixed = rejections(fixed_window_server(N, PER, offset=START - PER / 2), receipts)
            sliding = rejections(sliding_log_server(N, PER), receipts)
            bucket = rejections(token_bucket_server(N, PER), receipts)
            took = span(requests)
            print(
                f"{m:>4}  {label:<20} {took:>8.1f} {took / minimum:>9.4f}"
                f"   {fixed:>15} {sliding:>8} {bucket:>7}"
            )
        print(f"{'':>4}  {'(floor)':<20} {minimum:>8.1f} {1:>9.4f}")
    print(f"simulated in {time.perf_counter() - started:.2f} s of real time")


if __name__ == "__main__":
    main()
