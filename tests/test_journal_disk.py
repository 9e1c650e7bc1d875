"""A journal that survives its disk: full, copied without its log, read-only, missing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from imagetwin_async import JournalError, SQLiteJournal

ROOT = Path(__file__).resolve().parent.parent

_FULL_DISK = """
import asyncio, resource, signal, sys
from imagetwin_async import SQLiteJournal, JournalError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))  # the disk is full here
async def main():
    try:
        await SQLiteJournal.open(sys.argv[1])
    except JournalError as exc:
        print("JournalError", exc)
asyncio.run(main())
"""

_HOLD_OPEN = """
import asyncio, sys
from imagetwin_async import SQLiteJournal
async def main():
    journal = await SQLiteJournal.open(sys.argv[1])
    await journal.sending("key", "paper.pdf", 1.0)
    await journal.started("key", "scan-1")
    print("written", flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


def _python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.parametrize("limit", [100, 4096, 8192])
async def test_a_creation_cut_short_by_a_full_disk_does_not_poison_the_path(
    tmp_path: Path, limit: int
) -> None:
    path = tmp_path / "batch.journal"
    out, _ = _python(_FULL_DISK.format(limit=limit), str(path)).communicate(timeout=60)
    assert out.startswith("JournalError"), out  # the full disk is a clear error ...
    async with await SQLiteJournal.open(path) as journal:  # ... and the next try just works
        await journal.sending("key", "paper.pdf", 1.0)
        assert list(await journal.entries()) == ["key"]


async def test_a_journal_copied_without_its_log_says_so(tmp_path: Path) -> None:
    path = tmp_path / "batch.journal"
    holder = _python(_HOLD_OPEN, str(path))  # SIGKILLed with the journal open
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "written"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    holder.stdout.close()
    assert path.with_name("batch.journal-wal").exists()
    alone, whole = tmp_path / "alone", tmp_path / "whole"
    alone.mkdir()
    whole.mkdir()
    shutil.copy(path, alone)
    for suffix in ("", "-wal"):
        shutil.copy(f"{path}{suffix}", whole)
    for _ in range(2):  # said every time, not only the first (opening must not repair it)
        with pytest.raises(JournalError, match="copied or moved without its -wal file"):
            await SQLiteJournal.open(alone / "batch.journal")
    async with await SQLiteJournal.open(whole / "batch.journal") as journal:
        assert (await journal.entries())["key"].scan_id == "scan-1"
    # Closed cleanly, the log is folded into the file: a copy of the file alone is complete.
    shutil.copy(whole / "batch.journal", alone / "clean.journal")
    async with await SQLiteJournal.open(alone / "clean.journal") as journal:
        assert (await journal.entries())["key"].scan_id == "scan-1"


async def test_a_missing_directory_is_a_journal_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="does not exist"):
        await SQLiteJournal.open(tmp_path / "no" / "such" / "batch.journal")
    assert not (tmp_path / "no").exists()  # a typo in a path creates nothing


async def test_a_read_only_directory_is_a_journal_error(tmp_path: Path) -> None:
    # sysfs refuses new files even to root (chmod would not stop a root test run).
    if not Path("/sys/kernel").is_dir():
        pytest.fail("this test needs Linux's /sys")
    with pytest.raises(JournalError, match="read-only"):
        await SQLiteJournal.open("/sys/kernel/imagetwin-test.journal")
