"""Run ``imagetwin`` as a subprocess against an emulator in a background thread.

The emulator runs 60 times faster than real time (a 30 s scan lasts 0.5 s), and the CLI is
told the same with ``--speed 60``, so its rate windows, polls and back-off shrink to match.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest

from imagetwin_async.cli import main
from imagetwin_async.emulator import ThreadedEmulator

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "imagetwin_async" / "samples"
SPEED = 60
KEY = "sk-cli-test-5ec7e7"  # distinctive, so a test can prove it never appears in output

PROCESSING = 30  # emulated seconds: 0.5 s real per scan


@attrs.frozen
class Result:
    code: int
    stdout: str
    stderr: str


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any Imagetwin settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGETWIN_")}
    # No duration cache in the user's home from tests (a test that wants one passes a dir).
    env.update(COLUMNS="100", NO_COLOR="1", PYTHONIOENCODING="utf-8", IMAGETWIN_CACHE_DIR="")
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, stdin: str = ""
) -> Result:
    """``imagetwin ARGS`` in a subprocess, its stdin, stdout and stderr all pipes."""
    done = subprocess.run(
        [sys.executable, "-m", "imagetwin_async.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env if env is not None else clean_env(),
        cwd=REPO,
        timeout=timeout,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


Cli = Callable[..., Result]
Main = Callable[..., Result]


@pytest.fixture
def emulator() -> Iterator[ThreadedEmulator]:
    options = {"speed": SPEED, "processing_time": PROCESSING, "api_keys": [KEY], "port": 0}
    with ThreadedEmulator(**options) as emulator:
        yield emulator


@pytest.fixture
def cli(emulator: ThreadedEmulator) -> Cli:
    """``cli("scan", ...)``: the CLI pointed at the test's emulator."""

    def run(*args: str, **kwargs: object) -> Result:
        connect = ("--base-url", emulator.url, "--api-key", KEY, "--speed", str(SPEED))
        return run_cli(*connect, *args, **kwargs)  # type: ignore[arg-type]

    return run


@pytest.fixture
def main_in_process(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Result]:
    """``imagetwin`` in this process: for error paths, where a subprocess's start-up (about
    a second on a loaded machine) would be most of the test."""
    for name in ("IMAGETWIN_API_KEY", "IMAGETWIN_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IMAGETWIN_CACHE_DIR", "")
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.chdir(REPO)

    def run(*args: str) -> Result:
        code = main(list(args))
        captured = capfd.readouterr()
        return Result(code, captured.out, captured.err)

    return run
