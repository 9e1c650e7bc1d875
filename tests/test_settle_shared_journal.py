"""Settling against a journal other pods write while it waits. The adversaries: a live pod's
scan recorded during the wait, and a live pod's scan registered at the service while its answer
is still on its way (its entry "sending", no scan id), each dated inside an in-doubt item's
window: neither may be adopted.

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

import attrs

from imagetwin_async._journal import JournalEntry, JournalInFlight, JournalScanIds
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
    """A journal in memory, with the optional ``scan_ids`` and ``in_flight`` (what another pod
    wrote shows). Like ``PostgresJournal.entries``, ``entries`` leaves out the items another
    live pod is sending (``other_pod_sends``)."""

    def __init__(self, entries: list[JournalEntry]) -> None:
        self.rows = {e.key: e for e in entries}
        self.others: set[str] = set()  # keys another live pod holds
        # scan-overview dates read as UTC: the zone is known, so settling may decide.
        self.meta = {ZONE_KEY: json.dumps({"lo": 0.0, "hi": 0.0})}

    async def entries(self) -> dict[str, JournalEntry]:
        return {
            k: e for k, e in self.rows.items() if not (k in self.others and e.state == "sending")
        }

    async def scan_ids(self) -> set[str]:
        return {e.scan_id for e in self.rows.values() if e.scan_id}

    async def in_flight(self) -> dict[str, JournalEntry]:
        return {k: e for k, e in self.rows.items() if e.state == "sending"}

    async def other_pod_sends(self, key: str, sent_at: float, until: float) -> None:
        self.others.add(key)
        await self.sending(key, f"{key}.pdf", sent_at, until)

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
    in_flight = None  # type: ignore[assignment]


class FailingScanIdsJournal(MemoryJournal):
    async def scan_ids(self) -> set[str]:
        raise OSError("the journal's server went away")


class FailingInFlightJournal(MemoryJournal):
    async def in_flight(self) -> dict[str, JournalEntry]:
        raise OSError("the journal's server went away")


class Harness:
    """A Recovery with every clock a parameter; ``during_sleep`` runs inside each wait."""

    def __init__(
        self,
        journal: MemoryJournal,
        overview: list[tuple[str, float]],
        during_sleep: Callable[[], Awaitable[None]] | None = None,
        *,
        dated: bool = True,
    ) -> None:
        self.journal = journal
        self.overview = overview  # (scan id, scanDate in service time), listed now
        self.during_sleep = during_sleep
        self.now = 0.0  # monotonic
        self.slept: list[float] = []
        self.reads = 0
        self.clock = ServiceClock()
        if dated:  # else no answer has dated the service's clock yet
            self.date(0.0)  # offset [T0, T0 + 1]
        self.recovery = Recovery(
            journal,
            self.clock,
            self.read_overview,
            request_timeout=300.0,
            settle_delay=SETTLE_DELAY,
            monotonic=lambda: self.now,
            sleep=self.sleep,
        )

    def date(self, monotonic: float) -> None:
        """An answer at ``monotonic`` dates the service's clock: T0 at monotonic 0."""
        date = email.utils.formatdate(T0 + monotonic, usegmt=True)
        self.clock.observe(monotonic, monotonic, date)

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
    assert isinstance(MemoryJournal([]), JournalInFlight)
    assert not isinstance(SnapshotOnlyJournal([]), JournalScanIds)
    assert not isinstance(SnapshotOnlyJournal([]), JournalInFlight)


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


# ---- another pod's POST registered, its answer still on its way ------------------------------

# This run's own POST, sent at monotonic 10 (service time T0 + 10): its answer was lost at
# monotonic 12, so its window is [T0 + 10, T0 + 13] (service time is known to a second).
MINE = JournalEntry("mine", "mine.pdf", "sending", sent_at=T0 + 10.0, until=T0 + 311.0)


async def settle_lost(harness: Harness) -> dict[str, Decision]:
    """The late settling of this run's lost answer (what ``_batch._run_late_settle`` does)."""
    await harness.recovery.calibrate()
    harness.now = 12.0
    harness.recovery.lost("mine")
    return await harness.recovery.settle(await harness.journal.entries())


async def test_a_scan_another_pods_unanswered_post_made_is_never_adopted() -> None:
    """The adversary: pod B's POST went out a second after ours and registered its scan (listed,
    dated in our window) but its answer has not come back, and never does in this test: its
    entry is "sending" with no scan id, so nothing claims the scan. Ours made none. Judged
    unclaimed, it was our lost POST's one candidate and was adopted: pod B's result. Now
    settling waits for pod B's answer (one lag a read), then reports: never adopted."""
    journal = MemoryJournal([MINE])
    await journal.other_pod_sends("pod-b-item", T0 + 11.0, T0 + 312.0)
    harness = Harness(journal, [("scan-of-pod-b", T0 + 12.0)])
    decisions = await settle_lost(harness)
    decision = decisions["mine"]
    assert decision.kind is not Settlement.ADOPT, decision
    assert decision.kind is Settlement.REPORT
    assert decision.candidates == ("scan-of-pod-b",)
    assert "another run's POST" in decision.reason
    # Our window's end + lag, then a lag a read while pod B's answer may come: bounded.
    assert harness.slept == [SETTLE_DELAY + 1.0, SETTLE_DELAY, SETTLE_DELAY]
    assert harness.reads == 4
    assert journal.rows["mine"].state == "sending"  # in doubt still, for the next run
    assert json.loads(journal.meta["in_doubt.mine"])["candidates"] == ["scan-of-pod-b"]
    assert journal.rows["pod-b-item"].state == "sending"  # pod B's row is not ours to touch


async def test_settling_waits_for_the_other_pods_answer_then_decides() -> None:
    """Pod B's answer comes back while settling waits: its scan is then claimed, and our lost
    POST, which made none, is proven empty and sent again."""
    journal = MemoryJournal([MINE])
    await journal.other_pod_sends("pod-b-item", T0 + 11.0, T0 + 312.0)

    async def pod_b_is_answered() -> None:
        if len(harness.slept) == 2:  # during the wait for pod B
            await journal.started("pod-b-item", "scan-of-pod-b", answered_at=T0 + 50.0)

    harness = Harness(journal, [("scan-of-pod-b", T0 + 12.0)], pod_b_is_answered)
    decisions = await settle_lost(harness)
    assert decisions["mine"].kind is Settlement.RESEND
    assert harness.slept == [SETTLE_DELAY + 1.0, SETTLE_DELAY]
    assert "mine" not in journal.rows


async def test_our_own_scan_is_adopted_once_the_other_pods_answer_claims_theirs() -> None:
    """Both scans are listed in our window, ours and pod B's unanswered one: which is ours
    cannot be told until pod B's answer names its scan; then ours is adopted."""
    journal = MemoryJournal([MINE])
    await journal.other_pod_sends("pod-b-item", T0 + 11.0, T0 + 312.0)

    async def pod_b_is_answered() -> None:
        if len(harness.slept) == 2:  # after our window closed, while settling waits for it
            await journal.started("pod-b-item", "scan-of-pod-b", answered_at=T0 + 50.0)

    harness = Harness(
        journal, [("scan-of-mine", T0 + 10.0), ("scan-of-pod-b", T0 + 12.0)], pod_b_is_answered
    )
    decisions = await settle_lost(harness)
    assert harness.slept == [SETTLE_DELAY + 1.0, SETTLE_DELAY]
    assert decisions["mine"].kind is Settlement.ADOPT
    assert decisions["mine"].scan_id == "scan-of-mine"
    assert journal.rows["mine"].scan_id == "scan-of-mine"


async def test_another_pods_send_after_the_window_delays_nothing() -> None:
    """Pod B's unanswered POST went out after our window closed: its scan cannot be the one in
    our window, which is adopted after the usual single wait. (Before, pod B's scan, dated
    after this run started and in no in-doubt window, was taken for another client's on the
    key, and the adoption turned into a report.)"""
    journal = MemoryJournal([MINE])
    await journal.other_pod_sends("pod-b-item", T0 + 20.0, T0 + 321.0)
    harness = Harness(journal, [("scan-of-mine", T0 + 10.0), ("scan-of-pod-b", T0 + 21.0)])
    decisions = await settle_lost(harness)
    assert decisions["mine"].kind is Settlement.ADOPT
    assert decisions["mine"].scan_id == "scan-of-mine"
    assert harness.slept == [SETTLE_DELAY + 1.0]


async def test_in_flight_that_cannot_be_read_reports_rather_than_guesses() -> None:
    journal = FailingInFlightJournal([MINE])
    harness = Harness(journal, [("scan-of-mine", T0 + 10.0)])
    decisions = await settle_lost(harness)
    decision = decisions["mine"]
    assert decision.kind is Settlement.REPORT
    assert decision.reason == "the journal could not be read (its in_flight() failed (OSError))"
    assert journal.rows["mine"].state == "sending"


async def test_a_dead_runs_unanswered_post_is_not_waited_for_but_its_scan_is_not_adopted() -> None:
    """A run that died mid-POST left its row "sending" (nobody has taken it over: another pod
    was sending then). Its scan, listed in our lost POST's window too, may be its own: never
    adopted. But its answer will never be recorded, so settling reports at once instead of
    reading again and again for it (seen by our outside reviewer: a wait on every settle of
    every pod)."""
    journal = MemoryJournal([MINE])
    await journal.other_pod_sends("dead-item", T0 + 11.0, T0 + 312.0)
    journal.rows["dead-item"] = attrs.evolve(journal.rows["dead-item"], live=False)  # then died
    harness = Harness(journal, [("scan-of-dead-run", T0 + 12.0)])
    decisions = await settle_lost(harness)
    decision = decisions["mine"]
    assert decision.kind is Settlement.REPORT, decision
    assert decision.candidates == ("scan-of-dead-run",)
    assert harness.slept == [SETTLE_DELAY + 1.0]  # our window's end + lag only: no waits for it


async def test_an_item_first_seen_while_the_service_clock_was_undated_keeps_its_window() -> None:
    """The adversary (found by our outside reviewer): the calibrating overview read failed at
    startup (a 503), so the dead run's item was seen before this run could date the service's
    clock; another client scans with the key 500 s into the run; the late settling, clock
    dated by then, stretched the dead run's window to that moment and adopted the stranger's
    scan. The window ends when the item was first seen, dated or not."""
    inherited = JournalEntry("lost", "lost.pdf", "sending", sent_at=T0 - 100.0, until=T0 + 3600.0)
    journal = MemoryJournal([inherited])
    harness = Harness(journal, [("strangers-scan", T0 + 500.0)], dated=False)
    harness.recovery.note_seen(await journal.entries())  # as the batch does, at once
    first = await harness.recovery.settle(await journal.entries())
    assert first["lost"].kind is Settlement.REPORT  # the service's clock cannot be dated yet
    harness.now = 1000.0
    harness.date(1000.0)
    await harness.recovery.calibrate()
    decision = (await harness.recovery.settle(await journal.entries()))["lost"]
    assert decision.kind is not Settlement.ADOPT, decision
    # Its window closed at T0 + 1 and lists nothing: proof its POST made no scan.
    assert decision.kind is Settlement.RESEND
