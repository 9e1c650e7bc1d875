"""The settling rule: what became of scan POSTs whose answer never came back.

A journaled batch records each item's intent before its POST goes out. An item left at that
step after a crash (or a lost answer) may or may not have started a billed scan. The only
evidence is scan-overview: scan ids and zone-less, whole-second dates, no file names.

``decide_settlement`` is the rule, a pure function of that evidence:

- **adopt** a scan when, in every way the listed scans can be shared out among the items in
  doubt, this item gets that same scan;
- **resend** only when, in every way, it gets none, *and* its window is closed (no POST of it
  can still register) *and* the overview was read at least ``lag`` after that;
- **wait** while a window is still open or the overview may not list it yet;
- **report** otherwise (with the scans it may have started and its window, in service time),
  and while scan-overview's zone is not calibrated. Missing evidence never resends.

The rule assumes that, inside the windows, every API scan on the key that the journal does
not know came from one of the items in doubt (no other client scanning with the same key at
that moment). If more scans are listed than items could have made, nothing is decided. Where
the overview proves the assumption false (``run_started``: an unknown API scan dated after
this run started and outside every window, i.e. another client scanning with this key, such as
a web service beside a batch), a scan in a window may be that client's, so nothing is adopted:
the item is reported with its candidates instead.

Other runs' unanswered POSTs (``foreign_windows``: on a journal several processes share, the
"sending" entries of the others) break that assumption where they may have registered a scan:
scan-overview lists such a scan at once, but no journal entry claims it until its answer comes
back. A scan dated within such a window is never adopted, and no share-out that counts on it
being an in-doubt item's decides anything: the items it may belong to wait for those POSTs'
answers while one may still come, and are reported otherwise.

    >>> from imagetwin_async._servicetime import Interval, ZoneCalibration
    >>> zone = ZoneCalibration(Interval(0.0, 0.0))  # scanDate is exactly UTC
    >>> decisions = decide_settlement(
    ...     {"a.pdf": Interval(100.0, 105.0)},
    ...     [ListedScan("s1", naive=102.0)],
    ...     known_ids=set(),
    ...     zone=zone,
    ...     read_at=200.0,
    ...     lag=10.0,
    ... )
    >>> decisions["a.pdf"].kind, decisions["a.pdf"].scan_id
    (<Settlement.ADOPT: 'adopt'>, 's1')
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping, Sequence
from typing import Final

import attrs

from ._servicetime import Interval, ZoneCalibration

__all__ = ["Decision", "ListedScan", "Settlement", "decide_settlement"]

# Ways of sharing scans out that we try before calling a tangle undecidable (each in-doubt
# item is one POST; with the unanswered POSTs bounded, a tangle holds a handful of items).
_MAX_STEPS: Final = 20_000


class Settlement(enum.Enum):
    ADOPT = "adopt"  # the item started exactly this scan: wait for its result
    RESEND = "resend"  # proven: the item started no scan; send it again
    WAIT = "wait"  # a window is still open, or the overview may not list it yet
    REPORT = "report"  # cannot tell: the user decides (candidates and window attached)
    UNCALIBRATED = "uncalibrated"  # scanDate's zone is unknown yet: report until it is known


@attrs.frozen
class ListedScan:
    """One row of scan-overview: ``naive`` is its ``scanDate`` read as if it were UTC."""

    scan_id: str
    naive: float
    api_scan: bool = True


@attrs.frozen
class Decision:
    """What to do with one in-doubt item, and why (``reason`` is for the user)."""

    kind: Settlement
    reason: str
    scan_id: str | None = None  # ADOPT: the scan
    candidates: tuple[str, ...] = ()  # REPORT / UNCALIBRATED: scans it may have started
    window: Interval | None = None  # service time the POST may have registered in
    wait_until: float | None = None  # WAIT: service time after which to read again


def decide_settlement(
    windows: Mapping[str, Interval | None],
    scans: Sequence[ListedScan],
    *,
    known_ids: Collection[str],
    zone: ZoneCalibration,
    read_at: float,
    lag: float,
    run_started: float | None = None,
    foreign_windows: Collection[Interval | None] = (),
    answerable_windows: Collection[Interval | None] | None = None,
    wait_for_foreign: bool = True,
) -> dict[str, Decision]:
    """Decide every in-doubt item at once (their windows can share scans).

    ``windows``: per item, the service-time interval its POST may have registered a scan in
    (``None``: unknown, e.g. recorded before service time was kept); ``scans``: the overview
    read (covering every window); ``known_ids``: scan ids the journal already holds;
    ``read_at``: service time no later than when the overview read was sent; ``lag``: how long
    after registering a scan the overview may still not list it; ``run_started``: service time
    no earlier than this run's start, after which every API scan on the key is the journal's
    or an in-doubt item's unless another client shares the key (``None``: not checked);
    ``foreign_windows``: the windows of POSTs other than the in-doubt items' whose answer is not
    recorded yet (other runs' "sending" entries; ``None``: unknown, any time), read after the
    overview; ``answerable_windows``: those of them whose answer may still be recorded (their
    run alive; default: all); ``wait_for_foreign``: whether an item whose scans such a POST
    may have made, and whose answer may still come (an answerable window, ``read_at`` before
    its end), waits for it (``False`` on the last read: it is reported instead).
    """
    unclaimed = [s for s in scans if s.api_scan and s.scan_id not in known_ids]
    dates = {s.scan_id: zone.service_time(s.naive) for s in unclaimed}

    def possible(window: Interval | None) -> list[str]:
        return [s.scan_id for s in unclaimed if window is None or dates[s.scan_id].overlaps(window)]

    if not zone.calibrated:
        return {
            key: Decision(
                Settlement.UNCALIBRATED,
                "scan-overview's dates carry no zone and no scan the journal knows has "
                "calibrated them yet",
                candidates=tuple(possible(window)),
                window=window,
            )
            for key, window in windows.items()
        }
    open_until = [w.hi + lag for w in windows.values() if w is not None and read_at < w.hi + lag]
    if open_until:
        until = max(open_until)
        return {
            key: Decision(
                Settlement.WAIT,
                "its window is still open, or too recent for scan-overview to list it",
                window=window,
                wait_until=until,
            )
            for key, window in windows.items()
        }
    fits = {key: set(possible(window)) for key, window in windows.items()}
    foreign = list(foreign_windows)
    stranger = _stranger(unclaimed, dates, [*windows.values(), *foreign], run_started)
    # Scans another run's unanswered POST may have made: nobody claims them yet, and the rule's
    # share-out (every unclaimed scan in a window is an in-doubt item's) does not hold for them.
    theirs = {
        scan_id
        for scan_id, date in dates.items()
        if any(w is None or date.overlaps(w) for w in foreign)
    }
    # Those whose answer may still come back (and be journaled, claiming its scan).
    answerable = [
        w
        for w in (foreign if answerable_windows is None else answerable_windows)
        if w is None or read_at < w.hi
    ]
    decisions: dict[str, Decision] = {}
    for items, listed in _tangles(fits):
        shares = _shares(items, listed, fits)
        shared = sorted(theirs.intersection(listed))
        # Waiting is worth it only while one of those POSTs may still be answered: once its
        # window has ended its sender has its answer or has lost it, and a lost one stays
        # unanswered until that run settles it, which may take as long as its batch. So we read
        # again ``lag`` later (a scan POST is answered in seconds; one still open after the
        # overview's lag is slow or lost), as often as the caller's bound on reads allows, then
        # report: the item stays in doubt in the journal and the next run settles it, by then
        # with the other run's answer recorded. Never paid twice, never another's result.
        resolvable = (
            wait_for_foreign
            and stranger is None  # a stranger forbids adopting whatever the others answer
            and any(w is None or dates[s].overlaps(w) for s in shared for w in answerable)
        )
        read_again = read_at + lag if resolvable else None
        for key in items:
            decision = _decide(key, windows[key], shares, fits[key])
            if shared:
                decision = _theirs(decision, windows[key], fits[key], shared, wait_until=read_again)
            elif decision.kind is Settlement.ADOPT and stranger is not None:
                decision = Decision(
                    Settlement.REPORT,
                    f"another client scans with this key (scan {stranger} is neither this "
                    "journal's nor in any in-doubt window), so the scan in its window may be "
                    "theirs",
                    candidates=tuple(sorted(fits[key])),
                    window=windows[key],
                )
            decisions[key] = decision
    return decisions


def _theirs(
    decision: Decision,
    window: Interval | None,
    fits: set[str],
    shared: list[str],
    *,
    wait_until: float | None,
) -> Decision:
    """``decision`` for an item that shares out scans another run's unanswered POST may have
    made (``shared``): it may neither adopt nor be resent on that share-out. It waits (until
    ``wait_until``, when not ``None``) or is reported."""
    which = ", ".join(shared)
    if wait_until is not None and window is not None:
        return Decision(
            Settlement.WAIT,
            f"another run's POST, not answered yet, may have made scan {which}: waiting for "
            "its answer to tell whose it is",
            candidates=tuple(sorted(fits)),
            window=window,
            wait_until=wait_until,
        )
    if decision.kind in (Settlement.ADOPT, Settlement.RESEND):
        return Decision(
            Settlement.REPORT,
            f"another run's POST, whose answer is not recorded, may have made scan {which}, "
            "dated in this item's window or in that of an item it shares scans with",
            candidates=tuple(sorted(fits)),
            window=window,
        )
    return decision


def _stranger(
    unclaimed: Sequence[ListedScan],
    dates: Mapping[str, Interval],
    windows: Sequence[Interval | None],
    run_started: float | None,
) -> str | None:
    """An unknown API scan that can only be another client's: surely dated after this run
    started (its own scans are then all known, or lost inside a window) and in no window (an
    in-doubt item's or another run's unanswered POST's)."""
    if run_started is None or None in windows:  # an unknown window may hold any scan
        return None
    spans = [w for w in windows if w is not None]
    for scan in unclaimed:
        date = dates[scan.scan_id]
        if date.lo > run_started and not any(date.overlaps(w) for w in spans):
            return scan.scan_id
    return None


def _tangles(fits: Mapping[str, set[str]]) -> list[tuple[list[str], list[str]]]:
    """Items and scans in groups that share no scan with another group."""
    groups: list[tuple[list[str], list[str]]] = []
    seen: set[str] = set()
    for start in fits:
        if start in seen:
            continue
        items, scans, todo = [start], set(fits[start]), [start]
        seen.add(start)
        while todo:
            todo.pop()
            for other, its in fits.items():
                if other not in seen and its & scans:
                    seen.add(other)
                    items.append(other)
                    todo.append(other)
                    scans |= its
        groups.append((items, sorted(scans)))
    return groups


def _shares(
    items: list[str], scans: list[str], fits: Mapping[str, set[str]]
) -> dict[str, set[str | None]] | None:
    """For each item, what it gets across every way of giving each listed scan to exactly
    one item whose window allows it (an item makes at most one scan); ``None`` when no such
    way exists or there are too many to try."""
    outcomes: dict[str, set[str | None]] = {key: set() for key in items}
    owner: dict[str, str] = {}
    steps = 0
    found = False

    def place(index: int) -> bool:
        nonlocal steps, found
        steps += 1
        if steps > _MAX_STEPS:
            return False
        if index == len(scans):
            found = True
            taken = {item: scan for scan, item in owner.items()}
            for key in items:
                outcomes[key].add(taken.get(key))
            return True
        scan = scans[index]
        used = set(owner.values())
        for key in items:
            if key not in used and scan in fits[key]:
                owner[scan] = key
                if not place(index + 1):
                    return False
                del owner[scan]
        return True

    if not place(0) or not found:
        return None
    return outcomes


def _decide(
    key: str,
    window: Interval | None,
    shares: Mapping[str, set[str | None]] | None,
    fits: set[str],
) -> Decision:
    candidates = tuple(sorted(fits))
    if shares is None:
        return Decision(
            Settlement.REPORT,
            "scan-overview lists scans that these items cannot account for together (another "
            "client on this key?) or too many ways to share them out",
            candidates=candidates,
            window=window,
        )
    gets = shares[key]
    if window is None:
        return Decision(
            Settlement.REPORT,
            "its send time was not recorded in service time",
            candidates=tuple(sorted(s for s in gets if s is not None)) or candidates,
        )
    if gets == {None}:
        return Decision(
            Settlement.RESEND,
            "scan-overview, read after its window closed, lists no scan it can have started",
            window=window,
        )
    if len(gets) == 1:
        (scan,) = gets
        return Decision(
            Settlement.ADOPT,
            "the only scan in scan-overview it can have started",
            scan_id=scan,
            window=window,
        )
    return Decision(
        Settlement.REPORT,
        "scan-overview cannot tell which scan, if any, it started",
        candidates=tuple(sorted(s for s in gets if s is not None)),
        window=window,
    )
