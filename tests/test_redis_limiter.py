"""RedisLimiter against a real Redis: window arithmetic, leases, 429s, cancellation, processes.

These run on real time with windows of a fraction of a second, so bounds are asserted one way
strictly (a slot never frees early: that is the safety) and the other way loosely (a loaded
2-core machine may wake a waiter late). Each test uses its own key base and deletes it after.

Redis comes from ``IMAGETWIN_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``). Without one
the tests skip, unless ``CI`` is set: there they must run, so they fail instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
from _simulation import fixed_window_server, rejections, sliding_log_server, token_bucket_server

from imagetwin_async import Limiter, RateLimit, RateLimitBusy
from imagetwin_async._durations import DurationModel
from imagetwin_async.emulator import Emulator
from imagetwin_async.redis import (
    RedisLimiter,
    RedisLimiterError,
    RedisLimits,
    RedisModelStore,
    limiter_key,
    redis_limits,
)

from ._files import png_bytes
from ._services import REDIS_URL

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.redis

# A timer may fire a little early and two clocks (ours, Redis's) are compared: a tolerance far
# below any real violation (which would be a whole window early).
EARLY = 0.005
# How late a loaded machine may serve a waiter.
LATE = 0.6


# -- fixtures: a reachable Redis, a fresh key per test ----------------------------------------


@pytest.fixture
def key(redis_url: str) -> Iterator[str]:
    base = f"imagetwin-test:{{{uuid.uuid4().hex}}}"
    yield base
    client = redis.Redis.from_url(redis_url)
    stale = list(client.scan_iter(match=f"{base}*"))
    if stale:
        client.delete(*stale)
    client.close()


Make = Callable[..., RedisLimiter]


@pytest.fixture
async def make(redis_url: str, key: str) -> AsyncIterator[Make]:
    """Limiters on the test's key, each with its own connection pool (like separate processes)."""
    made: list[RedisLimiter] = []

    def factory(limit: RateLimit, **options: Any) -> RedisLimiter:
        limiter = RedisLimiter.from_url(redis_url, limit, key=key, **options)
        made.append(limiter)
        return limiter

    yield factory
    for limiter in made:
        await limiter.aclose()


def now() -> float:
    return time.monotonic()


# -- construction ---------------------------------------------------------------------------


def test_key_names_hash_the_api_key_and_never_hold_it() -> None:
    base = limiter_key("sk-live-secret", "scan")
    assert "sk-live-secret" not in base
    assert base.startswith("imagetwin:{") and base.endswith(":scan}")
    assert base == limiter_key("sk-live-secret", "scan")
    assert base != limiter_key("sk-live-other", "scan")
    assert limiter_key("k", "result", prefix="acme").startswith("acme:{")


async def test_satisfies_the_protocol_and_refuses_what_it_cannot_do(make: Make) -> None:
    limiter = make(RateLimit(2, per=1.0), name="POST /scan")
    assert isinstance(limiter, Limiter)
    assert "POST /scan" in repr(limiter)
    with pytest.raises(ValueError, match="window"):
        make(RateLimit(2, strategy="token_bucket"))
    with pytest.raises(ValueError, match="lease"):
        make(RateLimit(2), lease=0)


async def test_redis_limits_shares_one_pool_and_closes_what_it_opened(redis_url: str) -> None:
    limits = redis_limits(redis_url, "sk-test", prefix=f"imagetwin-test-{uuid.uuid4().hex}")
    scan, result = limits
    assert isinstance(limits, RedisLimits)
    assert (scan.name, result.name) == ("POST /scan", "GET /result")
    assert (scan.limit, result.limit) == (RateLimit(20, per=60.0), RateLimit(60, per=60.0))
    assert scan.key.endswith(":scan}") and result.key.endswith(":result}")
    async with limits:
        assert (await scan.refresh()).available == 20
    # A client passed in stays the caller's to close.
    own = redis.asyncio.Redis.from_url(redis_url)
    async with redis_limits(own, "sk-test", prefix=f"imagetwin-test-{uuid.uuid4().hex}"):
        pass
    assert await own.ping()
    await own.aclose()


def test_redis_limits_needs_an_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMAGETWIN_API_KEY", raising=False)
    with pytest.raises(ValueError, match="IMAGETWIN_API_KEY"):
        redis_limits("redis://127.0.0.1:1/0")


async def test_fails_closed_when_redis_is_unreachable() -> None:
    limiter = RedisLimiter.from_url(
        "redis://127.0.0.1:1/0", RateLimit(2, per=1.0), key="k", name="POST /scan"
    )
    for block in (True, False):
        with pytest.raises(RedisLimiterError, match="unreachable") as error:
            await limiter.acquire(block=block)
        assert error.value.endpoint == "POST /scan"
        assert not error.value.scan_may_have_started
    limiter.on_rate_limited(0.01)  # a background write that fails is logged, not raised
    await limiter.aclose()


# -- window arithmetic ----------------------------------------------------------------------


async def test_a_slot_frees_per_plus_margin_after_its_answer(make: Make) -> None:
    limiter = make(RateLimit(2, per=0.5, margin=0.05), name="POST /scan")
    first, second = await limiter.acquire(), await limiter.acquire()
    answered = now()
    first.release()
    await limiter.flush()
    with pytest.raises(RateLimitBusy) as busy:
        await limiter.acquire(block=False)
    assert busy.value.endpoint == "POST /scan"
    assert busy.value.status == 429
    assert busy.value.retry_after is not None
    assert 0.0 < busy.value.retry_after <= 0.55
    slot = await limiter.acquire()
    assert 0.55 - EARLY <= now() - answered <= 0.55 + LATE
    second.release()
    slot.release()


async def test_in_flight_slots_stay_taken_and_have_no_known_free_time(make: Make) -> None:
    limiter = make(RateLimit(1, per=0.2, margin=0.0))
    slot = await limiter.acquire()
    with pytest.raises(RateLimitBusy) as busy:
        await limiter.acquire(block=False)
    assert busy.value.retry_after is None
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.6)  # three windows: an in-flight request still counts
    assert not waiter.done()
    state = await limiter.refresh()
    assert (state.in_flight, state.available, state.next_slot_in) == (1, 0, None)
    answered = now()
    slot.release()
    (await waiter).release()
    assert 0.2 - EARLY <= now() - answered <= 0.2 + LATE


async def test_snapshot_is_the_last_reading_aged_locally(make: Make) -> None:
    limiter = make(RateLimit(3, per=0.5, margin=0.0))
    fresh = limiter.snapshot()  # nothing read yet: the full budget is assumed
    assert (fresh.available, fresh.in_flight, fresh.next_slot_in) == (3, 0, 0.0)
    slots = [await limiter.acquire() for _ in range(3)]
    for slot in slots:
        slot.release()
    state = await limiter.refresh()
    assert (state.available, state.in_flight) == (0, 0)
    assert state.next_slot_in is not None
    await asyncio.sleep(0.1)
    aged = limiter.snapshot()
    assert aged.next_slot_in is not None
    assert aged.next_slot_in <= state.next_slot_in - 0.1 + EARLY


async def test_waiters_in_one_process_are_served_in_order(make: Make) -> None:
    limiter = make(RateLimit(1, per=0.15, margin=0.0))
    order: list[int] = []

    async def request(i: int) -> None:
        async with await limiter.acquire():
            order.append(i)

    tasks = []
    for i in range(4):
        tasks.append(asyncio.create_task(request(i)))
        await asyncio.sleep(0.01)
    with pytest.raises(RateLimitBusy, match="ahead in the queue"):
        await limiter.acquire(block=False)  # no jumping the queue
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]


# -- leases -----------------------------------------------------------------------------------

_HOLDER = """
import asyncio, sys
from imagetwin_async import RateLimit
from imagetwin_async.redis import RedisLimiter

async def main():
    limiter = RedisLimiter.from_url(sys.argv[1], RateLimit(1, per=0.3, margin=0.0),
                                    key=sys.argv[2], lease=float(sys.argv[3]))
    await limiter.acquire()
    print("holding", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_a_dead_holders_slot_frees_one_hold_after_its_lease(make: Make, key: str) -> None:
    lease, hold = 0.6, 0.3
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLDER, REDIS_URL, key, str(lease), stdout=asyncio.subprocess.PIPE
    )
    assert holder.stdout is not None
    assert await asyncio.wait_for(holder.stdout.readline(), 30) == b"holding\n"
    limiter = make(RateLimit(1, per=0.3, margin=0.0))
    await asyncio.sleep(lease)  # the live holder renews its lease: still in flight
    with pytest.raises(RateLimitBusy) as busy:
        await limiter.acquire(block=False)
    assert busy.value.retry_after is None
    holder.send_signal(signal.SIGKILL)  # no release, no goodbye
    killed = now()
    await holder.wait()
    slot = await limiter.acquire()
    # Its last renewal was at most lease/3 before the kill (plus scheduling delays).
    assert killed + 2 * lease / 3 + hold - 0.2 <= now() <= killed + lease + hold + LATE
    slot.release()


async def test_a_live_holder_keeps_its_slot_past_the_lease(make: Make) -> None:
    holder = make(RateLimit(1, per=0.2, margin=0.0), lease=0.3)
    other = make(RateLimit(1, per=0.2, margin=0.0))
    slot = await holder.acquire()
    await asyncio.sleep(1.0)  # a slow upload: more than three leases
    state = await other.refresh()
    assert (state.in_flight, state.available) == (1, 0)
    slot.release()


async def test_a_release_after_the_lease_ran_out_still_counts_its_answer(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = make(RateLimit(1, per=0.5, margin=0.0), lease=0.2)
    slot = await limiter.acquire()
    assert limiter._heartbeat is not None
    limiter._heartbeat.cancel()  # a blocked loop: no renewals
    await asyncio.sleep(0.3)  # the lease ran out at 0.2: free at 0.7 unless answered later
    answered = now()
    slot.release()
    await limiter.flush()
    state = await limiter.refresh()
    assert state.next_slot_in is not None
    assert state.next_slot_in >= 0.5 - EARLY - (now() - answered)
    assert "ran out" not in caplog.text  # the slot had not freed yet: nothing was lost


# -- 429s: one pause and one capacity for the whole key -------------------------------------


async def test_a_429_pauses_and_slows_every_process_sharing_the_key(make: Make) -> None:
    seen_it = make(RateLimit(4, per=1.0, margin=0.0))
    other = make(RateLimit(4, per=1.0, margin=0.0))
    paused_at = now()
    assert seen_it.on_rate_limited(0.4) == pytest.approx(0.4, abs=0.01)
    assert seen_it.snapshot().paused_for > 0.3
    with pytest.raises(RateLimitBusy, match="paused"):
        await seen_it.acquire(block=False)  # at once, before Redis has heard of it
    await seen_it.flush()
    state = await other.refresh()
    assert state.paused_for > 0.2
    assert state.available == 0
    with pytest.raises(RateLimitBusy, match="paused") as busy:
        await other.acquire(block=False)
    assert busy.value.retry_after is not None
    assert busy.value.retry_after > 0.2
    slot = await other.acquire()
    assert now() - paused_at >= 0.4 - EARLY
    # Someone else spends the key: half the capacity until quiet windows pass.
    assert (await other.refresh()).available == 1
    slot.release()


async def test_a_foreign_day_long_pause_in_redis_holds_no_reader_past_max_pause(
    make: Make, redis_url: str, key: str
) -> None:
    """An older client (or another SDK) on the same key stored a 24 h pause from a lying
    Retry-After: every reader keeps it at most ``max_pause``, so the fleet is not frozen."""
    raw = redis.Redis.from_url(redis_url)
    seconds, micros = raw.time()
    raw.hset(f"{key}:state", "paused_until", f"{seconds + micros / 1e6 + 86400:.6f}")
    raw.close()
    limiter = make(RateLimit(4, per=1.0, margin=0.0, max_pause=0.5))
    state = await limiter.refresh()
    assert 0.3 < state.paused_for <= 0.5 + EARLY
    started = now()
    slot = await asyncio.wait_for(limiter.acquire(), 5.0)
    assert now() - started <= 0.5 + 0.5  # max_pause and a poll's slack, not a day
    slot.release()


async def test_back_off_without_retry_after_grows_and_resets(make: Make) -> None:
    class High(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    limiter = make(RateLimit(4, per=1.0, backoff_base=0.01, backoff_cap=0.05), rng=High())
    pauses = [limiter.on_rate_limited(None) for _ in range(4)]
    assert pauses == pytest.approx([0.01, 0.02, 0.04, 0.05], abs=0.002)
    limiter.on_success()
    await asyncio.sleep(0.06)
    assert limiter.on_rate_limited(None) == pytest.approx(0.01, abs=0.002)
    await limiter.flush()


# -- cancellation -----------------------------------------------------------------------------


async def test_a_cancelled_waiter_leaks_nothing(make: Make) -> None:
    limiter = make(RateLimit(1, per=0.2, margin=0.0))
    (await limiter.acquire()).release()
    first = asyncio.create_task(limiter.acquire())
    second = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.05)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    slot = await second
    await limiter.flush()
    assert (await limiter.refresh()).in_flight == 1
    slot.release()


async def test_cancelling_at_any_point_of_the_redis_round_trip_leaks_nothing(make: Make) -> None:
    limiter = make(RateLimit(100, per=5.0, margin=0.0))
    rng = random.Random(3)
    used = cancelled = 0
    for round_ in range(90):
        task = asyncio.create_task(limiter.acquire())
        if round_ % 2:
            for _ in range(round_):
                await asyncio.sleep(0)  # cancel after so many loop ticks
        else:
            await asyncio.sleep(rng.uniform(0.0, 0.002))  # or at a random moment
        task.cancel()
        try:
            slot = await task
        except asyncio.CancelledError:
            cancelled += 1
        else:
            used += 1  # granted before the cancel landed: sent, answered, cooling for a window
            slot.release()
        if round_ >= 30 and min(used, cancelled) >= 5:
            break
    await limiter.flush()
    state = await limiter.refresh()
    assert used > 0 and cancelled > 0  # both paths were taken
    assert (state.in_flight, state.available) == (0, 100 - used)


# -- two processes' worth of limiters, seen by the servers -----------------------------------


async def test_two_limiters_on_one_key_never_exceed_the_budget(make: Make) -> None:
    n, per, m = 4, 0.4, 20
    limiters = [make(RateLimit(n, per=per)), make(RateLimit(n, per=per))]
    rng = random.Random(8)
    receipts: list[float] = []
    sends: list[float] = []

    async def request(limiter: RedisLimiter) -> None:
        latency, receipt_at = rng.uniform(0.0, 0.04), rng.random()
        async with await limiter.acquire():
            sent = now()
            sends.append(sent)
            await asyncio.sleep(latency)
            receipts.append(sent + receipt_at * (now() - sent))

    await asyncio.gather(*(request(limiters[i % 2]) for i in range(m)))
    servers = [
        fixed_window_server(n, per, offset=receipts[0] - 0.5 * per),
        fixed_window_server(n, per, offset=receipts[0] - 0.01),
        sliding_log_server(n, per),
        sliding_log_server(n, per, count_rejected=True),
        token_bucket_server(n, per),
    ]
    assert [rejections(server, receipts) for server in servers] == [0] * len(servers)
    rounds = (m - 1) // n
    assert max(sends) - min(sends) >= rounds * per  # no window held more than n
    assert max(sends) - min(sends) <= rounds * (per + 0.04) + LATE


# -- many OS processes, one key, one emulated server ----------------------------------------

_WORKER = """
import asyncio, json, sys
from imagetwin_async import ImagetwinClient, RateLimit
from imagetwin_async.redis import redis_limits

async def main(redis_url, prefix, base_url, api_key, count, path):
    limits = redis_limits(redis_url, api_key, prefix=prefix,
                          scan_limit=RateLimit(20, per=1.0), result_limit=RateLimit(60, per=1.0))
    async with limits, ImagetwinClient(api_key, base_url=base_url, scan_limit=limits.scan,
                                       result_limit=limits.result) as client:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        started = await asyncio.gather(*(client.scan(path) for _ in range(int(count))))
    print(json.dumps([s.scan_id for s in started]), flush=True)

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.mark.slow
async def test_four_processes_share_one_key_without_a_429(tmp_path: Path, key: str) -> None:
    workers, each = 4, 12
    image = tmp_path / "figure.png"
    image.write_bytes(png_bytes(1))
    # speed=60: the emulated 20-a-minute window lasts one real second, the clients' ``per``.
    async with Emulator(speed=60, rate_limit_algorithm="sliding", processing_time=0.0) as emu:
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _WORKER,
                REDIS_URL,
                key,
                emu.url,
                emu.api_key,
                str(each),
                str(image),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                cwd=ROOT,
            )
            for _ in range(workers)
        ]
        try:
            for proc in procs:
                assert proc.stdout is not None
                assert await asyncio.wait_for(proc.stdout.readline(), 60) == b"ready\n"
            for proc in procs:  # all at once
                assert proc.stdin is not None
                proc.stdin.write(b"go\n")
                await proc.stdin.drain()
            outputs = [await asyncio.wait_for(proc.communicate(), 60) for proc in procs]
        finally:  # a worker that hangs must not outlive the test (and fail the next one)
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
                    await proc.communicate()
        assert [proc.returncode for proc in procs] == [0] * workers
        scan_ids = [sid for out, _ in outputs for sid in json.loads(out.decode().splitlines()[-1])]
        assert emu.counters.rate_limited == {}
        assert emu.counters.scans_billed == workers * each
        assert len(set(scan_ids)) == workers * each
        receipts = [r.time for r in emu.requests if r.endpoint == "scan"]
    assert len(receipts) == workers * each
    # Key-wide pacing, as the emulator's clock saw it: 20 per emulated minute, and no slower
    # than the window allows (two full windows for 48 scans, plus a loaded machine's slack).
    assert rejections(sliding_log_server(20, 60.0), receipts) == 0
    assert 120.0 <= max(receipts) - min(receipts) <= 120.0 + 60 * LATE


async def test_a_lost_reply_gives_its_slot_back_at_once(redis_url: str, key: str) -> None:
    """The acquire script ran in Redis but its reply was lost (a reset): the slot it took must
    be given back, not held until its lease ends, which would stall every worker on the key."""
    target = redis.asyncio.Redis.from_url(redis_url).connection_pool.connection_kwargs
    drop = asyncio.Event()

    async def proxy(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        redis_r, redis_w = await asyncio.open_connection(target["host"], target["port"])

        async def upstream() -> None:
            while data := await client_r.read(65536):
                redis_w.write(data)
                await redis_w.drain()

        async def downstream() -> None:
            while data := await redis_r.read(65536):
                if drop.is_set():  # swallow Redis's answer and reset the client's side
                    client_w.close()
                    redis_w.close()
                    return
                client_w.write(data)
                await client_w.drain()

        try:
            await asyncio.gather(upstream(), downstream(), return_exceptions=True)
        finally:  # both sides closed, whichever way the proxy ended: no stream left to the GC
            for writer in (client_w, redis_w):
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"redis://127.0.0.1:{port}/{target.get('db', 0)}"
    limiter = RedisLimiter.from_url(url, RateLimit(1, per=0.5), key=key, lease=20.0)
    try:
        await limiter.refresh()  # scripts loaded, connection warm
        drop.set()
        with pytest.raises(RedisLimiterError):
            await asyncio.wait_for(limiter.acquire(), 10)
        drop.clear()
        started = time.monotonic()
        slot = await asyncio.wait_for(limiter.acquire(), 10)
        slot.release()
        assert time.monotonic() - started < 2.0  # not the 20 s lease
    finally:
        await limiter.aclose()
        server.close()


# -- the learned durations, shared by a fleet -------------------------------------------------


async def test_a_fleet_shares_what_its_schedulers_learned(redis_url: str) -> None:
    api_key = f"sk-{uuid.uuid4().hex}"
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        store = RedisModelStore(client, api_key, ttl=60)
        assert api_key not in store.key and api_key not in repr(store)
        assert await store.load() is None
        model = DurationModel()
        for seconds in (50.0, 60.0, 70.0, 55.0, 65.0):
            model.observe(seconds)
        await store.save(model.state())
        # Another process, its own connection: starts from what the first one saved.
        other = redis.asyncio.Redis.from_url(redis_url)
        try:
            fresh = DurationModel()
            state = await RedisModelStore(other, api_key).load()
            assert state is not None
            assert fresh.restore(state) == 5
            assert fresh.ready
        finally:
            await other.aclose()
        assert 0 < await client.ttl(store.key) <= 60
        await client.delete(store.key)
    finally:
        await client.aclose()
