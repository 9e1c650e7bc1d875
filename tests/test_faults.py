"""The client against the emulator's injected faults: what is retried, what is never paid twice."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from imagetwin_async import (
    AmbiguousSubmission,
    ImagetwinClient,
    ScanResult,
    ServiceUnavailable,
)
from imagetwin_async.emulator import Emulator

from ._files import write_pdf

Factory = Callable[..., Awaitable[Emulator]]
SPEED = 60.0


@pytest.fixture
async def emu(imagetwin_emulator_factory: Factory) -> Emulator:
    return await imagetwin_emulator_factory(speed=SPEED, processing_time=5.0)


def client_for(emu: Emulator, **options: Any) -> ImagetwinClient:
    return ImagetwinClient(**emu.client_kwargs(), **options)


def posts(emu: Emulator) -> list[Any]:
    return [r for r in emu.requests if r.method == "POST" and r.path == "/v1/scan"]


@pytest.mark.parametrize(("fault", "retry_after"), [("503", 2.0), ("504", 0.5)])
async def test_unavailable_with_retry_after_is_retried_and_billed_once(
    emu: Emulator, tmp_path: Path, fault: str, retry_after: float
) -> None:
    emu.inject_fault(fault, endpoint="scan", times=2, retry_after=retry_after)
    async with client_for(emu) as client:
        started = await client.scan(write_pdf(tmp_path / "a.pdf"))
        result = await client.wait_for_result(started.scan_id, timeout=5)
    assert isinstance(result, ScanResult)
    assert len(posts(emu)) == 3
    assert emu.counters.scans_billed == 1


async def test_503_past_the_retries_is_service_unavailable(emu: Emulator, tmp_path: Path) -> None:
    emu.inject_fault("503", endpoint="scan", times=10, retry_after=1.0)
    async with client_for(emu, max_retries=2) as client:
        with pytest.raises(ServiceUnavailable):
            await client.scan(write_pdf(tmp_path / "a.pdf"))
    assert len(posts(emu)) == 3
    assert emu.counters.scans_billed == 0


@pytest.mark.parametrize(("fault", "billed"), [("drop-after", 1), ("drop-before", 0)])
async def test_a_dropped_scan_post_is_ambiguous_and_never_resent(
    emu: Emulator, tmp_path: Path, fault: str, billed: int
) -> None:
    emu.inject_fault(fault, endpoint="scan")
    async with client_for(emu) as client:
        with pytest.raises(AmbiguousSubmission):
            await client.scan(write_pdf(tmp_path / "a.pdf"))
    assert len(posts(emu)) == 1
    assert emu.counters.scans_billed == billed


@pytest.mark.parametrize("fault", ["503", "504"])
async def test_unavailable_without_retry_after_is_ambiguous(
    emu: Emulator, tmp_path: Path, fault: str
) -> None:
    emu.inject_fault(fault, endpoint="scan")
    async with client_for(emu) as client:
        with pytest.raises(AmbiguousSubmission, match=fault):
            await client.scan(write_pdf(tmp_path / "a.pdf"))
    assert len(posts(emu)) == 1


async def test_faults_on_reads_are_retried(emu: Emulator, tmp_path: Path) -> None:
    async with client_for(emu) as client:
        started = await client.scan(write_pdf(tmp_path / "a.pdf"))
        emu.inject_fault("504", endpoint="result", times=2)
        emu.inject_fault("drop-before", endpoint="result")
        result = await client.wait_for_result(started.scan_id, timeout=5)
    assert result.scan_id == started.scan_id


async def test_a_slow_answer_holds_its_slot_until_it_comes(emu: Emulator, tmp_path: Path) -> None:
    # The server counts on receipt; our slot stays taken while the answer is held back.
    emu.inject_fault("delay", endpoint="scan", delay=30.0)  # half a window
    async with client_for(emu) as client:
        await client.scan(write_pdf(tmp_path / "a.pdf"))
        state = client.limits["scan"]
    assert state.in_flight == 0
    assert state.available == 19  # the slot cools for a window after the late answer
    assert emu.counters.rate_limited == {}
