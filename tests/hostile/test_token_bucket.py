"""The token-bucket strategy against token-bucket servers (issue 12, item 9).

Adversary: a server that takes a token when it *receives* a request, with uploads of uneven
length: the first burst's uploads crawl (twenty at once share the link) while a later one
flies, so a send-time bucket's 21st request lands less than one refill after the server's
bucket emptied. Checked against two independent buckets: the tests' own and the emulator's.
"""

from __future__ import annotations

from _simulation import (
    aiolimiter_gate,
    limiter_gate,
    rejections,
    run_batch,
    span,
    token_bucket_server,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagetwin_async import RateLimit

EPSILON = 1e-9


class IndependentBucket:
    """A token bucket written apart from the emulator's: N tokens, refilled at N/per a second,
    one taken per admitted receipt."""

    name = "independent token bucket"

    def __init__(self, requests: int, per: float) -> None:
        self.requests, self.per = requests, per
        self.tokens = float(requests)
        self.last: float | None = None

    def admit(self, t: float) -> bool:
        if self.last is not None:
            self.tokens = min(
                self.requests, self.tokens + (t - self.last) * self.requests / self.per
            )
        self.last = t
        if self.tokens < 1.0 - EPSILON:
            return False
        self.tokens -= 1.0
        return True


def _refusals(receipts: list[float], n: int, per: float) -> dict[str, int]:
    return {
        "tests": rejections(IndependentBucket(n, per), receipts),
        "emulator": rejections(token_bucket_server(n, per), receipts),
    }


def test_the_refill_boundary_case_of_the_report() -> None:
    """22 scans at once; the first 20 uploads take 1.2 s (sharing the link), the rest 0.06 s."""
    latencies = [1.2] * 20 + [0.06] * 2
    receipt_at = [1.0] * 20 + [0.0] * 2
    limit = RateLimit(20, per=60.0, strategy="token_bucket")
    requests = run_batch(limiter_gate(limit.build), latencies, receipt_at)
    assert _refusals([r.receipt for r in requests], 20, 60.0) == {"tests": 0, "emulator": 0}
    # A bucket that takes tokens at send time draws the 429 in the same run: the test can fail.
    naive = run_batch(aiolimiter_gate(20, 60.0), latencies, receipt_at)
    assert _refusals([r.receipt for r in naive], 20, 60.0) == {"tests": 1, "emulator": 1}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 20), per=st.sampled_from([1.0, 60.0]), data=st.data())
def test_token_bucket_strategy_is_never_refused_by_a_token_bucket_server(
    n: int, per: float, data: st.DataObject
) -> None:
    m = data.draw(st.integers(1, 4 * n + 2), label="batch size")
    max_latency = data.draw(st.floats(0.0, 0.05 * per), label="max latency")
    latencies = data.draw(
        st.lists(st.floats(0.0, max_latency), min_size=m, max_size=m), label="latencies"
    )
    receipt_at = data.draw(
        st.lists(st.floats(0.0, 1.0), min_size=m, max_size=m), label="receipt position"
    )
    limit = RateLimit(n, per=per, strategy="token_bucket")
    requests = run_batch(limiter_gate(limit.build), latencies, receipt_at)
    assert _refusals([r.receipt for r in requests], n, per) == {"tests": 0, "emulator": 0}
    # Still a token bucket: the burst goes at once, the rest about one refill apart.
    rounds = max(0, m - n)
    refill = (per + limit.margin) / n
    assert span(requests) <= rounds * (refill + max_latency + 1e-4) + 1e-6
