"""The CLI's pure parts, in process: path discovery, the time-to-go estimate, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from imagetwin_async import BatchProgress, LimitState, ScanFailed, ScanResult
from imagetwin_async.cli import ExitCode
from imagetwin_async.cli._commands import Duration
from imagetwin_async.cli._discover import PathError, discover
from imagetwin_async.cli._output import Row, exit_code
from imagetwin_async.cli._progress import (
    estimate_seconds_left,
    format_duration,
    not_yet_submitted,
)

from .conftest import REPO

# ---- discovery --------------------------------------------------------------------------------


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_directories_are_searched_recursively(tmp_path: Path) -> None:
    touch(tmp_path, "a.pdf", "sub/b.docx", "sub/deeper/c.PDF", "notes.txt", ".hidden/d.pdf")

    found = discover([str(tmp_path)])

    assert [Path(j.label).name for j in found.jobs] == ["a.pdf", "b.docx", "c.PDF"]
    assert all(j.kind == "document" for j in found.jobs)
    assert [Path(s).name for s in found.skipped] == ["notes.txt"]


def test_each_file_is_scanned_once(tmp_path: Path) -> None:
    touch(tmp_path, "a.pdf")
    paper = str(tmp_path / "a.pdf")

    found = discover([paper, str(tmp_path), str(tmp_path / "*.pdf")])

    assert len(found.jobs) == 1


def test_images_per_directory_split_at_25(tmp_path: Path) -> None:
    touch(tmp_path, *(f"figs/{i:02d}.png" for i in range(30)), "other/x.jpg")

    jobs = discover([str(tmp_path)], images="per-dir").jobs

    assert [len(j.files) for j in jobs] == [25, 5, 1]
    assert jobs[0].label.endswith("(images 1-25 of 30)")
    assert jobs[1].label.endswith("(images 26-30 of 30)")
    assert jobs[2].label.endswith(f"other{os.sep} (1 image)")
    assert isinstance(jobs[0].source, list)


def test_images_single_and_each(tmp_path: Path) -> None:
    touch(tmp_path, "a/1.png", "b/2.png", "b/3.tif")

    single = discover([str(tmp_path)], images="single").jobs
    each = discover([str(tmp_path)], images="each").jobs

    assert [(j.label, len(j.files)) for j in single] == [("all images (3)", 3)]
    assert [len(j.files) for j in each] == [1, 1, 1]
    assert all(j.kind == "images" and isinstance(j.source, list) for j in each)


def test_explicit_files_are_kept_whatever_their_type(tmp_path: Path) -> None:
    touch(tmp_path, "notes.txt")

    jobs = discover([str(tmp_path / "notes.txt")]).jobs

    assert [j.kind for j in jobs] == ["document"]  # the SDK's check will say why not


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        (["missing.pdf"], "no such file or directory: missing.pdf"),
        (["*.nothing"], "no files match *.nothing"),
    ],
)
def test_bad_paths(tmp_path: Path, paths: list[str], message: str) -> None:
    with pytest.raises(PathError, match=message.replace("*", r"\*")):
        discover(paths)


def test_directory_with_nothing_to_scan(tmp_path: Path) -> None:
    touch(tmp_path, "readme.md")

    with pytest.raises(PathError, match="nothing to scan"):
        discover([str(tmp_path)])


# ---- time to go ---------------------------------------------------------------------------------


def limit(available: int, next_slot_in: float | None = 0.0, paused_for: float = 0.0) -> LimitState:
    return LimitState(20, 60.0, available, 0, next_slot_in, paused_for)


def test_estimate_uses_the_scan_rate_limit() -> None:
    fresh = BatchProgress(total=100)

    # 20 go at once, the other 80 in four more windows; the last then takes a typical scan.
    seconds = estimate_seconds_left(
        fresh, limit(20, next_slot_in=60.0), typical_scan=90.0, since_last_submission=0.0
    )
    assert seconds == 60.0 + 3 * 60.0 + 90.0
    # Within the free slots: only the scan time.
    assert estimate_seconds_left(
        BatchProgress(total=5), limit(20), typical_scan=90.0, since_last_submission=0.0
    ) == pytest.approx(90.0)


def test_estimate_when_all_are_submitted() -> None:
    p = BatchProgress(total=3, submitted=3, running=1, finished=2)

    assert estimate_seconds_left(p, limit(17), typical_scan=90.0, since_last_submission=30.0) == 60
    assert estimate_seconds_left(p, limit(17), typical_scan=90.0, since_last_submission=99.0) == 0
    done = BatchProgress(total=3, submitted=3, finished=3)
    assert estimate_seconds_left(done, limit(17), typical_scan=90, since_last_submission=0) == 0


def test_items_failed_before_submission_are_not_waiting() -> None:
    # 10 items: 4 accepted (1 finished, 1 failed after), 2 refused before: 4 still to send.
    p = BatchProgress(total=10, submitted=4, running=2, finished=1, failed=3)

    assert not_yet_submitted(p) == 4


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.2, "1 s"), (45, "45 s"), (200, "3 min 20 s"), (1500, "25 min"), (7500, "2 h 05 min")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200)]
)
def test_duration_option(text: str, seconds: float) -> None:
    assert Duration().convert(text, None, None) == seconds


def test_duration_option_rejects_nonsense() -> None:
    with pytest.raises(click.BadParameter):
        Duration().convert("soon", None, None)


# ---- exit codes ----------------------------------------------------------------------------


def result(findings: int) -> ScanResult:
    return ScanResult("s" * 64, findings, 0, 0, "https://r/x.pdf", "https://r/x", 0.33, 0, 0.9)


def test_exit_code_table() -> None:
    clean = Row("a.pdf", result=result(0))
    flagged = Row("b.pdf", result=result(2))
    failed = Row("c.pdf", error=ScanFailed("boom", status=500, endpoint="GET /result"))

    assert exit_code([clean]) == ExitCode.CLEAN
    assert exit_code([clean, flagged]) == ExitCode.FINDINGS
    assert exit_code([clean, flagged, failed]) == ExitCode.ERROR
    # The documented numbers (docs/cli.md): scripts depend on them.
    assert [int(code) for code in ExitCode] == [0, 1, 2, 3, 4, 130]


# ---- packaging -----------------------------------------------------------------------------


def python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False
    )


def test_the_core_package_never_imports_click_or_rich() -> None:
    done = python(
        "import sys, imagetwin_async, imagetwin_async.emulator\n"
        "assert not {'click', 'rich'} & set(sys.modules), sorted(sys.modules)"
    )
    assert done.returncode == 0, done.stderr


def test_without_the_extra_main_says_what_to_install() -> None:
    done = python(
        "import sys; sys.modules['click'] = None\n"  # what an uninstalled package looks like
        "from imagetwin_async.cli import main; raise SystemExit(main(['--help']))"
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "imagetwin: the command line needs click: pip install 'imagetwin-async[cli]'"
    )


def test_a_bug_exits_with_the_error_code_not_the_findings_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unexpected exception (a bug, or a library raising what we never catch) must not exit
    1, which a script reads as "findings", nor print what the exception quotes."""
    from imagetwin_async.cli import _commands  # noqa: PLC0415

    def broken(**kwargs: object) -> None:
        raise ValueError("Cannot combine AUTHORIZATION header with sk-secret-key")

    monkeypatch.setattr(_commands.cli, "main", broken)
    assert _commands.run(["result", "e" * 64]) == ExitCode.ERROR
    err = capsys.readouterr().err
    assert "ValueError" in err and "bug" in err
    assert "sk-secret-key" not in err
