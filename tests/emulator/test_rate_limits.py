"""429s over HTTP: each algorithm, counted per key and group on receipt, with a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from imagetwin_async import _spec
from imagetwin_async.emulator import Emulator, Endpoint

from .._files import png_bytes
from .conftest import form

Factory = Callable[..., Awaitable[Emulator]]
RESULT = f"/result/{_spec.SANDBOX_FINISHED_ID}"


class Driver:
    """An emulator on a hand-moved clock, and a session that sends its key."""

    def __init__(self, emu: Emulator, now: list[float], http: aiohttp.ClientSession) -> None:
        self.emu, self.now, self.http = emu, now, http

    async def scan(self, at: float, endpoint: str = "scan") -> int:
        self.now[0] = at
        field = {"scanPdf": "pdfFile", "scanImages": "imageFile"}.get(endpoint, "file")
        name = "a.pdf" if endpoint == "scanPdf" else "a.png"
        async with self.http.post(
            f"{self.emu.url}/{endpoint}", data=form([(name, png_bytes())], field=field)
        ) as r:
            return r.status

    async def result(self, at: float) -> tuple[int, str | None]:
        self.now[0] = at
        async with self.http.get(self.emu.url + RESULT) as r:
            return r.status, r.headers.get("Retry-After")


@pytest.fixture
async def driver(
    imagetwin_emulator_factory: Factory, request: pytest.FixtureRequest
) -> AsyncIterator[Driver]:
    now = [0.0]
    options = getattr(request, "param", {})
    emu = await imagetwin_emulator_factory(
        time_source=lambda: now[0], start_time=0.0, corrupt_documents="accept", **options
    )
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {emu.api_key}"}) as http:
        yield Driver(emu, now, http)


@pytest.mark.parametrize("driver", [{"rate_limit_algorithm": "fixed"}], indirect=True)
async def test_fixed_window_over_http(driver: Driver) -> None:
    statuses = [await driver.scan(at=30.0 + i) for i in range(21)]
    assert statuses == [200] * 20 + [429]
    assert await driver.scan(at=59.9) == 429
    # The calendar minute turns at 60: another 20 at once, 40 within 30 seconds.
    assert [await driver.scan(at=60.0) for _ in range(21)] == [200] * 20 + [429]
    assert driver.emu.counters.scans_billed == 40
    assert driver.emu.counters.rate_limited == {"scan": 3}


@pytest.mark.parametrize("driver", [{"rate_limit_algorithm": "sliding"}], indirect=True)
async def test_sliding_window_over_http(driver: Driver) -> None:
    assert [await driver.scan(at=float(i)) for i in range(20)] == [200] * 20
    assert await driver.scan(at=59.0) == 429
    assert await driver.scan(at=60.0) == 200  # the request at 0 has left the window
    assert await driver.scan(at=60.5) == 429
    assert await driver.scan(at=61.0) == 200


@pytest.mark.parametrize("driver", [{"rate_limit_algorithm": "token-bucket"}], indirect=True)
async def test_token_bucket_over_http(driver: Driver) -> None:
    assert [await driver.scan(at=0.0) for _ in range(21)] == [200] * 20 + [429]
    assert await driver.scan(at=2.9) == 429
    assert await driver.scan(at=3.0) == 200
    assert await driver.scan(at=3.1) == 429


@pytest.mark.parametrize("driver", [{"rate_limit_algorithm": "sliding"}], indirect=True)
async def test_result_group_allows_60(driver: Driver) -> None:
    statuses = [(await driver.result(at=1.0))[0] for _ in range(61)]
    assert statuses == [200] * 60 + [429]
    status, retry_after = await driver.result(at=2.0)
    assert (status, retry_after) == (429, "59")  # integer seconds at speed 1
    # Results do not use the scan budget, nor scans the result budget.
    assert await driver.scan(at=2.0) == 200


@pytest.mark.parametrize("driver", [{"rate_limit_algorithm": "sliding"}], indirect=True)
async def test_deprecated_and_sandbox_share_the_scan_budget(driver: Driver) -> None:
    endpoints = ["scan", "scanPdf", "scanImages", "sandbox/scan"] * 5
    assert [await driver.scan(at=0.0, endpoint=e) for e in endpoints] == [200] * 20
    assert await driver.scan(at=1.0, endpoint="sandbox/scan") == 429
    assert await driver.scan(at=1.0, endpoint="scanPdf") == 429
    assert driver.emu.counters.rate_limited == {"sandbox/scan": 1, "scanPdf": 1}


@pytest.mark.parametrize("driver", [{"rate_limit_algorithm": "sliding"}], indirect=True)
async def test_overview_is_not_limited_by_default(driver: Driver) -> None:
    url = f"{driver.emu.url}/scan-overview?startDate=2025-01-01&endDate=2025-01-02"
    for _ in range(100):
        async with driver.http.get(url) as r:
            assert r.status == 200
    driver.emu.configure(rate_limits={"overview": (1, 60.0)})
    statuses = []
    for _ in range(2):
        async with driver.http.get(url) as r:
            statuses.append(r.status)
    assert statuses == [200, 429]


@pytest.mark.parametrize("driver", [{"rate_limit_algorithm": "sliding"}], indirect=True)
async def test_a_429_starts_no_scan_and_is_recorded(driver: Driver) -> None:
    for _ in range(20):
        await driver.scan(at=0.0)
    assert await driver.scan(at=0.0) == 429
    record = driver.emu.requests[-1]
    assert (record.endpoint, record.status, record.scan_id) == (Endpoint.SCAN, 429, None)
    assert record.file_names == ()
    assert len(driver.emu.scans) == 20


@pytest.mark.parametrize("driver", [{"rate_limit_algorithm": "sliding"}], indirect=True)
async def test_400s_count_against_the_budget(driver: Driver) -> None:
    """The server counts on receipt, before it reads the body."""
    for _ in range(20):
        driver.now[0] = 0.0
        async with driver.http.post(f"{driver.emu.url}/scan", data=form([("a.txt", b"x")])) as r:
            assert r.status == 400
    assert await driver.scan(at=0.0) == 429


@pytest.mark.parametrize(
    "driver", [{"rate_limit_algorithm": "sliding", "retry_after": False}], indirect=True
)
async def test_retry_after_can_be_left_out(driver: Driver) -> None:
    for _ in range(60):
        await driver.result(at=0.0)
    assert await driver.result(at=0.0) == (429, None)


@pytest.mark.parametrize("driver", [{"rate_limit_algorithm": None}], indirect=True)
async def test_limits_off(driver: Driver) -> None:
    assert all([await driver.scan(at=0.0) == 200 for _ in range(30)])


async def test_each_key_has_its_own_budget(imagetwin_emulator_factory: Factory) -> None:
    emu = await imagetwin_emulator_factory(api_keys=["a", "b"], rate_limits={"result": (1, 60.0)})
    async with aiohttp.ClientSession() as http:
        statuses = []
        for key in ("a", "a", "b"):
            async with http.get(emu.url + RESULT, headers={"Authorization": f"Bearer {key}"}) as r:
                statuses.append(r.status)
    assert statuses == [200, 429, 200]


async def test_speed_shrinks_windows_and_retry_after(imagetwin_emulator_factory: Factory) -> None:
    """At speed 600 a minute lasts 0.1 s: Retry-After is real seconds, with decimals."""
    emu = await imagetwin_emulator_factory(speed=600, rate_limits={"result": (1, 60.0)})
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {emu.api_key}"}) as http:
        async with http.get(emu.url + RESULT) as r:
            assert r.status == 200
        async with http.get(emu.url + RESULT) as r:
            assert r.status == 429
            retry_after = float(r.headers["Retry-After"])
        assert 0 < retry_after <= 0.1
        await asyncio.sleep(retry_after + 0.01)
        async with http.get(emu.url + RESULT) as r:
            assert r.status == 200
