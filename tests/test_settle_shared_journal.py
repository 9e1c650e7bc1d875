"""Settling against a journal other pods write while it waits (the adversary: a live pod's scan
recorded during the wait, dated inside an in-doubt item's window, must never be adopted).

``Recovery.settle`` takes a snapshot of the journal, and may sleep until a window closes before
reading scan-overview again. Here every clock is a parameter: the service clock is dated by one
fake answer, ``monotonic`` is a counter that the injected ``sleep`` advances, scan-overview is a
list, and the journal is in memory. Nothing sleeps for real.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
from collections.abc import Awaitable, Callable
from typing import Final

from imagetwin_async._journal import JournalEntry, JournalScanIds
from imagetwin_async._models import ScanOverview, ScanResult, ScanSummary
from imagetwin_async._recovery import ZONE_KEY, Recovery
from imagetwin_async._servicetime import ServiceClock
from imagetwin_async._settlement import Decision, Settlement

# Service time when the settling run starts (whole seconds: the service's Date header).
T0: Final = 1_800_000_000.0
SETTLE_DELAY: Final = 30.0
# The dead run's POST: sent 100 s before this run, its window open until this run started.
LOST = JournalEntry("lost", "lost.pdf", "sending", sent_at=T0 - 100.0, until=T0 + 200.0)


class MemoryJournal:
    """A journal in memory, with the optional ``scan_ids`` (what another pod wrote shows)."""

    def __init__(self, entries: list[JournalEntry]) -> None:
        self.rows = {e.key: e for e in entries}
        # scan-overview dates read as UTC: the zone is known, so settling may decide.
        self.meta = {ZONE_KEY: json.dumps({"lo": 0.0, "hi": 0.0})}

    async def entries(self) -> dict[str, JournalEntry]:
        return dict(self.rows)

    async def scan_ids(self) -> set[str]:
        return {e.scan_id for e in self.rows.values() if e.scan_id}

    async def sending(
        self, key: str, label: str, sent_at: float, until: float | None = None
    ) -> None:
        self.rows[key] = JournalEntry(key, label, "sending", sent_at, until=until)

    async def started(
        self, key: str, scan_id: str, note: str | None = None, answered_at: float | None = None
    ) -> None:
        old = self.rows[key]
        self.rows[key] = JournalEntry(
            key, old.label, "started", old.sent_at, scan_id, None, None, note, old.until,
            answered_at,
        )  # fmt: skip

    async def finished(self, key: str, result: ScanResult) -> None:
        raise AssertionError("settling never finishes an item")

    async def failed(self, key: str, error: str) -> None:
        raise AssertionError("settling never fails an item")

    async def forget(self, key: str) -> None:
        del self.rows[key]

    async def load_meta(self, key: str) -> str | None:
        return self.meta.get(key)

    async def store_meta(self, key: str, value: str) -> None:
        self.meta[key] = value

    async def close(self) -> None:
        pass


class SnapshotOnlyJournal(MemoryJournal):
    """A user's journal written before ``scan_ids`` existed: the Journal protocol alone."""

    scan_ids = None  # type: ignore[assignment]  # not there (runtime_checkable sees None)


class FailingScanIdsJournal(MemoryJournal):
    async def scan_ids(self) -> set[str]:
        raise OSError("the journal's server went away")


class Harness:
    """A Recovery with every clock a parameter; ``during_sleep`` runs inside each wait."""

    def __init__(
        self,
        journal: MemoryJournal,
        overview: list[tuple[str, float]],
        during_sleep: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.journal = journal
        self.overview = overview  # (scan id, scanDate in service time), listed now
        self.during_sleep = during_sleep
        self.now = 0.0  # monotonic
        self.slept: list[float] = []
        self.reads = 0
        clock = ServiceClock()
        clock.observe(0.0, 0.0, email.utils.formatdate(T0, usegmt=True))  # offset [T0, T0 + 1]
        self.recovery = Recovery(
            journal,
            clock,
            self.read_overview,
            request_timeout=300.0,
            settle_delay=SETTLE_DELAY,
            monotonic=lambda: self.now,
            sleep=self.sleep,
        )

    async def read_overview(self, start: dt.date, end: dt.date) -> ScanOverview:
        self.reads += 1
        scans = tuple(
            ScanSummary(scan_id, dt.datetime.fromtimestamp(date, dt.UTC), api_scan=True)
            for scan_id, date in self.overview
        )
        return ScanOverview(start, end, scans)

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        if self.during_sleep is not None:
            await self.during_sleep()

    async def settle(self) -> dict[str, Decision]:
        await self.recovery.calibrate()
        return await self.recovery.settle(await self.journal.entries())


def test_the_memory_journal_offers_scan_ids_and_the_old_one_does_not() -> None:
    assert isinstance(MemoryJournal([]), JournalScanIds)
    assert not isinstance(SnapshotOnlyJournal([]), JournalScanIds)


async def test_a_scan_another_pod_records_during_the_wait_is_never_adopted() -> None:
    """The adversary: after the snapshot, while settling waits for the window to close, a live
    pod sends, is answered and records its scan; scan-overview dates it in this run's first
    second, inside the dead run's window (service time is known to a second). Unclaimed in the
    snapshot, it was the lost item's only candidate and was adopted: the other pod's result."""
    journal = MemoryJournal([LOST])
    other_pods_scan = ("scan-of-pod-b", T0)  # registered right after this run took over

    async def pod_b_sends() -> None:
        await journal.sending("pod-b-item", "b.pdf", T0 + 0.2, T0 + 300.0)
        await journal.started("pod-b-item", "scan-of-pod-b", answered_at=T0 + 2.0)
        harness.overview.append(other_pods_scan)

    harness = Harness(journal, [], pod_b_sends)
    decisions = await harness.settle()
    assert harness.slept == [SETTLE_DELAY + 1.0]  # the window's end (T0 + 1) + settle_delay
    decision = decisions["lost"]
    assert decision.kind is not Settlement.ADOPT, decision
    # The overview, read after the window closed, lists no scan but pod B's: proof, resent.
    assert decision.kind is Settlement.RESEND
    assert "lost" not in journal.rows
    assert journal.rows["pod-b-item"].scan_id == "scan-of-pod-b"


async def test_the_dead_runs_own_scan_is_still_adopted_beside_the_other_pods() -> None:
    """The fix removes only the other pod's scan: the lost POST's own scan, listed too, is
    still the one scan it can have started."""
    journal = MemoryJournal([LOST])

    async def pod_b_sends() -> None:
        await journal.sending("pod-b-item", "b.pdf", T0 + 0.2, T0 + 300.0)
        await journal.started("pod-b-item", "scan-of-pod-b", answered_at=T0 + 2.0)
        harness.overview.append(("scan-of-pod-b", T0))

    harness = Harness(journal, [("scan-of-lost", T0 - 99.0)], pod_b_sends)
    decisions = await harness.settle()
    decision = decisions["lost"]
    assert decision.kind is Settlement.ADOPT
    assert decision.scan_id == "scan-of-lost"
    assert journal.rows["lost"].scan_id == "scan-of-lost"


async def test_a_journal_without_scan_ids_still_settles_from_its_snapshot() -> None:
    """The Journal protocol gained no required method: an older user journal keeps working."""
    journal = SnapshotOnlyJournal([LOST])
    harness = Harness(journal, [("scan-of-lost", T0 - 99.0)])
    decisions = await harness.settle()
    assert decisions["lost"].kind is Settlement.ADOPT
    assert journal.rows["lost"].scan_id == "scan-of-lost"


async def test_scan_ids_that_cannot_be_read_report_rather_than_guess() -> None:
    journal = FailingScanIdsJournal([LOST])
    harness = Harness(journal, [("scan-of-lost", T0 - 99.0)])
    decisions = await harness.settle()
    decision = decisions["lost"]
    assert decision.kind is Settlement.REPORT
    assert decision.reason == "the journal could not be read (its scan_ids() failed (OSError))"
    assert journal.rows["lost"].state == "sending"  # left for the next run, or a person


async def test_a_pod_that_dies_while_this_run_goes_on_is_never_paid_twice() -> None:
    """The adversary: pod B sends at T0 + 90 while this run (started at T0) works, its POST
    registers a scan at T0 + 91, and B is SIGKILLed before the answer is recorded. This run's
    later settling (a lost answer of its own) takes B's item over at T0 + 100. Its window was
    cut at this run's start, where B's scan cannot lie: "nothing in the window" sent B's paper
    again, a second scan billed. The window now ends when this run first saw the item."""
    dead_later = JournalEntry("b-item", "b.pdf", "sending", sent_at=T0 + 90.0, until=T0 + 390.0)
    journal = MemoryJournal([dead_later])
    harness = Harness(journal, [("scan-of-b", T0 + 91.0)])
    harness.now = 100.0  # monotonic 0 was T0: B died, and its item came over, 100 s in
    decisions = await harness.settle()
    decision = decisions["b-item"]
    assert decision.kind is Settlement.ADOPT, decision
    assert decision.scan_id == "scan-of-b"
    assert journal.rows["b-item"].scan_id == "scan-of-b"
