"""The settling rule and the service clock, without a loop or a server.

Adversaries named: a client clock minutes off or jumping mid-run (only monotonic durations and
the service's Date headers count), a scan-overview whose dates are in an unannounced zone and
whole seconds, an overview that lists scans late, and answers arriving in any order.
"""

from __future__ import annotations

import datetime as dt
import email.utils

import attrs
from hypothesis import event, given, settings
from hypothesis import strategies as st

from imagetwin_async._servicetime import Interval, ServiceClock, ZoneCalibration
from imagetwin_async._settlement import (
    Decision,
    ListedScan,
    Settlement,
    decide_settlement,
)

UTC_ZONE = ZoneCalibration(Interval(0.0, 0.0))


def http_date(seconds: float) -> str:
    return email.utils.format_datetime(dt.datetime.fromtimestamp(int(seconds), dt.UTC), True)


def decide(
    windows: dict[str, Interval | None],
    scans: list[ListedScan],
    *,
    known: set[str] | None = None,
    zone: ZoneCalibration = UTC_ZONE,
    read_at: float = 1000.0,
    lag: float = 5.0,
) -> dict[str, tuple[Settlement, str | None]]:
    out = decide_settlement(
        windows, scans, known_ids=known or set(), zone=zone, read_at=read_at, lag=lag
    )
    return {k: (d.kind, d.scan_id) for k, d in out.items()}


def test_one_scan_in_one_window_is_adopted() -> None:
    got = decide({"a": Interval(100, 104)}, [ListedScan("s1", 102)])
    assert got == {"a": (Settlement.ADOPT, "s1")}


def test_an_empty_closed_window_is_resent_but_an_open_one_waits() -> None:
    assert decide({"a": Interval(100, 104)}, []) == {"a": (Settlement.RESEND, None)}
    waiting = decide_settlement(
        {"a": Interval(100, 104)}, [], known_ids=(), zone=UTC_ZONE, read_at=107.0, lag=5.0
    )
    assert waiting["a"].kind is Settlement.WAIT
    assert waiting["a"].wait_until == 109.0  # the overview may list a scan up to lag late


def test_a_scan_the_journal_knows_is_nobody_elses_candidate() -> None:
    got = decide({"a": Interval(100, 104)}, [ListedScan("mine", 101)], known={"mine"})
    assert got == {"a": (Settlement.RESEND, None)}


def test_web_scans_are_not_candidates() -> None:
    got = decide({"a": Interval(100, 104)}, [ListedScan("web", 101, api_scan=False)])
    assert got == {"a": (Settlement.RESEND, None)}


def test_two_items_two_scans_ordered_by_their_windows_are_each_adopted() -> None:
    # a's scan can only be a's (b was sent later); b's window holds both, but one is a's.
    got = decide(
        {"a": Interval(100, 110), "b": Interval(103, 110)},
        [ListedScan("s1", 100), ListedScan("s2", 105)],
    )
    assert got == {"a": (Settlement.ADOPT, "s1"), "b": (Settlement.ADOPT, "s2")}


def test_one_scan_two_overlapping_windows_is_reported_with_the_candidate() -> None:
    out = decide_settlement(
        {"a": Interval(100, 110), "b": Interval(101, 110)},
        [ListedScan("s1", 105)],
        known_ids=(),
        zone=UTC_ZONE,
        read_at=1000.0,
        lag=5.0,
    )
    assert {d.kind for d in out.values()} == {Settlement.REPORT}
    assert out["a"].candidates == ("s1",)
    assert out["a"].window == Interval(100, 110)


def test_more_scans_than_items_decides_nothing() -> None:
    got = decide({"a": Interval(100, 110)}, [ListedScan("s1", 101), ListedScan("s2", 102)])
    assert got == {"a": (Settlement.REPORT, None)}


def test_an_uncalibrated_zone_never_adopts_or_resends() -> None:
    out = decide_settlement(
        {"a": Interval(100, 104)},
        [ListedScan("s1", 102 + 3600)],
        known_ids=(),
        zone=ZoneCalibration(),
        read_at=10_000.0,
        lag=5.0,
    )
    assert out["a"].kind is Settlement.UNCALIBRATED
    assert out["a"].candidates == ("s1",)  # listed an hour "later": any zone allows it


def test_an_unknown_window_is_reported_never_resent() -> None:
    assert decide({"a": None}, []) == {"a": (Settlement.REPORT, None)}


def test_the_zone_is_learned_from_known_scans_and_named() -> None:
    zone = ZoneCalibration()
    # Listed in UTC+02:00: a scan sent in [1000, 1000.4] service time shows 7200 s later.
    zone.learn([(8200.0, Interval(1000.0, 1000.4)), (9300.0, Interval(2099.5, 2100.2))])
    assert zone.calibrated
    assert zone.offset is not None
    assert zone.offset.lo <= 7200.0 <= zone.offset.hi
    assert zone.zone_name() == "UTC+02:00"
    assert ZoneCalibration.loads(zone.dumps()).offset == zone.offset
    assert ZoneCalibration.loads("not json").offset is None


def test_the_service_clock_narrows_and_survives_a_jump_of_the_service() -> None:
    clock = ServiceClock()
    assert not clock.observe(0.0, 1.0, "garbage")
    for mono in (10.0, 10.3, 10.6, 10.9, 11.2):
        clock.observe(mono, mono + 0.05, http_date(5000.0 + mono))
    assert clock.at(12.0).lo <= 5012.0 <= clock.at(12.0).hi
    assert clock.at(12.0).width() < 0.5  # whole-second dates, narrowed by their phases
    clock.observe(20.0, 20.1, http_date(9000.0))  # the service's clock was set
    assert clock.jumps == 1
    assert clock.at(20.05).lo <= 9000.5 <= clock.at(20.05).hi


# ---- the property: nothing registered is ever resent; nothing adopted is another's ----


@attrs.frozen
class World:
    """One settling situation: the service's clock and zone, the client's sends, which of them
    registered a scan (and when), the scans the client knows, the death and the late read."""

    offset: float  # service time - client monotonic time
    wall_skew: float  # the client's wall clock: must not matter
    jump: float  # ... nor its jump mid-run
    zone: float  # scanDate's zone, in seconds
    rtt: float
    sends: list[float]
    registered: list[bool]
    delays: list[float]  # from a send to its registration
    known_at: list[float]  # sends of the scans the client saw answered
    died: float
    lag: float  # how late the overview may list a scan (the client's bound)
    true_lag: float  # ... and how late it really does
    read_delay: float  # from the death to the overview's read (negative: read too early)
    answers: list[float]  # when the client heard a Date header
    order: list[int]


@st.composite
def worlds(draw: st.DrawFn) -> World:
    n = draw(st.integers(1, 6))
    sends = sorted(draw(st.lists(st.floats(0, 30), min_size=n, max_size=n)))
    known_count = draw(st.integers(1, 4))
    lag = draw(st.floats(0, 5))
    return World(
        offset=draw(st.floats(-1e6, 1e6)),
        wall_skew=draw(st.floats(-900, 900)),
        jump=draw(st.floats(-900, 900)),
        zone=draw(st.integers(-48, 56)) * 900.0,  # quarter hours
        rtt=draw(st.floats(0.001, 2.0)),
        sends=sends,
        registered=draw(st.lists(st.booleans(), min_size=n, max_size=n)),
        delays=draw(st.lists(st.floats(0, 1.5), min_size=n, max_size=n)),
        known_at=draw(st.lists(st.floats(-50, 40), min_size=known_count, max_size=known_count)),
        died=max(sends) + draw(st.floats(0, 3)),
        lag=lag,
        true_lag=draw(st.floats(0, 1)) * lag,
        read_delay=draw(st.floats(-3, 20)),
        answers=draw(st.lists(st.floats(-60, 60), min_size=1, max_size=12)),
        order=draw(st.permutations(list(range(n)))),
    )


@settings(max_examples=400, deadline=None)
@given(worlds())
def test_no_item_that_registered_a_scan_is_ever_resent(w: World) -> None:
    offset, zone, rtt, died, lag = w.offset, w.zone, w.rtt, w.died, w.lag

    def service(mono: float) -> float:
        return mono + offset

    # The client learns the service's clock from Date headers only (its wall clock, skewed
    # and jumping, is never read).
    clock = ServiceClock()
    for at in w.answers:
        clock.observe(at, at + rtt, http_date(service(at + rtt / 2)))

    def naive(service_time: float) -> float:
        return float(int(service_time + zone))  # listed in the zone, whole seconds

    # Known scans (sent and answered) calibrate the zone.
    calibration = ZoneCalibration()
    listed: list[ListedScan] = []
    pairs = []
    for i, at in enumerate(w.known_at):
        reg = at + rtt / 2
        pairs.append((naive(service(reg)), Interval(clock.at(at).lo, clock.at(at + rtt).hi)))
        listed.append(ListedScan(f"known{i}", naive(service(reg))))
    calibration.learn(pairs)
    # The items in doubt: their windows run from the send to the process's death.
    windows: dict[str, Interval | None] = {}
    truth: dict[str, str | None] = {}
    read_mono = died + w.read_delay
    for i in w.order:
        key = f"item{i}"
        windows[key] = Interval(clock.at(w.sends[i]).lo, clock.at(died).hi)
        reg = min(w.sends[i] + w.delays[i], died)
        truth[key] = f"scan{i}" if w.registered[i] else None
        if w.registered[i] and reg + w.true_lag <= read_mono:  # the overview lists it late
            listed.append(ListedScan(f"scan{i}", naive(service(reg))))
    decisions = decide_settlement(
        windows,
        listed,
        known_ids={f"known{i}" for i in range(len(w.known_at))},
        zone=calibration,
        read_at=clock.at(read_mono).lo,
        lag=lag,
    )
    for key, decision in decisions.items():
        event(decision.kind.value)
        if decision.kind is Settlement.RESEND:
            assert truth[key] is None, "an item that registered a scan would be paid twice"
        if decision.kind is Settlement.ADOPT:
            assert decision.scan_id == truth[key], "adopted another item's scan"
        if decision.kind is Settlement.WAIT:
            assert decision.wait_until is not None


# ---- another client on the key (a web service beside the batch) ---------------------------


def test_a_neighbour_scanning_with_the_key_turns_an_adoption_into_a_report() -> None:
    """The adversary: a web service scanning with the same key while the batch runs. Its scan
    in the lost POST's second is indistinguishable from the item's own; its scans outside
    every window prove it is there, so the lone scan is not adopted."""
    windows: dict[str, Interval | None] = {"a": Interval(100, 104)}
    lone = [ListedScan("theirs-or-mine", 102)]
    assert decide(windows, lone) == {"a": (Settlement.ADOPT, "theirs-or-mine")}
    neighbour = [*lone, ListedScan("web-1", 120)]
    decisions = decide_settlement(
        windows, neighbour, known_ids=(), zone=UTC_ZONE, read_at=1000.0, lag=5.0, run_started=50.0
    )
    assert decisions["a"].kind is Settlement.REPORT
    assert decisions["a"].candidates == ("theirs-or-mine",)
    assert "another client scans with this key (scan web-1" in decisions["a"].reason
    # Scans from before the run started (earlier runs' own) prove nothing.
    earlier = [*lone, ListedScan("old", 10)]
    before = decide_settlement(
        windows, earlier, known_ids=(), zone=UTC_ZONE, read_at=1000.0, lag=5.0, run_started=50.0
    )
    assert before["a"].kind is Settlement.ADOPT
    # An item whose window is unknown may own any scan: nothing proves a stranger then.
    unknown = decide_settlement(
        {**windows, "b": None},
        neighbour,
        known_ids=(),
        zone=UTC_ZONE,
        read_at=1000.0,
        lag=5.0,
        run_started=50.0,
    )
    assert "another client" not in unknown["a"].reason


@settings(max_examples=300, deadline=None)
@given(
    sends=st.lists(st.floats(0, 30), min_size=1, max_size=5),
    registered=st.lists(st.booleans(), min_size=5, max_size=5),
    neighbour=st.lists(st.floats(-5, 60), min_size=0, max_size=6),
    outside=st.floats(40, 200),
)
def test_a_neighbours_scan_is_never_adopted_once_it_has_shown_itself(
    sends: list[float], registered: list[bool], neighbour: list[float], outside: float
) -> None:
    """Another client scans at any moment (some in the items' windows) and at least once
    after the windows: no item adopts its scan, and no item that registered is resent."""
    died = max(sends) + 2.0
    windows: dict[str, Interval | None] = {
        f"item{i}": Interval(float(int(at)), float(int(died)) + 1.0) for i, at in enumerate(sends)
    }
    listed = [ListedScan(f"scan{i}", float(int(at))) for i, at in enumerate(sends) if registered[i]]
    listed += [ListedScan(f"web{i}", float(int(at))) for i, at in enumerate(neighbour)]
    listed.append(ListedScan("web-late", float(int(died + outside))))
    decisions = decide_settlement(
        windows,
        listed,
        known_ids=(),
        zone=UTC_ZONE,
        read_at=died + outside + 100.0,
        lag=5.0,
        run_started=-10.0,
    )
    for key, decision in decisions.items():
        event(decision.kind.value)
        i = int(key.removeprefix("item"))
        if decision.kind is Settlement.ADOPT:
            assert decision.scan_id == f"scan{i}", "adopted the neighbour's scan"
        if decision.kind is Settlement.RESEND:
            assert not registered[i], "an item that registered a scan would be paid twice"


# ---- another run's POST, registered at the service, its answer still on its way -------------


def test_a_scan_another_runs_unanswered_post_may_have_made_is_never_adopted() -> None:
    """The adversary: on a shared journal another pod's POST has registered its scan (listed)
    while its answer is still on its way, so its entry is "sending" with no scan id and the
    scan looks unclaimed. Dated inside the in-doubt item's window it was the item's one
    candidate, and adopted: the other pod's result."""
    windows: dict[str, Interval | None] = {"a": Interval(100, 104)}
    scans = [ListedScan("theirs-or-mine", 102)]
    assert decide(windows, scans) == {"a": (Settlement.ADOPT, "theirs-or-mine")}

    def settle(foreign: list[Interval | None], *, wait: bool = True) -> Decision:
        return decide_settlement(
            windows,
            scans,
            known_ids=(),
            zone=UTC_ZONE,
            read_at=1000.0,
            lag=5.0,
            foreign_windows=foreign,
            wait_for_foreign=wait,
        )["a"]

    # Its answer may still come (its window runs past the read): wait for it, one lag.
    waiting = settle([Interval(101, 1300)])
    assert waiting.kind is Settlement.WAIT
    assert waiting.wait_until == 1005.0
    assert waiting.candidates == ("theirs-or-mine",)
    # The caller's last read, or a send whose answer can no longer come: reported.
    for decision in (settle([Interval(101, 1300)], wait=False), settle([Interval(101, 103)])):
        assert decision.kind is Settlement.REPORT
        assert decision.candidates == ("theirs-or-mine",)
        assert decision.window == Interval(100, 104)
        assert "another run's POST" in decision.reason
    # A send of unknown window (its sender's clock was not dated) may have made any scan.
    assert settle([None], wait=False).kind is Settlement.REPORT
    # Sent after the scan registered: not theirs, adopted as before, without a wait.
    assert settle([Interval(110, 1300)]).kind is Settlement.ADOPT


def test_an_empty_window_is_resent_whatever_the_others_send() -> None:
    # The overview, read after the window closed, lists nothing the item can have made.
    decisions = decide_settlement(
        {"a": Interval(100, 104)},
        [ListedScan("theirs", 300)],
        known_ids=(),
        zone=UTC_ZONE,
        read_at=1000.0,
        lag=5.0,
        foreign_windows=[Interval(101, 1300)],
    )
    assert decisions["a"].kind is Settlement.RESEND


def test_a_share_out_that_counts_on_the_others_scan_decides_nothing() -> None:
    """Scan f can only be b's (among the items in doubt), which leaves s to a. But another
    run's unanswered POST may have made f, and b then s, and a nothing: neither adopts."""
    windows: dict[str, Interval | None] = {"a": Interval(100, 110), "b": Interval(108, 120)}
    scans = [ListedScan("s", 109), ListedScan("f", 115)]
    assert decide(windows, scans) == {"a": (Settlement.ADOPT, "s"), "b": (Settlement.ADOPT, "f")}
    decisions = decide_settlement(
        windows,
        scans,
        known_ids=(),
        zone=UTC_ZONE,
        read_at=1000.0,
        lag=5.0,
        foreign_windows=[Interval(114, 116)],
    )
    assert {d.kind for d in decisions.values()} == {Settlement.REPORT}
    assert decisions["a"].candidates == ("s",)


def test_the_others_unanswered_scans_are_not_a_strangers() -> None:
    # A scan after this run started, in no item's window but in another run's unanswered
    # POST's, is that POST's: no sign of another client on the key, the item adopts.
    decisions = decide_settlement(
        {"a": Interval(100, 104)},
        [ListedScan("mine", 102), ListedScan("theirs", 300)],
        known_ids=(),
        zone=UTC_ZONE,
        read_at=1000.0,
        lag=5.0,
        run_started=50.0,
        foreign_windows=[Interval(299, 1300)],
    )
    assert decisions["a"].kind is Settlement.ADOPT
    assert decisions["a"].scan_id == "mine"


@settings(max_examples=300, deadline=None)
@given(
    sends=st.lists(st.floats(0, 30), min_size=1, max_size=4),
    registered=st.lists(st.booleans(), min_size=4, max_size=4),
    # Other runs' POSTs: (sent, how long its window runs, registered a scan?, answered yet?).
    others=st.lists(
        st.tuples(st.floats(-20, 40), st.floats(0.5, 400), st.booleans(), st.booleans()),
        max_size=5,
    ),
    read_delay=st.floats(0, 600),
    wait=st.booleans(),
)
def test_a_scan_in_another_runs_unanswered_window_is_never_adopted(
    sends: list[float],
    registered: list[bool],
    others: list[tuple[float, float, bool, bool]],
    read_delay: float,
    wait: bool,
) -> None:
    """Other runs on the journal send throughout; each of their scans is known once answered,
    and until then only its POST's window is. No item adopts a scan dated in such a window
    (nor another's scan at all), and no item that registered a scan is resent."""
    died = max(sends) + 2.0
    lag = 5.0
    read_at = died + 1.0 + lag + read_delay  # every in-doubt window has closed
    windows: dict[str, Interval | None] = {
        f"item{i}": Interval(float(int(at)), float(int(died)) + 1.0) for i, at in enumerate(sends)
    }
    listed = [ListedScan(f"scan{i}", float(int(at))) for i, at in enumerate(sends) if registered[i]]
    known: set[str] = set()
    foreign: list[Interval | None] = []
    for j, (sent, span, made, answered) in enumerate(others):
        if made and sent <= read_at:
            listed.append(ListedScan(f"theirs{j}", float(int(sent))))
        if made and answered:
            known.add(f"theirs{j}")  # journaled with its answer
        else:
            foreign.append(Interval(sent, sent + span))  # still "sending"
    decisions = decide_settlement(
        windows,
        listed,
        known_ids=known,
        zone=UTC_ZONE,
        read_at=read_at,
        lag=lag,
        foreign_windows=foreign,
        wait_for_foreign=wait,
    )
    dates = {s.scan_id: UTC_ZONE.service_time(s.naive) for s in listed}
    for key, decision in decisions.items():
        event(decision.kind.value)
        i = int(key.removeprefix("item"))
        if decision.kind is Settlement.ADOPT:
            assert decision.scan_id == f"scan{i}", "adopted another's scan"
            date = dates[decision.scan_id]
            assert not any(w is not None and date.overlaps(w) for w in foreign)
        if decision.kind is Settlement.RESEND:
            assert not registered[i], "an item that registered a scan would be paid twice"
        if decision.kind is Settlement.WAIT:
            assert wait, "the last read waits for nothing"
            assert decision.wait_until == read_at + lag
