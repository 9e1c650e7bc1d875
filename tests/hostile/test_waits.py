"""Bounded waits (issue 12, items 6-8): no answer and no outage holds a call for longer than
its budget.

Adversaries: a service (or a proxy) answering 429/503 with Retry-After of a day, a billion
seconds or a date in 2100; a server that never answers; Redis restarted or partitioned in the
middle of a batch, and Redis gone for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from imagetwin_async import (
    ImagetwinClient,
    PollTimeout,
    RateLimit,
    RateLimited,
    ServiceUnavailable,
)
from imagetwin_async._errors import LimiterUnavailable
from imagetwin_async.emulator import Emulator
from imagetwin_async.redis import RedisLimiter, RedisLimiterError, redis_limits

from .._files import png_bytes
from ._proxy import CuttableProxy
from ._server import Answer, HostileServer
from .conftest import SCAN_ID, make_client

HUGE = ["86400", "999999999", "Wed, 01 Dec 2100 00:00:00 GMT", "1e999999"]


@pytest.mark.parametrize("value", HUGE[:3])
async def test_a_huge_retry_after_raises_at_once_with_the_servers_value(
    server: HostileServer, client: ImagetwinClient, pdf: Path, value: str
) -> None:
    server.answer = lambda seen: Answer(429, headers=(("Retry-After", value),))
    started = time.monotonic()
    with pytest.raises(RateLimited) as caught:
        await client.get_result(SCAN_ID)
    with pytest.raises(RateLimited):
        await client.scan(pdf)
    assert time.monotonic() - started < 2.0
    assert caught.value.retry_after is not None and caught.value.retry_after > 80_000
    # Nothing was paused: the endpoint is not frozen for the next caller.
    assert client.limits["result"].paused_for == 0.0
    assert client.limits["scan"].paused_for == 0.0


async def test_a_huge_retry_after_on_503_raises_service_unavailable(
    server: HostileServer, client: ImagetwinClient
) -> None:
    server.answer = lambda seen: Answer(503, headers=(("Retry-After", "86400"),))
    with pytest.raises(ServiceUnavailable) as caught:
        await asyncio.wait_for(client.get_result(SCAN_ID), 2.0)
    assert caught.value.retry_after == 86400.0


async def test_a_retry_after_within_the_cap_is_honoured(server: HostileServer) -> None:
    answers = iter([Answer(429, headers=(("Retry-After", "0.3"),))])

    def answer(seen: object) -> Answer:
        return next(answers, Answer(202))

    server.answer = answer
    async with make_client(server, max_retry_after=1.0) as client:
        started = time.monotonic()
        await client.get_result(SCAN_ID)
        assert time.monotonic() - started >= 0.29


@pytest.mark.parametrize(
    "limit", [RateLimit(20, per=60.0), RateLimit(20, per=60.0, strategy="token_bucket")]
)
async def test_an_in_process_limiter_never_pauses_beyond_max_pause(limit: RateLimit) -> None:
    limiter = limit.build(name="POST /scan")
    assert limiter.on_rate_limited(86400.0) == pytest.approx(300.0)
    assert limiter.snapshot().paused_for <= 300.0


async def test_wait_for_result_honours_its_timeout_when_the_server_never_answers(
    server: HostileServer, client: ImagetwinClient
) -> None:
    server.answer = lambda seen: Answer(hang=True)
    started = time.monotonic()
    with pytest.raises(PollTimeout):
        await client.wait_for_result(SCAN_ID, timeout=0.5)
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("value", ["-5", "garbage", "", "Thu, 01 Jan 1970 00:00:00 GMT", "1e3"])
async def test_a_nonsense_retry_after_means_back_off(
    server: HostileServer, client: ImagetwinClient, value: str
) -> None:
    server.answer = lambda seen: Answer(429, headers=(("Retry-After", value),))
    with pytest.raises(RateLimited):
        await asyncio.wait_for(client.get_result(SCAN_ID), 5.0)


# ---- Redis ----------------------------------------------------------------------------


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    return f"redis://127.0.0.1:{port}{parts.path}"


async def test_redis_pause_is_capped_and_refresh_returns_at_once(redis_url: str) -> None:
    key = f"imagetwin-hostile:{{{uuid.uuid4().hex}}}"
    limiter = RedisLimiter.from_url(redis_url, RateLimit(2, per=1.0), key=key)
    try:
        (await limiter.acquire()).release()
        assert limiter.on_rate_limited(86400.0) == pytest.approx(5.0)  # max_pause = 5 * per
        waiter = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(0.05)
        waiter.cancel()
        await asyncio.sleep(0)
        started = time.monotonic()
        state = await limiter.refresh()
        assert time.monotonic() - started < 0.5
        assert 0 < state.paused_for <= 5.0
    finally:
        await limiter.aclose()


def _images(tmp_path: Path, count: int) -> list[Path]:
    paths = []
    for i in range(count):
        path = tmp_path / f"fig{i}.png"
        path.write_bytes(png_bytes(i))
        paths.append(path)
    return paths


@contextlib.asynccontextmanager
async def _client_on_redis(
    emu: Emulator, redis_url: str, *, socket_timeout: float, outage_timeout: float
) -> AsyncIterator[ImagetwinClient]:
    """A client on the emulator whose limits live in Redis at ``redis_url`` (fast polls and
    back-off, so an outage is met within a test's seconds)."""
    limits = redis_limits(
        redis_url,
        emu.api_key,
        scan_limit=RateLimit(20, per=1.0),
        result_limit=RateLimit(60, per=1.0),
        prefix=f"imagetwin-hostile-{uuid.uuid4().hex}",
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
    )
    async with (
        limits,
        ImagetwinClient(
            emu.api_key,
            base_url=emu.url,
            scan_limit=limits.scan,
            result_limit=limits.result,
            poll_interval=0.02,
            max_poll_interval=0.1,
            backoff_base=0.01,
            backoff_cap=0.1,
            limiter_outage_timeout=outage_timeout,
        ) as client,
    ):
        yield client


async def test_a_redis_restart_mid_batch_costs_time_not_items(
    redis_url: str, tmp_path: Path
) -> None:
    """Redis drops every connection for 0.3 s while 30 items queue: every item still ends ok."""
    async with (
        Emulator(speed=60, processing_time=1.0) as emu,
        CuttableProxy("127.0.0.1", urlsplit(redis_url).port or 6379) as proxy,
        _client_on_redis(
            emu, _via(redis_url, proxy.port), socket_timeout=0.5, outage_timeout=10.0
        ) as client,
    ):
        batch = asyncio.ensure_future(client.submit_and_wait(_images(tmp_path, 30), timeout=30))
        await asyncio.sleep(0.3)
        await proxy.cut()
        await asyncio.sleep(0.3)
        await proxy.restore()
        outcomes = await batch
    assert [o.error for o in outcomes if not o.ok] == []
    assert emu.counters.scans_billed == 30


async def test_a_dead_redis_fails_the_batch_in_its_budget_instead_of_hanging(
    tmp_path: Path,
) -> None:
    async with (
        Emulator(speed=60, processing_time=1.0) as emu,
        # Nothing listens on port 1.
        _client_on_redis(
            emu, "redis://127.0.0.1:1/0", socket_timeout=0.2, outage_timeout=1.0
        ) as client,
    ):
        started = time.monotonic()
        outcomes = await asyncio.wait_for(client.submit_and_wait(_images(tmp_path, 5)), timeout=10)
        elapsed = time.monotonic() - started
    assert elapsed < 5.0
    assert all(isinstance(o.error, RedisLimiterError) for o in outcomes)
    assert all(isinstance(o.error, LimiterUnavailable) and o.scan_id is None for o in outcomes)
    assert emu.counters.scans_billed == 0


async def test_a_redis_outage_during_polling_ends_the_wait_in_its_budget(
    redis_url: str, tmp_path: Path
) -> None:
    async with (
        Emulator(speed=60, processing_time=600.0) as emu,
        CuttableProxy("127.0.0.1", urlsplit(redis_url).port or 6379) as proxy,
        _client_on_redis(
            emu, _via(redis_url, proxy.port), socket_timeout=0.2, outage_timeout=1.0
        ) as client,
    ):
        started = await client.scan(_images(tmp_path, 1))
        await proxy.cut()
        begun = time.monotonic()
        with pytest.raises(RedisLimiterError):
            await asyncio.wait_for(client.wait_for_result(started.scan_id), timeout=10)
        assert time.monotonic() - begun < 5.0
