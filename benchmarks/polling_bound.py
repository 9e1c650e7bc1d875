"""The best any poller can do with B reads a scan, when it knows the duration distribution.

    python benchmarks/polling_bound.py [--median 60] [--sigma 0.5] [--step 0.5] [--reads 3]
        [--naive 12.7 13.8] [--ratio 0.7]

A poller learns nothing about a scan but "still running" until a read finds it done, so its
policy for one scan is a list of read times. The budget (R reads a second, a scan every
1/A s) allows B = R/A reads a scan *on average*: scans that finish early take one read and
late ones many, and the reads one scan leaves unused go to another. So the bound constrains
only the mean number of reads over scans, not each scan's count. With a price ``lam`` per
read (every read, the one that finds the scan done included) that relaxed problem splits into
one per scan, solved by dynamic programming over read times on a grid of ``--step`` seconds,
on the chance of finishing given that the scan still ran at the last read:
``V(t) = min over s > t of lam + E[(s - D) 1{D <= s} | D > t] + P(D > s | D > t) V(s)``.

By weak duality, for every ``lam`` no policy, however dynamic and whatever it knows of the
other scans (they are independent), has a mean delay below ``V_lam(0) - lam * B`` at B reads
a scan; the best ``lam`` gives the bound printed for ``--reads``. What the bound leaves out
can only raise the real optimum: reads come at most R a second (scans that fall due
together queue), a read's answer takes time, and the distribution must be learned. A
finer grid can only lower ``V``: the bound is printed at ``--step`` and at half of it.

Against it: the rule the scheduler uses, reading a scan each time it is ``p`` likely to have
finished since its last read (``1/p`` reads a scan exactly, when the model is right), and the
ratio the bound allows against the naive client's measured mean delays (``--naive``).
"""

from __future__ import annotations

import argparse
import itertools
import math
from statistics import NormalDist

from _common import header, table

SQRT2 = math.sqrt(2.0)


class LogNormal:
    def __init__(self, median: float, sigma: float) -> None:
        self.mu, self.sigma = math.log(median), sigma

    def cdf(self, t: float) -> float:
        if t <= 0:
            return 0.0
        return 0.5 * math.erfc(-(math.log(t) - self.mu) / (self.sigma * SQRT2))

    def partial_mean(self, t: float) -> float:  # E[D 1{D <= t}]
        if t <= 0:
            return 0.0
        z = (math.log(t) - self.mu - self.sigma**2) / (self.sigma * SQRT2)
        return math.exp(self.mu + self.sigma**2 / 2) * 0.5 * math.erfc(-z)

    def quantile(self, q: float) -> float:
        return math.exp(self.mu + self.sigma * NormalDist().inv_cdf(q))


def solve(dist: LogNormal, step: float, lam: float, horizon: float) -> tuple[float, ...]:
    """(V(0), mean reads, mean delay, schedule...) of the best policy at price ``lam``."""
    grid = [i * step for i in range(int(horizon / step) + 1)]
    f = [dist.cdf(t) for t in grid]
    pm = [dist.partial_mean(t) for t in grid]
    n = len(grid)
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
    schedule: list[float] = []
    i = 0
    while i < n - 1 and len(schedule) < 6:
        i = nxt[i]
        schedule.append(grid[i])
    return (value[0], reads[0], delay[0], *schedule)


def threshold_policy(dist: LogNormal, p: float, horizon: float) -> tuple[float, float]:
    """(mean reads, mean delay) of reading whenever the scan is ``p`` likely to have finished
    since its last read (the first read at the ``p`` quantile)."""
    reads = delay = 0.0
    last, t = 0.0, dist.quantile(p)
    while t < horizon:
        alive = 1.0 - dist.cdf(last)
        if alive < 1e-12:
            break
        reads += alive
        mass = dist.cdf(t) - dist.cdf(last)
        delay += t * mass - (dist.partial_mean(t) - dist.partial_mean(last))
        done = dist.cdf(t)
        if done > 1 - 1e-12:
            break
        last, t = t, max(dist.quantile(done + p * (1.0 - done)), t + 1e-3)
    return reads, delay


def main(args: argparse.Namespace) -> None:
    header(
        "The frontier of mean reads a scan against mean delay, for a known distribution",
        [
            f"log-normal, median {args.median:g} s, sigma {args.sigma:g}; "
            f"read times on a {args.step:g} s grid; reads: the mean over scans",
        ],
    )
    dist = LogNormal(args.median, args.sigma)
    horizon = args.median * 8
    prices = [1.0, 2.0, 3.0, 3.5, 3.7, 4.0, 5.0, 8.0]
    solved = {lam: solve(dist, args.step, lam, horizon) for lam in prices}
    rows = []
    for lam, (_, reads, delay, first, *rest) in solved.items():
        gaps = ", ".join(f"{b - a:.0f}" for a, b in itertools.pairwise([first, *rest]))
        rows.append([lam, reads, delay, first, f"{dist.cdf(first):.2f}", gaps])
    columns = ["price", "reads/scan", "mean delay s", "1st read s", "1st quantile", "next gaps s"]
    print(table(columns, rows))

    values = {
        lam: (solved[lam] if lam in solved else solve(dist, args.step, lam, horizon))[0]
        for lam in [x / 10 for x in range(5, 121)]
    }

    def bound(budget: float) -> tuple[float, float]:
        """max over the price of V(0) - price * budget: the weak-duality bound, its price."""
        return max((v0 - lam * budget, lam) for lam, v0 in values.items())

    print()
    print(f"Lower bound on the mean delay at {args.reads:g} reads a scan (max over the price):")
    coarse, lam = bound(args.reads)
    fine = solve(dist, args.step / 2, lam, horizon)[0] - lam * args.reads
    print(
        f"  grid {args.step:g} s: {coarse:.3f} s (price {lam:g}); grid {args.step / 2:g} s: "
        f"{fine:.3f} s at the same price"
    )
    print()
    print("Reading at a fixed chance p of having finished since the last read (our rule):")
    p_rows = []
    for p in (0.2, 0.25, 0.3, 1 / 3, 0.35, 0.4):
        reads, delay = threshold_policy(dist, p, horizon)
        floor = bound(reads)[0]
        p_rows.append([f"{p:.3f}", reads, delay, floor, f"{delay / floor - 1:+.1%}"])
    print(table(["p", "reads/scan", "mean delay s", "bound s", "above"], p_rows))
    if args.naive:
        print()
        print(
            f"The least ratio any poller can reach at {args.reads:g} reads a scan, and the fewest"
        )
        print(f"reads a scan any poller needs for {args.ratio:g}x, against naive mean delays:")
        for naive in args.naive:
            budgets = [b / 100 for b in range(200, 801)]
            need = next((b for b in budgets if bound(b)[0] <= args.ratio * naive), math.inf)
            print(
                f"  naive {naive:g} s: ratio >= {min(coarse, fine) / naive:.3f}; "
                f"{args.ratio:g}x needs >= {need:.2f} reads a scan"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--median", type=float, default=60.0)
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--step", type=float, default=0.5)
    parser.add_argument("--reads", type=float, default=3.0, help="the budget, reads a scan")
    parser.add_argument("--ratio", type=float, default=0.7, help="a target ratio to the naive")
    parser.add_argument(
        "--naive", type=float, nargs="*", default=[], help="naive mean delays to divide by, s"
    )
    main(parser.parse_args())
