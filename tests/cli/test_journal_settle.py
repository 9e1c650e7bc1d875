"""``imagetwin journal settle``: a user settles by hand what a crash left in doubt."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from imagetwin_async import SQLiteJournal

from .conftest import Main

SCAN_A = "a" * 64
SCAN_B = "b" * 64
KNOWN = "c" * 64


def _journal_with_two_in_doubt(path: Path) -> None:
    async def write() -> None:
        async with await SQLiteJournal.open(path) as journal:
            await journal.sending("key-done-1234", "done.pdf", 1000.0, 1300.0)
            await journal.started("key-done-1234", KNOWN)
            for key, label in (("key-one-12345", "one.pdf"), ("key-two-12345", "two.pdf")):
                await journal.sending(key, label, 2000.0, 2300.0)
                report = {"reason": "two scans, two items", "candidates": [SCAN_A, SCAN_B]}
                await journal.store_meta(
                    f"in_doubt.{key}", json.dumps({**report, "window": [2000.0, 2004.0]})
                )

    asyncio.run(write())


def test_settle_lists_in_doubt_items_with_their_candidates_and_window(
    main_in_process: Main, tmp_path: Path
) -> None:
    path = tmp_path / "sweep.journal"
    _journal_with_two_in_doubt(path)
    listed = main_in_process("journal", "settle", str(path))
    assert listed.code == 3  # items are in doubt
    assert "one.pdf" in listed.stdout and "two.pdf" in listed.stdout
    assert SCAN_A in listed.stdout and SCAN_B in listed.stdout
    assert "1970-01-01 00:33:20 to 00:33:24 UTC" in listed.stdout
    as_json = json.loads(main_in_process("journal", "settle", str(path), "--json").stdout)
    assert [item["candidates"] for item in as_json] == [[SCAN_A, SCAN_B]] * 2


def test_adopting_and_resending_by_hand_leaves_nothing_in_doubt(
    main_in_process: Main, tmp_path: Path
) -> None:
    path = tmp_path / "sweep.journal"
    _journal_with_two_in_doubt(path)
    done = main_in_process(
        "journal", "settle", str(path), "--adopt", "one.pdf", SCAN_A, "--resend", "two.pdf"
    )
    assert done.code == 0, done.stderr
    assert "No item is in doubt" in done.stdout

    async def read() -> dict[str, tuple[str, str | None]]:
        async with await SQLiteJournal.open(path) as journal:
            return {k: (e.state, e.scan_id) for k, e in (await journal.entries()).items()}

    entries = asyncio.run(read())
    assert entries["key-one-12345"] == ("started", SCAN_A)  # the next run waits for it
    assert "key-two-12345" not in entries  # the next run sends it again


def test_a_scan_already_claimed_or_an_unknown_item_is_refused(
    main_in_process: Main, tmp_path: Path
) -> None:
    path = tmp_path / "sweep.journal"
    _journal_with_two_in_doubt(path)
    claimed = main_in_process("journal", "settle", str(path), "--adopt", "one.pdf", KNOWN)
    assert claimed.code == 2
    assert "already belongs to done.pdf" in claimed.stderr
    unknown = main_in_process("journal", "settle", str(path), "--resend", "nope.pdf")
    assert unknown.code == 2
    assert "no in-doubt item matches 'nope.pdf'" in unknown.stderr
    bad_id = main_in_process("journal", "settle", str(path), "--adopt", "one.pdf", "x/../y")
    assert bad_id.code == 2
    assert "not a scan id" in bad_id.stderr
