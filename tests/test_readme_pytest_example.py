"""The README's pytest-plugin example, as a new user writes it: a client matched to a sped-up
emulator with one argument, ``ImagetwinClient(**emu.client_kwargs())``.

A user once wrote two one-scan tests at speed 60 that took 10 s: only the rate limits were
scaled, so each waited out the real 5 s first poll. Measured on the emulator's own clock, a
one-scan test must take emulated seconds of the order of the real API's (a first poll 5
emulated seconds after the start), not minutes of them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from imagetwin_async import ImagetwinClient, Timings
from imagetwin_async.emulator import Emulator

from ._files import write_pdf

# Emulated seconds one scan-and-wait may take. Matched, it takes about 5 (the first poll comes
# 5 emulated seconds after the POST). Unmatched polls (5 real s) would take 300 or more at
# speed 60. The bound leaves 3 real seconds for a loaded CI machine.
EMULATED_BOUND = 180.0


@pytest.mark.parametrize("paper", ["first", "second"])  # the user's two one-scan tests
@pytest.mark.imagetwin_emulator(speed=60, rate_limit_algorithm="sliding")
async def test_a_one_scan_test_takes_emulated_seconds(
    imagetwin_emulator: Emulator, tmp_path: Path, paper: str
) -> None:
    emu = imagetwin_emulator
    path = write_pdf(tmp_path / f"{paper}.pdf")
    began = emu.clock.now()
    async with ImagetwinClient(**emu.client_kwargs()) as client:
        started = await client.scan(path)
        result = await client.wait_for_result(started.scan_id)
    took = emu.clock.now() - began
    assert result.scan_id == started.scan_id
    assert emu.counters.scans_billed == 1
    assert took < EMULATED_BOUND, f"one scan took {took:.0f} emulated seconds"
    # What made it fast: the client polls on the emulator's time, as it would on the API's.
    assert client.timings == Timings().scaled(60)
    assert client.timings.poll_interval * emu.clock.speed == pytest.approx(5.0)


def test_the_threaded_emulator_gives_the_same_one_argument() -> None:
    from imagetwin_async.emulator import ThreadedEmulator  # noqa: PLC0415

    with ThreadedEmulator(speed=30) as emu:
        kwargs = emu.client_kwargs()
        assert kwargs == {"api_key": emu.api_key, "base_url": emu.url, "speed": 30.0}
        assert ImagetwinClient(**kwargs).timings == Timings().scaled(30)
