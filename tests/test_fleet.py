"""Several workers on one API key (uvicorn --workers, replicas, pods) behave like one client.

Each "worker" here is its own ``ImagetwinClient`` with its own ``Fleet`` on its own Redis
connection pool, as separate processes would have; they share only Redis and the emulator.
Scans are scripted never to end until the test ends them, and are started with a callback URL
so they are polled only every 60 s: any read before that is the fleet's doing.

Redis comes from ``IMAGETWIN_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``); without one
the tests skip, unless ``CI`` is set, where they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis
import redis.asyncio
from fastapi import FastAPI, Request

from imagetwin_async import (
    CallbackReceiver,
    ConfigurationError,
    ImagetwinClient,
    RateLimit,
    ScanFailed,
    ScanPending,
    ScanResult,
)
from imagetwin_async.emulator import Emulator, Endpoint, Outcome
from imagetwin_async.fastapi import get_callback_receiver, get_fleet, imagetwin_lifespan
from imagetwin_async.fleet import Fleet
from imagetwin_async.redis import RedisLimiter, limiter_key

from ._files import write_pdf

pytestmark = pytest.mark.redis

PUBLIC_URL = "http://127.0.0.1:9/imagetwin/callbacks"  # nothing listens: the test delivers
TOKEN = "fleet-shared-token-0123456789abcdef"
GENEROUS = 10.0  # far below the 60 s fallback poll, far above any loaded machine's delay
EmulatorFactory = Callable[..., Awaitable[Emulator]]


@pytest.fixture
async def emu(imagetwin_emulator_factory: EmulatorFactory) -> Emulator:
    emulator = await imagetwin_emulator_factory(speed=60)
    emulator.script(Outcome.never(), times=20)
    return emulator


Worker = tuple[ImagetwinClient, Fleet, CallbackReceiver]


@pytest.fixture
async def workers(
    emu: Emulator, redis_url: str, prefix: str
) -> AsyncIterator[Callable[[], Awaitable[Worker]]]:
    async with contextlib.AsyncExitStack() as stack:

        async def start() -> Worker:
            client = await stack.enter_async_context(
                ImagetwinClient(
                    emu.api_key,
                    base_url=emu.url,
                    scan_limit=RateLimit(20, per=1.0),
                    result_limit=RateLimit(60, per=1.0),
                    poll_interval=0.02,
                    max_poll_interval=60.0,
                    backoff_base=0.01,
                    backoff_cap=0.05,
                )
            )
            fleet = await stack.enter_async_context(
                Fleet.from_url(redis_url, emu.api_key, prefix=prefix)
            )
            await stack.enter_async_context(fleet.attach(client))
            receiver = CallbackReceiver(fleet, PUBLIC_URL, token=TOKEN, rehint_after=60.0)
            return client, fleet, receiver

        yield start


def reads_of(emu: Emulator, scan_id: str) -> int:
    return sum(1 for r in emu.requests if r.endpoint == Endpoint.RESULT and r.scan_id == scan_id)


def callback(scan_id: str) -> bytes:
    return json.dumps({"scanId": scan_id, "status": "finished"}).encode()


async def start_scan(client: ImagetwinClient, tmp_path: Path, *, callback: bool = True) -> str:
    """Start a scan; with ``callback`` it is polled only every max_poll_interval (60 s)."""
    paper = write_pdf(tmp_path / f"{uuid.uuid4().hex}.pdf", pages=2)
    started = await client.scan(paper, callback_url=f"{PUBLIC_URL}/{TOKEN}" if callback else None)
    return started.scan_id


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(GENEROUS):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_callback_landing_on_another_worker_reaches_the_waiter(
    emu: Emulator, workers: Callable[[], Awaitable[Worker]], tmp_path: Path
) -> None:
    (waiter, _, _), (_, _, other_receiver) = await workers(), await workers()
    scan_id = await start_scan(waiter, tmp_path)
    waiting = asyncio.create_task(waiter.wait_for_result(scan_id))
    await asyncio.sleep(0.1)
    emu.finish_scan(scan_id)
    assert other_receiver.receive(callback(scan_id)) == 204  # the load balancer chose the other
    async with asyncio.timeout(GENEROUS):  # not the 60 s fallback poll
        result = await waiting
    assert result.scan_id == scan_id
    assert reads_of(emu, scan_id) == 1


async def test_a_callback_before_anyone_waits_is_kept_for_a_wait_on_any_worker(
    emu: Emulator, workers: Callable[[], Awaitable[Worker]], tmp_path: Path
) -> None:
    (starter, _, _), (_, _, receiving), (late, _, _) = (
        await workers(),
        await workers(),
        await workers(),
    )
    scan_id = await start_scan(starter, tmp_path)
    emu.finish_scan(scan_id)
    receiving.receive(callback(scan_id))
    await asyncio.sleep(0.2)  # the callback has come and gone: nobody waited
    async with asyncio.timeout(GENEROUS):
        result = await late.wait_for_result(scan_id)  # a worker that never saw it start
    assert result.scan_id == scan_id
    assert reads_of(emu, scan_id) == 1


async def test_several_workers_waiting_for_one_scan_cost_one_read(
    emu: Emulator, workers: Callable[[], Awaitable[Worker]], tmp_path: Path
) -> None:
    """The worker that started the scan waits (as a web handler does), three more join: they
    poll nothing themselves while it lives, and its one read answers all four."""
    fleet = [await workers() for _ in range(4)]
    scan_id = await start_scan(fleet[0][0], tmp_path)
    waits = [asyncio.create_task(fleet[0][0].wait_for_result(scan_id))]
    await asyncio.sleep(0.05)
    waits += [asyncio.create_task(client.wait_for_result(scan_id)) for client, _, _ in fleet[1:]]
    await asyncio.sleep(0.3)  # the joiners would each have read it by now (poll_interval 0.02)
    assert reads_of(emu, scan_id) == 0
    emu.finish_scan(scan_id)
    fleet[3][2].receive(callback(scan_id))
    async with asyncio.timeout(GENEROUS):
        results = await asyncio.gather(*waits)
    assert {r.scan_id for r in results} == {scan_id}
    assert reads_of(emu, scan_id) == 1
    assert sum(f.stats.deferred for _, f, _ in fleet) >= 3
    # A wait that starts now, anywhere, is answered from the fleet's store.
    async with asyncio.timeout(GENEROUS):
        again = await (await workers())[0].wait_for_result(scan_id)
    assert again == results[0]
    assert reads_of(emu, scan_id) == 1


async def test_hints_to_every_worker_at_once_still_cost_one_read(
    emu: Emulator, workers: Callable[[], Awaitable[Worker]], tmp_path: Path
) -> None:
    """The same callback delivered to each worker (a retrying sender, replicas behind DNS)."""
    fleet = [await workers() for _ in range(3)]
    scan_id = await start_scan(fleet[0][0], tmp_path)
    waits = [asyncio.create_task(fleet[0][0].wait_for_result(scan_id))]
    await asyncio.sleep(0.05)
    waits += [asyncio.create_task(client.wait_for_result(scan_id)) for client, _, _ in fleet[1:]]
    await asyncio.sleep(0.1)
    emu.finish_scan(scan_id)
    for _, _, receiver in fleet:
        receiver.receive(callback(scan_id))
    async with asyncio.timeout(GENEROUS):
        await asyncio.gather(*waits)
    assert reads_of(emu, scan_id) == 1


async def test_workers_starting_to_wait_together_poll_as_one(
    emu: Emulator, workers: Callable[[], Awaitable[Worker]], tmp_path: Path
) -> None:
    """Four waits at the same instant, three on workers that never saw the scan start (and so
    would read it at once, then every poll_interval): one of them becomes its reader."""
    fleet = [await workers() for _ in range(4)]
    scan_id = await start_scan(fleet[0][0], tmp_path)
    waits = [asyncio.create_task(client.wait_for_result(scan_id)) for client, _, _ in fleet]
    await asyncio.sleep(0.3)  # 15 poll intervals: unshared, each joiner would read ~6 times
    running_reads = reads_of(emu, scan_id)
    emu.finish_scan(scan_id)
    fleet[2][2].receive(callback(scan_id))
    async with asyncio.timeout(GENEROUS):
        await asyncio.gather(*waits)
    assert running_reads <= 6  # one reader's cold schedule, not four
    assert reads_of(emu, scan_id) - running_reads == 1  # and one read of the finished scan


async def test_a_failed_scan_is_shared_as_the_same_failure(
    emu: Emulator, workers: Callable[[], Awaitable[Worker]], tmp_path: Path
) -> None:
    (first, _, receiver), (second, _, _) = await workers(), await workers()
    scan_id = await start_scan(first, tmp_path)
    waits = [asyncio.create_task(first.wait_for_result(scan_id))]
    await asyncio.sleep(0.05)
    waits.append(asyncio.create_task(second.wait_for_result(scan_id)))
    await asyncio.sleep(0.1)
    emu.finish_scan(scan_id, Outcome.failed())
    receiver.receive(callback(scan_id))
    async with asyncio.timeout(GENEROUS):
        outcomes = await asyncio.gather(*waits, return_exceptions=True)
    assert all(isinstance(o, ScanFailed) for o in outcomes)
    assert reads_of(emu, scan_id) == 1


async def test_a_damaged_stored_result_is_read_again_never_believed(
    emu: Emulator,
    workers: Callable[[], Awaitable[Worker]],
    tmp_path: Path,
    redis_url: str,
    prefix: str,
) -> None:
    client, fleet, receiver = await workers()
    scan_id = await start_scan(client, tmp_path)
    emu.finish_scan(scan_id)
    raw = redis.asyncio.Redis.from_url(redis_url)
    await raw.set(fleet._key("result", scan_id), b'{"result": {"scanId": 5}}')  # an attacker's
    await raw.aclose()
    receiver.receive(callback(scan_id))
    async with asyncio.timeout(GENEROUS):
        result = await client.wait_for_result(scan_id)
    assert isinstance(result, ScanResult) and result.scan_id == scan_id
    assert reads_of(emu, scan_id) == 1


async def test_a_busy_worker_that_hears_of_a_read_after_it_ended_does_not_wait_out_its_lease(
    emu: Emulator,
    workers: Callable[[], Awaitable[Worker]],
    tmp_path: Path,
    redis_url: str,
) -> None:
    """The gate told this worker that another one reads the scan; on a busy event loop, that
    read ended and its announcement went by before this worker began listening for it (seen in
    CI: two workers waited out the 30 s read lease). It takes the answer at once instead."""
    (reader, reader_fleet, _), (_, late, _) = await workers(), await workers()
    running = await start_scan(reader, tmp_path)
    finished = await start_scan(reader, tmp_path)
    emu.finish_scan(finished)
    raw = redis.asyncio.Redis.from_url(redis_url)
    for scan_id in (running, finished):
        await raw.set(reader_fleet._key("reading", scan_id), reader_fleet._me)
        await reader_fleet._read_and_share(reader.get_result, scan_id)  # read, shared, released
        async with asyncio.timeout(GENEROUS):
            while await raw.exists(reader_fleet._key("reading", scan_id)):
                await asyncio.sleep(0.01)
    await raw.aclose()
    async with asyncio.timeout(2.0):  # the read lease is 30 s
        assert isinstance(await late._await_other_read(running), ScanPending)
        done = await late._await_other_read(finished)
    assert isinstance(done, ScanResult) and done.scan_id == finished
    assert reads_of(emu, running) == reads_of(emu, finished) == 1  # no read of its own


async def test_a_reader_that_gives_its_lease_back_unused_wakes_who_waits_for_it(
    emu: Emulator,
    workers: Callable[[], Awaitable[Worker]],
    tmp_path: Path,
    redis_url: str,
) -> None:
    """A reader fenced before it read (its leadership lapsed), or whose share failed, gives
    the scan's read lease back without an answer. A worker waiting for that answer hears of it
    at once and goes back to its schedule, instead of waiting out the 30 s read lease."""
    (reader, reader_fleet, _), (_, waiting_fleet, _) = await workers(), await workers()
    scan_id = await start_scan(reader, tmp_path)
    raw = redis.asyncio.Redis.from_url(redis_url)
    try:
        await raw.set(reader_fleet._key("reading", scan_id), reader_fleet._me)
        waiter = asyncio.create_task(waiting_fleet._await_other_read(scan_id))
        async with asyncio.timeout(GENEROUS):
            while scan_id not in waiting_fleet._reads:  # listening, the lease seen held
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        await reader_fleet._give_back(scan_id)
        async with asyncio.timeout(2.0):  # the read lease is 30 s
            assert isinstance(await waiter, ScanPending)
        assert not await raw.exists(reader_fleet._key("reading", scan_id))
    finally:
        await raw.aclose()
    assert reads_of(emu, scan_id) == 0


async def test_redis_down_each_worker_goes_on_alone_without_hanging(
    emu: Emulator, tmp_path: Path
) -> None:
    async with (
        ImagetwinClient(
            emu.api_key,
            base_url=emu.url,
            scan_limit=RateLimit(20, per=1.0),
            result_limit=RateLimit(60, per=1.0),
            poll_interval=0.02,
            max_poll_interval=60.0,
        ) as client,
        Fleet.from_url("redis://127.0.0.1:1/0", emu.api_key) as fleet,  # nothing listens
        fleet.attach(client),
    ):
        receiver = CallbackReceiver(fleet, PUBLIC_URL, token=TOKEN, rehint_after=60.0)
        scan_id = await start_scan(client, tmp_path)
        waiting = asyncio.create_task(client.wait_for_result(scan_id))
        await asyncio.sleep(0.1)
        emu.finish_scan(scan_id)
        assert receiver.receive(callback(scan_id)) == 204  # still hints this worker
        async with asyncio.timeout(GENEROUS):
            result = await waiting
    assert result.scan_id == scan_id
    assert reads_of(emu, scan_id) == 1
    assert fleet.stats.fallbacks >= 1
    assert emu.counters.scans_billed == 1


async def test_a_dead_leaders_scans_are_polled_by_the_next_leader_within_the_lease(
    emu: Emulator, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """The fleet's scheduler is SIGKILLed (here: its lease is left in Redis, unrenewed, as a
    killed process leaves it): this worker leaves its scan to it while the lease lasts (its own
    schedule parked for 60 s), then wins the next term and polls the scan on its own schedule
    again (every 0.02 s cold: at once)."""
    async with (
        ImagetwinClient(
            emu.api_key,
            base_url=emu.url,
            scan_limit=RateLimit(20, per=1.0),
            result_limit=RateLimit(60, per=1.0),
            poll_interval=0.02,
            max_poll_interval=60.0,
        ) as client,
        Fleet.from_url(redis_url, emu.api_key, prefix=prefix, leader_lease=0.6) as fleet,
    ):
        raw = redis.asyncio.Redis.from_url(redis_url)
        await raw.set(fleet._key_of("leader"), "7:a-killed-worker", px=500)
        await raw.aclose()
        async with fleet.attach(client):
            assert not fleet.leading
            scan_id = await start_scan(client, tmp_path, callback=False)  # polled, cold
            waiting = asyncio.create_task(client.wait_for_result(scan_id))
            emu.finish_scan(scan_id)
            await asyncio.sleep(0.3)
            assert not waiting.done()  # the dead leader still "polls" it
            assert reads_of(emu, scan_id) == 0
            async with asyncio.timeout(2.0):  # lease lapses at 0.5 s, a tick every 0.2 s
                result = await waiting
            assert fleet.leading
    assert result.scan_id == scan_id
    assert fleet.stats.elections == 1
    assert fleet.stats.term == 0  # handed back on the way out
    assert reads_of(emu, scan_id) == 1


# ---- configuration in one place: imagetwin_lifespan -------------------------------------------


async def test_a_fleet_without_a_shared_callback_token_refuses_to_start(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four workers each drawing a token would answer 404 to three callbacks in four."""
    monkeypatch.setenv("IMAGETWIN_REDIS_URL", redis_url)
    monkeypatch.delenv("IMAGETWIN_CALLBACK_TOKEN", raising=False)
    monkeypatch.setenv("IMAGETWIN_API_KEY", "sk-test-fleet")
    app = FastAPI()
    lifespan = imagetwin_lifespan(public_url="https://my.service/imagetwin/callbacks")
    with pytest.raises(ConfigurationError, match="IMAGETWIN_CALLBACK_TOKEN"):
        async with lifespan(app):
            pass


async def test_the_lifespan_reads_the_fleet_from_the_environment(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGETWIN_REDIS_URL", redis_url)
    monkeypatch.setenv("IMAGETWIN_CALLBACK_TOKEN", TOKEN)
    monkeypatch.setenv("IMAGETWIN_API_KEY", "sk-test-fleet")
    made: list[dict[str, object]] = []

    def make_client(**limits: object) -> ImagetwinClient:
        made.append(limits)
        return ImagetwinClient(**limits)  # type: ignore[arg-type]

    app = FastAPI()
    lifespan = imagetwin_lifespan(make_client, public_url="https://my.service/imagetwin/callbacks")
    async with lifespan(app):
        request = Request({"type": "http", "app": app})
        fleet = get_fleet(request)
        receiver = get_callback_receiver(request)
        assert isinstance(fleet, Fleet)
        assert receiver.client is fleet  # callbacks go to the fleet, not one worker
        assert receiver.callback_url.endswith(f"/{TOKEN}")
        assert {type(v) for v in made[0].values()} == {RedisLimiter}
    assert get_fleet(Request({"type": "http", "app": app})) is None
    raw = redis.Redis.from_url(redis_url)
    for base in (limiter_key("sk-test-fleet", g) for g in ("scan", "result", "fleet")):
        stale = list(raw.scan_iter(match=f"{base}*"))
        if stale:
            raw.delete(*stale)
    raw.close()


async def test_every_worker_learns_scan_durations_from_the_whole_fleet(
    workers: Callable[[], Awaitable[Worker]], redis_url: str
) -> None:
    """Four workers each seeing a quarter of the scans would each learn four times slower."""
    (a, fleet_a, _), (b, _, _) = await workers(), await workers()
    raw = redis.asyncio.Redis.from_url(redis_url)
    junk = {"k": "ob", "p": "someone", "lo": "nan", "hi": "1e308"}
    await raw.xadd(fleet_a._stream, junk)  # type: ignore[arg-type]  # a damaged entry
    await raw.aclose()
    for seconds in (50.0, 60.0, 70.0, 55.0, 65.0):
        a.scheduler.observe(seconds - 5.0, seconds + 5.0)
    async with asyncio.timeout(GENEROUS):
        while not b.scheduler.model.ready:
            await asyncio.sleep(0.01)
    assert b.scheduler.model.fit == pytest.approx(a.scheduler.model.fit)


async def test_a_callback_before_the_scheduler_adopts_the_scan_is_not_left_to_the_slow_poll(
    emu: Emulator, workers: Callable[[], Awaitable[Worker]], tmp_path: Path
) -> None:
    """The fleet's scheduler (the first worker) receives a scan's callback before anyone waits
    for it; a follower that started it waits later: the callback was kept, so the follower reads
    it at once itself (the scheduler adopts it but leaves that read to its waiter), not at the
    60 s poll of a scan that expects one."""
    (_, scheduler, receiver), (follower, _, _) = await workers(), await workers()
    assert scheduler.leading
    scan_id = await start_scan(follower, tmp_path)
    emu.finish_scan(scan_id)
    receiver.receive(callback(scan_id))  # nobody here waits, nor saw it start
    await asyncio.sleep(0.2)
    async with asyncio.timeout(GENEROUS):
        result = await follower.wait_for_result(scan_id)
    assert result.scan_id == scan_id
    assert reads_of(emu, scan_id) == 1
    assert scheduler.stats.api_reads == 0


async def test_on_a_callback_the_waiter_reads_its_scan_itself_once_fleet_wide(
    emu: Emulator, workers: Callable[[], Awaitable[Worker]], tmp_path: Path
) -> None:
    """Four workers; the first leads. A follower waits for a scan; its callback lands on a third
    worker (the load balancer's choice). The waiter reads it itself at once, not through the
    leader's schedule, and the leader, which also polls it, sends no read of its own: one
    result GET at the emulator for the scan, fleet-wide."""
    fleet = [await workers() for _ in range(4)]
    (_, leader, _), (waiter, waiter_fleet, _), (_, _, receiving) = fleet[0], fleet[1], fleet[2]
    assert leader.leading and not waiter_fleet.leading
    scan_id = await start_scan(waiter, tmp_path)
    waiting = asyncio.create_task(waiter.wait_for_result(scan_id))
    await until(lambda: leader.stats.adopted >= 1)  # the leader polls it for the waiter
    emu.finish_scan(scan_id)
    assert receiving.receive(callback(scan_id)) == 204
    async with asyncio.timeout(GENEROUS):
        result = await waiting
    assert result.scan_id == scan_id
    assert waiter_fleet.stats.api_reads == 1  # the waiter read it
    assert leader.stats.api_reads == 0
    # The leader's safety net (a hint leader_lease / 3 after the callback) finds it stored.
    await until(lambda: leader.stats.results_shared >= 1 or scan_id not in leader._remote)
    assert reads_of(emu, scan_id) == 1
    assert leader.stats.api_reads == 0


async def test_when_the_waiters_callback_read_fails_the_leader_reads_it(
    emu: Emulator, workers: Callable[[], Awaitable[Worker]], tmp_path: Path
) -> None:
    """The waiter's own read on its callback fails (a gateway answering 503 through all its
    retries): its scan is not left to its 60 s fallback poll; the leader, which also polls it,
    hints itself after leader_lease / 3 and reads it, and the waiter takes its answer."""
    (_, leader, _), (waiter, waiter_fleet, receiving) = await workers(), await workers()
    assert leader.leading and not waiter_fleet.leading
    scan_id = await start_scan(waiter, tmp_path)
    waiting = asyncio.create_task(waiter.wait_for_result(scan_id))
    await until(lambda: leader.stats.adopted >= 1)
    polled = leader.stats.api_reads  # the leader may have polled it running already
    emu.finish_scan(scan_id)
    emu.inject_fault("503", endpoint="result", times=6)  # the first try and its 5 retries
    assert receiving.receive(callback(scan_id)) == 204
    async with asyncio.timeout(GENEROUS):
        result = await waiting
    assert result.scan_id == scan_id
    assert waiter_fleet.stats.api_reads == 1  # it tried, once, through its retries
    assert leader.stats.api_reads > polled  # the safety net read it
