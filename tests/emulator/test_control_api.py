"""The HTTP control API under /_emulator/: what a test in another process drives it with."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import aiohttp
import pytest

from imagetwin_async import _spec
from imagetwin_async.emulator import Algorithm, Emulator, LogNormalTime

from .._files import png_bytes
from .conftest import Scanner


@pytest.fixture
async def control(emu: Emulator) -> AsyncIterator[Any]:
    async with aiohttp.ClientSession(base_url=emu.origin) as session:

        async def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
            async with session.request(method, f"/_emulator/{path}", json=body) as r:
                payload = await r.json()
                assert r.status == 200, payload
                return payload

        call.session = session  # type: ignore[attr-defined]
        yield call


async def test_state_and_config(emu: Emulator, control: Any) -> None:
    settings = await control(
        "POST",
        "config",
        {
            "speed": 30,
            "rateLimitAlgorithm": "token-bucket",
            "rateLimits": {"scan": [5, 10]},
            "retryAfter": False,
            "processingTime": {"median": 90, "sigma": 0.4},
            "corruptDocuments": "reject",
        },
    )
    assert settings["speed"] == 30
    assert emu.clock.speed == 30
    assert emu.rate_limit_algorithm is Algorithm.TOKEN_BUCKET
    assert emu.limiter.limits == {"scan": (5, 10.0)}
    assert emu.retry_after is False
    assert emu.processing_time == LogNormalTime(90.0, 0.4)
    assert emu.corrupt_documents == "reject"
    await control("POST", "config", {"processingTime": 2, "rateLimitAlgorithm": "off"})
    state = await control("GET", "state")
    assert state["settings"]["rateLimitAlgorithm"] is None
    assert state["settings"]["processingTime"] == {"seconds": 2.0}
    await control("POST", "config", {"processingTime": {"median": 20, "pageExponent": 1}})
    assert emu.processing_time == LogNormalTime(20.0, 0.5, page_exponent=1.0)
    state = await control("GET", "state")
    assert state["settings"]["processingTime"]["pageExponent"] == 1.0
    assert state["settings"]["url"] == emu.url
    assert state["counters"]["scansBilled"] == 0


async def test_script_faults_records_and_reset(
    emu: Emulator, control: Any, post_scan: Scanner
) -> None:
    await control("POST", "script", {"outcome": "finished", "localDuplicateCount": 3, "times": 1})
    await control("POST", "script", {"outcome": "never", "fileName": "slow.png"})
    await control("POST", "faults", {"kind": "503", "endpoint": "scan", "retryAfter": 2})
    assert (await control("GET", "state"))["pendingFaults"][0]["kind"] == "503"
    assert (await post_scan([("a.png", png_bytes())]))[0] == 503
    _, first = await post_scan([("a.png", png_bytes())])
    _, slow = await post_scan([("slow.png", png_bytes())])
    assert emu.scans[first["scanId"]].findings.local_duplicate_count == 3
    scans = await control("GET", "scans")
    assert {s["scanId"] for s in scans} == {first["scanId"], slow["scanId"]}
    assert next(s for s in scans if s["scanId"] == slow["scanId"])["endsAt"] is None  # never
    requests = await control("GET", "requests")
    assert [r["status"] for r in requests] == [503, 200, 200]
    assert requests[1]["fileNames"] == ["a.png"]
    assert requests[1]["authorization"] is True
    assert len(await control("GET", "requests?since=2")) == 1
    finished = await control("POST", f"scans/{slow['scanId']}/finish", {"outcome": "failed"})
    assert finished["fails"] is True
    state = await control("GET", "state")
    assert state["counters"]["scansBilled"] == 2
    assert state["counters"]["faultsInjected"] == 1
    await control("POST", "reset")
    assert emu.scans == {}
    assert list(emu.requests) == []
    assert emu.counters.scans_billed == 0


async def test_drop_callbacks_and_overview(emu: Emulator, control: Any) -> None:
    await control("POST", "callbacks/drop", {"times": None})
    assert emu._callbacks_to_drop == float("inf")
    await control("POST", "callbacks/drop", {"times": 0})
    assert emu._callbacks_to_drop == 0
    assert await control("GET", "callbacks") == []
    await control("POST", "overview", {"scanId": "web-1", "scanDate": "2025-04-10T13:54:05"})
    day = date(2025, 4, 10)
    rows = emu.store.overview(emu.api_keys[emu.api_key], day, day)
    assert [r.scan_id for r in rows] == ["web-1"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("faults", {"kind": "teapot"}),
        ("faults", {"kind": "503", "endpoint": "nowhere"}),
        ("script", {"outcome": "exploded"}),
        ("script", {"outcome": "finished", "localDuplicateCount": "many"}),
        ("config", {"speed": 0}),
        ("config", {"rateLimitAlgorithm": "leaky"}),
        ("config", {"processingTime": "slow"}),
        ("callbacks/drop", {"times": "all"}),
        ("overview", {"scanId": "x"}),
    ],
)
async def test_bad_control_requests_are_400(
    emu: Emulator, control: Any, path: str, body: dict[str, Any]
) -> None:
    async with control.session.post(f"/_emulator/{path}", json=body) as r:
        assert r.status == 400
        assert (await r.json())["message"]


async def test_finishing_an_unknown_scan_is_404(emu: Emulator, control: Any) -> None:
    async with control.session.post(f"/_emulator/scans/{_spec.SANDBOX_FAILED_ID[:10]}/finish") as r:
        assert r.status == 404


async def test_control_api_can_be_switched_off(imagetwin_emulator_factory: Any) -> None:
    emu = await imagetwin_emulator_factory(control_api=False)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{emu.origin}/_emulator/state") as r,
    ):
        assert r.status == 404
