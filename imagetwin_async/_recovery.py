"""What a journaled batch does about the runs before it (and its own lost answers).

- **Service time.** Journal records are dated by the service's clock (``_servicetime``): the
  first read of a run dates it; sends record ``(sent_at, until)``, answers ``answered_at``.
- **Settling.** Items left "sending" are decided by ``_settlement.decide_settlement`` from a
  scan-overview read, weighed against the scans the journal holds and, on a shared journal,
  the other runs' POSTs still awaiting an answer: adopted, sent again (on proof only), waited
  for, or reported with their candidate scans. Items whose decision needs scan-overview's
  zone, not yet calibrated, and items whose answer this run lost, are decided once the rest of
  the batch is done (its scans, now known, calibrate the zone; no other POST of its own is then
  on its way to blur a window, and other runs' are read from the journal).
- **Warm limiters.** The journal keeps recent send and answer times (service time), so a run
  resumed right after a crash counts what its predecessor spent of the rate budget.

    >>> recovery = Recovery(journal, transport.service_clock, client.scan_overview,
    ...                     request_timeout=300.0, settle_delay=30.0)
    >>> await recovery.calibrate()
    >>> decisions = await recovery.settle(await journal.entries())
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Final, Protocol, TypeVar, runtime_checkable

import attrs
from yarl import URL

from ._errors import ImagetwinError
from ._journal import (
    Journal,
    JournalEntry,
    JournalError,
    JournalInFlight,
    JournalScanIds,
    utc_now,
)
from ._limits import Limiter
from ._models import ScanOverview
from ._protocol import validate_scan_id
from ._servicetime import Interval, ServiceClock, ZoneCalibration
from ._settlement import Decision, ListedScan, Settlement, decide_settlement

__all__ = [
    "InDoubt",
    "Recovery",
    "SeedableLimiter",
    "bind_to_service",
    "in_doubt",
    "service_identity",
    "settle_by_hand",
]

logger = logging.getLogger("imagetwin_async.batch")
T = TypeVar("T")

ZONE_KEY: Final = "service_clock.scan_date_offset"
DOUBT_KEY: Final = "in_doubt."  # + item key: the last settling's report, for settling by hand
RATES_KEY: Final = "rate.recent_answers"
SERVICE_KEY: Final = "journal.service"  # the base URL whose scans the journal holds
# Reads of scan-overview while a window may still fill (the overview may list late).
_MAX_WAITS: Final = 4
# Known scans used to calibrate scanDate's zone: the latest few are plenty.
_CALIBRATION_SCANS: Final = 32

ReadOverview = Callable[[dt.date, dt.date], Awaitable[ScanOverview]]


@runtime_checkable
class SeedableLimiter(Protocol):
    """A limiter that can count requests an earlier process sent (see ``WindowLimiter.seed``).

    ``RedisLimiter`` is not one, on purpose: its state lives in Redis, is shared by every
    process on the key and outlives a crash, so it already counts what the dead run spent.
    """

    def seed(self, answered: Iterable[float]) -> None: ...


def service_identity(base_url: str) -> str:
    """The part of a base URL that names the service: scheme, host, port and path (no
    credentials, query or trailing slash), so equal services compare equal.

    Every service on this machine's loopback is one: an emulator (the CLI's ``--emulator``
    starts one on a new port each run), whose results are as made up as another's.
    """
    url = URL(base_url)
    if not url.is_absolute():
        return base_url.rstrip("/")
    host = (url.host or "").lower()
    path = url.path.rstrip("/")
    if _loopback(host):
        return f"{url.scheme.lower()}://localhost:*{path} (this machine: an emulator)"
    port = f":{url.explicit_port}" if url.explicit_port is not None else ""
    return f"{url.scheme.lower()}://{host}{port}{path}"


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def bind_to_service(journal: Journal, base_url: str) -> None:
    """Refuse a journal that holds the scans of another service (``JournalError``).

    A journal's results and scan ids are only true of the service that made them: a journal
    filled against an emulator, a staging proxy or another API would otherwise hand its
    results back as this service's, without a request. The first run records its base URL;
    later runs must use the same one.
    """
    wanted = service_identity(base_url)
    recorded = await journal.load_meta(SERVICE_KEY)
    if recorded is None:
        await journal.store_meta(SERVICE_KEY, wanted)
    elif recorded != wanted:
        raise JournalError(
            f"this journal holds the scans of {recorded}, not of {wanted}: its results and "
            "scan ids mean nothing to this service. Use another journal for this service, or "
            "the service it was filled against"
        )


class Recovery:
    """Service time, settling and warm limiters for one journaled run (see the module)."""

    def __init__(
        self,
        journal: Journal,
        clock: ServiceClock,
        read_overview: ReadOverview,
        *,
        request_timeout: float | None,
        settle_delay: float,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._journal = journal
        self._clock = clock
        self._read_overview = read_overview
        self._request_timeout = request_timeout
        self._settle_delay = settle_delay
        self._monotonic = monotonic
        self._sleep = sleep
        # The run before us had ended by now (we hold the journal): none of its POSTs can
        # reach the service later than this (plus settle_delay for the overview to list it).
        self._started = monotonic()
        self._zone = ZoneCalibration()
        self._lost: dict[str, float] = {}  # this run's lost answers: key -> when (monotonic)
        # Another run's items left "sending": when this run first saw them (monotonic). Their
        # run had died by then (a shared journal hands them over only once their owner is
        # gone), so no POST of theirs can register later: the end of their windows.
        self._seen: dict[str, float] = {}
        self._inherited: dict[str, list[float]] = {}  # the runs before: answer times
        self.waited = 0.0  # seconds the last ``settle`` waited for windows to close

    @property
    def zone(self) -> ZoneCalibration:
        return self._zone

    # ---- service time -----------------------------------------------------------------

    async def calibrate(self) -> None:
        """Date the service's clock (one scan-overview read, unless an answer did already)
        and load scanDate's zone as the journal last learned it."""
        self._zone = ZoneCalibration.loads(await self._journal.load_meta(ZONE_KEY))
        if not self._clock.calibrated:
            # Any answer dates the service's clock; the host's date only picks the days.
            today = dt.datetime.now(dt.UTC).date()
            with contextlib.suppress(ImagetwinError):
                await self._read_overview(today - dt.timedelta(days=1), today)

    def send_times(self) -> tuple[float, float | None]:
        """``(sent_at, until)`` for a POST about to go out (see ``JournalEntry``)."""
        if not self._clock.calibrated:
            return utc_now(), None  # not service time: such an entry is never settled alone
        now = self._clock.at(self._monotonic())
        timeout = self._request_timeout if self._request_timeout is not None else 3600.0
        return now.lo, now.hi + timeout

    def answer_time(self) -> float | None:
        return self._clock.at(self._monotonic()).hi if self._clock.calibrated else None

    def lost(self, key: str) -> None:
        """This run's POST for ``key`` ended without an answer: its window closes now."""
        self._lost[key] = self._monotonic()

    # ---- settling ---------------------------------------------------------------------

    def note_seen(self, entries: Mapping[str, JournalEntry]) -> None:
        """Call with what each ``journal.entries()`` returned, at once: another run's item left
        "sending" is first seen now, its run dead by then (it was handed over), so its window
        ends here (``_window``). Not this run's start: on a journal several pods share, a pod
        can die while this run goes on, and its POSTs may register up to its death.

        (On PostgreSQL "handed over" means its session ended: a pod that lost its connection
        but runs on may still have one POST on the wire, landing later. docs/fleet.md names
        this limit; waiting out every inherited POST's full ``until`` instead would stall each
        restarted pod for the request deadline.)"""
        now = self._monotonic()
        for key, entry in entries.items():
            if entry.state == "sending" and key not in self._lost:
                self._seen.setdefault(key, now)

    def _window(self, entry: JournalEntry) -> Interval | None:
        if entry.until is None or not self._clock.calibrated:
            return None
        gone = self._lost.get(entry.key)
        if gone is None:
            gone = self._seen.setdefault(entry.key, self._monotonic())
        ended = self._clock.at(gone).hi
        # A send dated after the window's end is a lie (see ``seed``): the window is then all
        # time up to its end, and its decision waits for nothing in the future.
        return Interval(min(entry.sent_at, ended), min(entry.until, ended))

    async def settle(self, entries: Mapping[str, JournalEntry]) -> dict[str, Decision]:
        """Decide every entry left "sending"; adoptions and resends are written to the
        journal here. Waits (``settle_delay`` at most, a few reads) while a window may fill,
        and (``settle_delay`` a read, the same few reads) while another run's unanswered POST
        may have made a scan an item could otherwise adopt (``JournalInFlight``)."""
        pending = {k: e for k, e in entries.items() if e.state == "sending"}
        if not pending:
            return {}
        self.note_seen(pending)
        windows = {key: self._window(entry) for key, entry in pending.items()}
        decisions: dict[str, Decision] = {}
        self.waited = 0.0
        for attempt in range(_MAX_WAITS):
            try:
                # The last read decides rather than wait for other runs' answers.
                decisions = await self._decide(
                    windows, entries, wait_for_others=attempt < _MAX_WAITS - 1
                )
            except ImagetwinError as exc:
                what = "the journal" if isinstance(exc, JournalError) else "scan-overview"
                reason = f"{what} could not be read ({exc})"
                logger.warning("could not settle %d in-doubt item(s): %s", len(pending), reason)
                return {
                    k: Decision(Settlement.REPORT, reason, window=w) for k, w in windows.items()
                }
            until = [d.wait_until for d in decisions.values() if d.wait_until is not None]
            if not until:
                break
            delay = self._clock.to_monotonic(max(until)) - self._monotonic()
            logger.info("waiting %.1f s for scan-overview to list in-doubt items", delay)
            await self._sleep(max(0.0, delay))
            self.waited += max(0.0, delay)
        for key, decision in decisions.items():
            await self._apply(pending[key], decision)
        return decisions

    async def _decide(
        self,
        windows: Mapping[str, Interval | None],
        entries: Mapping[str, JournalEntry],
        *,
        wait_for_others: bool = True,
    ) -> dict[str, Decision]:
        known = [
            e
            for e in entries.values()
            if e.scan_id and e.answered_at is not None and e.until is not None
        ]
        known.sort(key=lambda e: e.answered_at or 0.0)
        known = known[-_CALIBRATION_SCANS:]
        spans = [self._zone.naive_span(w) for w in windows.values() if w is not None]
        spans += [Interval(e.sent_at, e.answered_at or e.sent_at) for e in known]
        if not spans:  # nothing is dated in service time: any read will do
            spans = [self._clock.at(self._monotonic())] if self._clock.calibrated else []
        if spans:
            first = min(s.lo for s in spans) - 86_400  # the zone startDate counts in is unknown
            last = max(s.hi for s in spans) + 86_400
        else:
            first = last = utc_now()
        read_at = self._monotonic()
        overview = await self._read_overview(_day(first), _day(last))
        listed = [
            ListedScan(s.scan_id, s.scan_date.replace(tzinfo=dt.UTC).timestamp(), s.api_scan)
            for s in overview.scans
        ]
        # Read after the overview: a scan it lists had registered before the read, and its POST's
        # "sending" entry was written before that POST went out. So each such POST of another
        # run of a shared journal is, at the first of these reads, either still unanswered (its
        # window is read here) or answered and journaled (its scan id is read next); one
        # answered between the two reads is in both. Unanswered ones are what their scans'
        # dates are weighed against: such a scan is listed, yet no entry claims it.
        others, answerable = await self._others_sending(windows)
        known_ids = {e.scan_id for e in entries.values() if e.scan_id} | await self._scan_ids()
        by_id = {s.scan_id: s for s in listed}
        pairs = [
            (by_id[e.scan_id].naive, Interval(e.sent_at, e.answered_at or e.sent_at))
            for e in known
            if e.scan_id in by_id
        ]
        if self._zone.learn(pairs) and self._zone.calibrated:
            with contextlib.suppress(Exception):  # a lost calibration is re-learned next run
                await self._journal.store_meta(ZONE_KEY, self._zone.dumps())
        if not self._clock.calibrated:
            return {
                key: Decision(
                    Settlement.REPORT,
                    "the service's clock could not be dated",
                    window=window,
                )
                for key, window in windows.items()
            }
        return decide_settlement(
            windows,
            listed,
            known_ids=known_ids,
            zone=self._zone,
            read_at=self._clock.at(read_at).lo,
            lag=self._settle_delay,
            # Scans after this run's start are all known or lost in a window, unless another
            # client scans with the key: then nothing may be adopted (``decide_settlement``).
            run_started=self._clock.at(self._started).hi,
            foreign_windows=others,
            answerable_windows=answerable,
            wait_for_foreign=wait_for_others,
        )

    async def _others_sending(
        self, settling: Mapping[str, object]
    ) -> tuple[list[Interval | None], list[Interval | None]]:
        """The windows of the journal's POSTs still unanswered, other than the items being
        settled, if it can say (``JournalInFlight``): on a shared journal, the other runs' sends.

        A POST may register its scan (and scan-overview list it) well before its answer is
        back and journaled: until then nothing claims that scan, and one dated inside an
        in-doubt item's window must not be adopted as that item's. A journal without the
        method (``SQLiteJournal``: one process has the file, and none of its own POSTs is on
        its way while it settles) leaves this empty: the behaviour before it existed.

        Returns every such window, and those whose answer may still be recorded (their run
        alive, or not known to be dead): waiting for a dead run's answer would be waiting for
        nothing, though its window still counts (its item is settled by the next run).
        """
        if not isinstance(self._journal, JournalInFlight):
            return [], []
        sending = await self._read_journal(self._journal.in_flight, "in_flight")
        others = [e for key, e in sending.items() if key not in settling and e.state == "sending"]
        # No ``until``: sent before its sender's clock was dated, its scan may be any time.
        windows = [
            None if e.until is None else Interval(min(e.sent_at, e.until), e.until) for e in others
        ]
        return windows, [w for w, e in zip(windows, others, strict=True) if e.live is not False]

    async def _scan_ids(self) -> set[str]:
        """Every scan id the journal holds now, if it can say (``JournalScanIds``).

        ``entries`` is a snapshot taken before ``settle`` began, and it may wait minutes for
        windows to close: meanwhile other pods on a shared journal record scans, and one of
        theirs dated in an item's window must not look unclaimed, or the item would adopt
        another item's result. (``entries`` is not read again: on PostgreSQL it takes over
        dead runs' items.)
        """
        if not isinstance(self._journal, JournalScanIds):
            return set()  # a user journal without it: the snapshot is all we know (documented)
        return await self._read_journal(self._journal.scan_ids, "scan_ids")

    @staticmethod
    async def _read_journal(read: Callable[[], Awaitable[T]], name: str) -> T:
        try:
            return await read()
        except JournalError:
            raise
        except Exception as exc:  # settle reports what it cannot read; it never guesses
            # Its type only in the message (kept in the journal's report): a driver's text may
            # quote a URL with its password. The chained exception has the detail.
            raise JournalError(f"its {name}() failed ({type(exc).__name__})") from exc

    async def _apply(self, entry: JournalEntry, decision: Decision) -> None:
        if decision.kind is Settlement.ADOPT:
            assert decision.scan_id is not None
            note = settled_note(decision, self.waited)
            logger.warning("%s: %s", entry.label, note)
            await self._journal.started(entry.key, decision.scan_id, note)
        elif decision.kind in (Settlement.REPORT, Settlement.UNCALIBRATED):
            report = {
                "reason": decision.reason,
                "candidates": list(decision.candidates),
                "window": [decision.window.lo, decision.window.hi] if decision.window else None,
            }
            with contextlib.suppress(Exception):  # the report is a courtesy; never fatal
                await self._journal.store_meta(DOUBT_KEY + entry.key, json.dumps(report))
        elif decision.kind is Settlement.RESEND:
            logger.warning(
                "%s: scan-overview, read after its window closed, lists no scan from its lost "
                "POST; sending it again",
                entry.label,
            )
            await self._journal.forget(entry.key)

    def hold_until(self, decisions: Mapping[str, Decision]) -> float:
        """Monotonic time before which no new POST may go out: until then it could land in
        the window of an item still to be settled this run."""
        ends = [
            d.window.hi + self._settle_delay
            for d in decisions.values()
            if d.kind is Settlement.UNCALIBRATED and d.window is not None
        ]
        if not ends or not self._clock.calibrated:
            return -math.inf
        return self._clock.to_monotonic(max(ends))

    # ---- warm limiters ----------------------------------------------------------------

    async def seed(
        self,
        entries: Mapping[str, JournalEntry],
        limiters: Mapping[str, object],
        loop_time: Callable[[], float],
    ) -> None:
        """Count what the runs before spent of the rate budget on every seedable limiter."""
        if not self._clock.calibrated:
            return
        recent: dict[str, list[float]] = {}
        flushed = -math.inf
        in_flight: dict[str, int] = {}
        with contextlib.suppress(Exception):
            stored = json.loads(await self._journal.load_meta(RATES_KEY) or "{}")
            recent = {g: [float(t) for t in ts] for g, ts in stored["groups"].items()}
            flushed = float(stored["at"])
            in_flight = {g: int(n) for g, n in stored.get("in_flight", {}).items()}
        died = self._clock.at(self._started).hi
        # A request that never had its answer may still have been counted a little after its
        # sender died (a server working through its queue): as late as settling allows.
        late = died + self._settle_delay
        # Scan POSTs are journaled one by one: answered ones at their answer, the rest then.
        # Every answer recorded came before this run began: one dated later is a lie (an
        # earlier run dated by a server whose clock was off, say), and counted as dated it
        # would hold a slot for years.
        recent = {group: [min(t, died) for t in times] for group, times in recent.items()}
        scans = [
            min(e.answered_at, died) if e.answered_at is not None else min(e.until or late, late)
            for e in entries.values()
            if e.until is not None
        ]
        # Other answers after the last stored flush are not in the record: count them at the
        # busiest rate the record shows, for the whole time from that flush to the sender's
        # death, as if all came at its death (the safe side).
        unrecorded = max(1.0, (died - flushed) / _FLUSH_EVERY) if flushed > -math.inf else 1.0
        for group, times in recent.items():
            missing = math.ceil(_busiest(times, _FLUSH_EVERY) * unrecorded)
            unanswered = in_flight.get(group, 0)
            recent[group] = [*times, *([died] * missing), *([late] * unanswered)]
        recent["scan"] = scans
        # Kept for this run's own flushes: a run killed soon after must pass them on.
        self._inherited = {group: sorted(times)[-_KEPT:] for group, times in recent.items()}
        shift = loop_time() - self._monotonic()
        for group, times in recent.items():
            limiter = limiters.get(group)
            if isinstance(limiter, SeedableLimiter) and times:
                latest = [self._clock.to_monotonic(t) + shift for t in times]
                limiter.seed(latest)

    async def keep_rates(
        self, answers: Mapping[str, Iterable[float]], limiters: Mapping[str, object]
    ) -> None:
        """Store recent answer times (service time) and the requests in flight every
        ``_FLUSH_EVERY`` s, for ``seed``."""
        while True:
            await self._sleep(_FLUSH_EVERY)
            if not self._clock.calibrated:
                continue
            own = {group: [self._clock.at(m).hi for m in times] for group, times in answers.items()}
            groups = {
                group: sorted([*self._inherited.get(group, []), *own.get(group, [])])[-_KEPT:]
                for group in {*own, *self._inherited}
                if group != "scan"  # scans are journaled item by item
            }
            data = {
                "at": self._clock.at(self._monotonic()).hi,
                "groups": groups,
                # Requests on their way have no answer time yet, but the service may count them.
                "in_flight": {
                    group: limiter.snapshot().in_flight
                    for group, limiter in limiters.items()
                    if isinstance(limiter, Limiter)
                },
            }
            try:
                await self._journal.store_meta(RATES_KEY, json.dumps(data))
            except Exception:  # a full disk costs warm limiters, never the batch
                logger.debug("could not store recent answer times", exc_info=True)


_FLUSH_EVERY: Final = 0.5
_KEPT: Final = 128  # answer times kept per group: more than any window's budget (60 reads)


def settled_note(decision: Decision, waited: float) -> str:
    """What an outcome says about how settling decided it (``ScanOutcome.note``)."""
    read = (
        f"read again after waiting {waited:.1f} s for its window to close"
        if waited > 0
        else "read after its window closed"
    )
    if decision.kind is Settlement.ADOPT:
        return f"adopted scan {decision.scan_id} from scan-overview (its answer was lost; {read})"
    return f"sent again: scan-overview, {read}, lists no scan from its lost POST"


@attrs.frozen
class InDoubt:
    """An item whose scan POST may or may not have started a scan, as the journal has it:
    ``candidates`` (scan ids) and ``window`` (service time, UTC) from the last settling."""

    key: str
    label: str
    sent_at: dt.datetime
    candidates: tuple[str, ...] = ()
    window: tuple[dt.datetime, dt.datetime] | None = None
    reason: str = "not settled yet"


async def in_doubt(journal: Journal) -> list[InDoubt]:
    """The journal's in-doubt items, oldest first (what ``imagetwin journal settle`` lists).

    >>> async with await SQLiteJournal.open("sweep.journal") as journal:
    ...     for item in await in_doubt(journal):
    ...         print(item.label, item.candidates)
    """
    items = []
    for entry in sorted((await journal.entries()).values(), key=lambda e: e.sent_at):
        if entry.state != "sending":
            continue
        item = InDoubt(entry.key, entry.label, _utc(entry.sent_at))
        with contextlib.suppress(ValueError, TypeError, KeyError):
            report = json.loads(await journal.load_meta(DOUBT_KEY + entry.key) or "null")
            if report:
                window = report.get("window")
                item = attrs.evolve(
                    item,
                    candidates=tuple(str(c) for c in report.get("candidates", ())),
                    window=(_utc(window[0]), _utc(window[1])) if window else None,
                    reason=str(report.get("reason", item.reason)),
                )
        items.append(item)
    return items


async def settle_by_hand(journal: Journal, key: str, *, adopt: str | None) -> None:
    """Settle an in-doubt item yourself: ``adopt`` a scan id (its result is then waited for
    on the next run), or ``adopt=None`` to have the next run send it again (it may be billed
    twice if it did start a scan). ``JournalError`` if the item is not in doubt or the scan
    belongs to another item."""
    entries = await journal.entries()
    entry = entries.get(key)
    if entry is None or entry.state != "sending":
        raise JournalError(f"no item in doubt has the key {key!r}")
    if adopt is None:
        await journal.forget(key)
        return
    validate_scan_id(adopt)
    owner = next((e for e in entries.values() if e.scan_id == adopt), None)
    if owner is not None:
        raise JournalError(f"scan {adopt} already belongs to {owner.label} in this journal")
    await journal.started(key, adopt, "adopted by hand (imagetwin journal settle)")


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def _busiest(times: list[float], span: float) -> int:
    ordered = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(ordered):
        while ordered[start] < t - span:
            start += 1
        best = max(best, end - start + 1)
    return best


def _day(seconds: float) -> dt.date:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).date()
