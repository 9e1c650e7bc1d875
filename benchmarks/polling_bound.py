"""The best any poller can do with B reads a scan, when it knows the duration distribution.

    python benchmarks/polling_bound.py [--median 60] [--sigma 0.5] [--step 0.5]

A poller learns nothing about a scan but "still running" until a read finds it done, so its
policy for one scan is a fixed list of read times. Averaged over scans, the budget is a
constraint on the mean number of reads; with a price ``lam`` per read the problem splits into
one per scan, solved exactly by dynamic programming over read times on a grid of ``--step``
seconds: ``V(t) = min over s > t of lam + E[(s - D) 1{D <= s} | D > t] + P(D > s | D > t) V(s)``.
Sweeping ``lam`` traces the frontier of mean reads against mean delay; no policy, however
dynamic, beats it at the same mean reads (the relaxed problem's optimum is a lower bound).
"""

from __future__ import annotations

import argparse
import itertools
import math

from _common import header, table


def frontier(
    median: float, sigma: float, step: float, prices: list[float], horizon: float
) -> list[list[object]]:
    mu = math.log(median)

    def cdf(t: float) -> float:
        return 0.0 if t <= 0 else 0.5 * math.erfc(-(math.log(t) - mu) / (sigma * math.sqrt(2)))

    def partial_mean(t: float) -> float:  # E[D 1{D <= t}]
        if t <= 0:
            return 0.0
        z = (math.log(t) - mu - sigma**2) / (sigma * math.sqrt(2))
        return math.exp(mu + sigma**2 / 2) * 0.5 * math.erfc(-z)

    grid = [i * step for i in range(int(horizon / step) + 1)]
    f = [cdf(t) for t in grid]
    pm = [partial_mean(t) for t in grid]
    n = len(grid)
    rows: list[list[object]] = []
    for lam in prices:
        value, reads, delay, nxt = [0.0] * n, [0.0] * n, [0.0] * n, [n - 1] * n
        for i in range(n - 2, -1, -1):
            alive = 1.0 - f[i]
            if alive < 1e-12:
                continue
            best = (math.inf, n - 1, 0.0, 0.0)
            for j in range(i + 1, n):
                done = (f[j] - f[i]) / alive
                wait = (grid[j] * (f[j] - f[i]) - (pm[j] - pm[i])) / alive
                cost = lam + wait + (1.0 - done) * value[j]
                if cost < best[0]:
                    best = (cost, j, done, wait)
                if done > 1 - 1e-9:
                    break
            value[i], j, done, wait = best
            nxt[i] = j
            reads[i] = 1.0 + (1.0 - done) * reads[j]
            delay[i] = wait + (1.0 - done) * delay[j]
        schedule, i = [], 0
        while i < n - 1 and len(schedule) < 6:
            i = nxt[i]
            schedule.append(grid[i])
        first = schedule[0]
        gaps = ", ".join(f"{b - a:.0f}" for a, b in itertools.pairwise(schedule))
        rows.append([lam, reads[0], delay[0], first, f"{cdf(first):.2f}", gaps])
    return rows


def main(args: argparse.Namespace) -> None:
    header(
        "The frontier of mean reads a scan against mean delay, for a known distribution",
        [
            f"log-normal, median {args.median:g} s, sigma {args.sigma:g}; "
            f"read times on a {args.step:g} s grid",
        ],
    )
    prices = [1.0, 2.0, 3.0, 3.5, 4.0, 5.0, 8.0]
    rows = frontier(args.median, args.sigma, args.step, prices, args.median * 8)
    columns = ["price", "reads/scan", "mean delay s", "1st read s", "1st quantile", "next gaps s"]
    print(table(columns, rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--median", type=float, default=60.0)
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--step", type=float, default=0.5)
    main(parser.parse_args())
