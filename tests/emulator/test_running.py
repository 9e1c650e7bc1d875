"""Ways to run the emulator: the pytest fixtures, a background thread, the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from importlib.metadata import entry_points
from pathlib import Path

import aiohttp
import pytest

from imagetwin_async.emulator import Algorithm, Emulator, LogNormalTime, ThreadedEmulator
from imagetwin_async.emulator._cli import build_parser, emulator_options

ROOT = Path(__file__).resolve().parents[2]


async def test_fixture_serves_on_loopback(imagetwin_emulator: Emulator) -> None:
    assert imagetwin_emulator.url.startswith("http://127.0.0.1:")
    assert imagetwin_emulator.url.endswith("/v1")
    assert imagetwin_emulator.api_key == "test-key"
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{imagetwin_emulator.url}/openapi.yaml") as r,
    ):
        assert r.status == 200


@pytest.mark.imagetwin_emulator(speed=60, rate_limit_algorithm="fixed", api_keys=["k"])
async def test_marker_configures_the_fixture(imagetwin_emulator: Emulator) -> None:
    assert imagetwin_emulator.clock.speed == 60
    assert imagetwin_emulator.rate_limit_algorithm is Algorithm.FIXED
    assert imagetwin_emulator.api_key == "k"


async def test_factory_starts_several(imagetwin_emulator_factory: object) -> None:
    a = await imagetwin_emulator_factory(seed=1)  # type: ignore[operator]
    b = await imagetwin_emulator_factory(seed=2)  # type: ignore[operator]
    assert a.port != b.port


def test_thread_fixture_for_sync_code(imagetwin_emulator_thread: ThreadedEmulator) -> None:
    url = f"{imagetwin_emulator_thread.url}/scan-overview?startDate=2025-01-01&endDate=2025-01-01"
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {imagetwin_emulator_thread.api_key}"}
    )
    with urllib.request.urlopen(request) as response:
        assert json.load(response)["scans"] == []
    imagetwin_emulator_thread.call(lambda emu: emu.inject_fault("503"))
    assert len(imagetwin_emulator_thread.emulator.faults.pending()) == 1
    assert imagetwin_emulator_thread.emulator.requests[0].status == 200


def test_threaded_emulator_reports_start_errors() -> None:
    with ThreadedEmulator(port=0) as first, pytest.raises(OSError, match="in use"):
        ThreadedEmulator(port=first.emulator.port).start()


def test_pytest_plugin_loads_as_a_plugin(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    (tmp_path / "test_it.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.imagetwin_emulator(speed=5)\n"
        "async def test_it(imagetwin_emulator):\n"
        "    assert imagetwin_emulator.clock.speed == 5\n\n"
        "def test_sync(imagetwin_emulator_thread):\n"
        "    assert imagetwin_emulator_thread.url.endswith('/v1')\n"
    )
    # Installed, the package's pytest11 entry point loads the plugin; from a checkout, -p does.
    installed = any(
        ep.value == "imagetwin_async.emulator.pytest_plugin"
        for ep in entry_points(group="pytest11")
    )
    load = [] if installed else ["-p", "imagetwin_async.emulator.pytest_plugin"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--strict-markers", *load],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_cli_options() -> None:
    args = build_parser().parse_args(
        [
            "--port",
            "0",
            "--speed",
            "60",
            "--rate-limit",
            "token-bucket",
            "--api-key",
            "a",
            "--api-key",
            "b",
            "--no-retry-after",
            "--processing-time",
            "90",
            "--processing-sigma",
            "0.5",
        ]
    )
    options = emulator_options(args)
    assert options["api_keys"] == ["a", "b"]
    assert options["rate_limit_algorithm"] == "token-bucket"
    assert options["retry_after"] is False
    assert options["processing_time"] == LogNormalTime(90.0, 0.5)
    emulator = Emulator(**options)
    assert emulator.rate_limit_algorithm is Algorithm.TOKEN_BUCKET
    assert (
        emulator_options(build_parser().parse_args(["--rate-limit", "off"]))["rate_limit_algorithm"]
        is None
    )


def test_python_dash_m_serves_until_interrupted() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "imagetwin_async.emulator", "--port", "0", "--speed", "60"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.split(" at ", 1)[1].split(" ", 1)[0]
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{url}/openapi.yaml") as response:
            assert response.status == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
