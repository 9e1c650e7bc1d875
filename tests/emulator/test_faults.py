"""Injected faults: 503/504, dropped connections before and after registering, delays."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from imagetwin_async import _spec
from imagetwin_async.emulator import Emulator, FaultKind

from .._files import png_bytes
from .conftest import Scanner, form

RESULT = f"/result/{_spec.SANDBOX_FINISHED_ID}"


@pytest.mark.parametrize("status", [503, 504])
@pytest.mark.parametrize("retry_after", [None, 7])
async def test_unavailable(
    emu: Emulator, post_scan: Scanner, status: int, retry_after: int | None
) -> None:
    emu.inject_fault(str(status), endpoint="scan", times=2, retry_after=retry_after)
    async with (
        aiohttp.ClientSession() as plain,  # answered before the key is even looked at
        plain.post(f"{emu.url}/scan", data=form([("a.png", png_bytes())])) as r,
    ):
        assert r.status == status
        assert "unavailable" in (await r.json())["message"]
        expected = None if retry_after is None else str(retry_after)
        assert r.headers.get("Retry-After") == expected
    assert (await post_scan([("a.png", png_bytes())]))[0] == status
    assert (await post_scan([("a.png", png_bytes())]))[0] == 200  # only `times` requests
    assert emu.counters.faults_injected == 2
    assert emu.counters.scans_billed == 1
    assert [r.fault for r in emu.requests] == [str(status), str(status), None]


async def test_faults_target_one_endpoint(emu: Emulator, http: aiohttp.ClientSession) -> None:
    emu.inject_fault(FaultKind.SERVICE_UNAVAILABLE, endpoint="scan")
    async with http.get(emu.url + RESULT) as r:
        assert r.status == 200
    emu.inject_fault("504")  # any endpoint
    async with http.get(emu.url + RESULT) as r:
        assert r.status == 504
    assert len(emu.faults.pending()) == 1


async def test_a_lagging_replica_answers_404_for_a_scan_it_has(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    emu.inject_fault("404", endpoint="result")
    async with http.get(emu.url + RESULT) as r:
        assert r.status == 404
        assert "No result found" in (await r.json())["message"]
    async with http.get(emu.url + RESULT) as r:
        assert r.status == 200  # only `times` requests
    assert [r.fault for r in emu.requests] == ["404", None]


async def test_unavailable_does_not_count_against_the_rate_limit(
    imagetwin_emulator_factory: Callable[..., Awaitable[Emulator]],
) -> None:
    emu = await imagetwin_emulator_factory(rate_limits={"result": (1, 60.0)})
    emu.inject_fault("503", times=3)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {emu.api_key}"}) as http:
        statuses = []
        for _ in range(5):
            async with http.get(emu.url + RESULT) as r:
                statuses.append(r.status)
    assert statuses == [503, 503, 503, 200, 429]


async def test_drop_before_registering(emu: Emulator, post_scan: Scanner) -> None:
    emu.inject_fault("drop-before", endpoint="scan")
    with pytest.raises(aiohttp.ClientError):
        await post_scan([("a.png", png_bytes())])
    assert emu.scans == {}
    assert emu.counters.scans_billed == 0
    record = emu.requests[-1]
    assert (record.dropped, record.status, record.scan_id) == (True, None, None)
    assert (await post_scan([("a.png", png_bytes())]))[0] == 200


async def test_drop_after_registering_bills_the_scan(emu: Emulator, post_scan: Scanner) -> None:
    emu.inject_fault("drop-after", endpoint="scan")
    with pytest.raises(aiohttp.ClientError):
        await post_scan([("a.png", png_bytes())])
    assert emu.counters.scans_billed == 1
    record = emu.requests[-1]
    assert record.dropped
    assert record.status is None
    assert record.scan_id in emu.scans  # billed, but the client never learnt the id


async def test_delay(imagetwin_emulator_factory: Callable[..., Awaitable[Emulator]]) -> None:
    emu = await imagetwin_emulator_factory(speed=10)
    emu.inject_fault("delay", endpoint="result", delay=3.0)  # 3 emulated s = 0.3 real s
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {emu.api_key}"}) as http:
        start = time.monotonic()
        async with http.get(emu.url + RESULT) as r:
            assert r.status == 200
        assert time.monotonic() - start >= 0.29
    record = emu.requests[-1]
    assert record.answered_at is not None
    assert record.answered_at - record.time >= 2.9


async def test_delay_of_a_scan_answer_after_it_is_counted(
    imagetwin_emulator_factory: Callable[..., Awaitable[Emulator]],
) -> None:
    emu = await imagetwin_emulator_factory(speed=100, processing_time=0)
    emu.inject_fault("delay", endpoint="scan", delay=20.0)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {emu.api_key}"}) as http:
        post = asyncio.ensure_future(
            http.post(f"{emu.url}/scan", data=form([("a.png", png_bytes())]))
        )
        await asyncio.sleep(0.05)
        assert emu.counters.scans_billed == 1  # registered while the answer is held
        async with await post as r:
            assert r.status == 200


async def test_unknown_fault_kind(emu: Emulator) -> None:
    with pytest.raises(ValueError, match="teapot"):
        emu.inject_fault("teapot")
    with pytest.raises(ValueError, match="times"):
        emu.inject_fault("503", times=0)
