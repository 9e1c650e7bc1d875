"""Durable batches: a re-run after a crash pays for nothing twice and loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from imagetwin_async import (
    AmbiguousSubmission,
    ImagetwinClient,
    JournalError,
    JournalLocked,
    RateLimit,
    SQLiteJournal,
)
from imagetwin_async._journal import JournalScanIds
from imagetwin_async.emulator import Emulator, ThreadedEmulator

from ._files import write_pdf
from ._kill_harness import billed_per_content, kill, kill_rounds, start_worker, unique_documents

Factory = Callable[..., Awaitable[Emulator]]
ROOT = Path(__file__).resolve().parent.parent


def client_for(emu: Emulator) -> ImagetwinClient:
    return ImagetwinClient(
        emu.api_key,
        base_url=emu.url,
        scan_limit=RateLimit(20, per=1.0),
        result_limit=RateLimit(60, per=1.0),
        poll_interval=0.02,
        max_poll_interval=0.2,
        backoff_base=0.01,
        backoff_cap=0.05,
    )


def documents(tmp_path: Path, n: int) -> list[Path]:
    folder = tmp_path / "docs"
    folder.mkdir(exist_ok=True)
    return [write_pdf(folder / f"paper{i}.pdf", pages=1 + i) for i in range(n)]


def requests(emu: Emulator, method: str) -> int:
    return sum(1 for r in emu.requests if r.method == method and "/v1/" in r.path)


@pytest.fixture
async def emulator(imagetwin_emulator_factory: Factory) -> Emulator:
    # Real time (speed 1) with short scans: scan-overview dates are wall-clock dates, which
    # the journal compares with its own wall-clock records.
    return await imagetwin_emulator_factory(
        speed=1.0, processing_time=0.2, rate_limits={"scan": (1000, 60.0), "result": (1000, 60.0)}
    )


async def test_a_finished_batch_reruns_from_the_journal_without_a_request(
    emulator: Emulator, tmp_path: Path
) -> None:
    paths = documents(tmp_path, 4)
    journal = tmp_path / "batch.journal"
    async with client_for(emulator) as client:
        first = await client.submit_and_wait(paths, journal=journal)
        before = len(emulator.requests)
        again = await client.submit_and_wait(paths, journal=journal)
    assert all(o.ok for o in first)
    assert [o.result for o in again] == [o.result for o in first]
    assert {o.note for o in again} == {"from the journal"}
    assert len(emulator.requests) == before  # not one request


async def test_an_interrupted_batch_resumes_without_paying_twice(
    emulator: Emulator, tmp_path: Path
) -> None:
    paths = documents(tmp_path, 8)
    journal = tmp_path / "batch.journal"
    async with client_for(emulator) as client:
        outcomes_so_far = client.iter_outcomes(paths, journal=journal, submit_concurrency=1)
        async with contextlib.aclosing(outcomes_so_far) as outcomes:
            async for _ in outcomes:
                break  # interrupted after the first outcome
    async with client_for(emulator) as client:
        outcomes = await client.submit_and_wait(paths, journal=journal)
    assert all(o.ok for o in outcomes)
    assert set(billed_per_content(emulator).values()) == {1}
    assert len(billed_per_content(emulator)) == 8


async def test_a_changed_file_is_a_new_item_and_copies_are_separate_items(
    emulator: Emulator, tmp_path: Path
) -> None:
    paths = documents(tmp_path, 3)
    batch = [*paths, paths[0]]  # the same content twice: two scans, as asked
    journal = tmp_path / "batch.journal"
    async with client_for(emulator) as client:
        await client.submit_and_wait(batch, journal=journal)
        assert emulator.counters.scans_billed == 4
        write_pdf(paths[1], pages=9)  # changed content
        outcomes = await client.submit_and_wait(batch, journal=journal)
    assert all(o.ok for o in outcomes)
    assert emulator.counters.scans_billed == 5


# The emulator registers a scan on receipt: settling need not wait long for the overview.
SETTLE = 0.5


async def test_a_lost_answer_is_adopted_from_scan_overview_in_the_same_run(
    emulator: Emulator, tmp_path: Path
) -> None:
    paths = documents(tmp_path, 3)
    journal = tmp_path / "batch.journal"
    emulator.inject_fault("drop-after", endpoint="scan")  # billed, then no answer
    async with client_for(emulator) as client:
        first = await client.submit_and_wait(
            paths, journal=journal, submit_concurrency=1, settle_delay=SETTLE
        )
        assert all(o.ok for o in first)
        adopted = [o for o in first if o.note and "adopted" in o.note]
        assert len(adopted) == 1
        assert emulator.counters.scans_billed == 3  # the lost one was adopted, not paid again
        second = await client.submit_and_wait(paths, journal=journal, settle_delay=SETTLE)
    assert [o.result for o in second] == [o.result for o in first]
    assert emulator.counters.scans_billed == 3


async def test_two_lost_answers_in_a_row_are_told_apart_and_both_adopted(
    emulator: Emulator, tmp_path: Path
) -> None:
    # scan-overview dates in whole seconds and names no file: POSTs sent within one second
    # of a lost one would be indistinguishable, so the next POST keeps its distance.
    paths = documents(tmp_path, 4)
    emulator.scan_date_zone = dt.timezone(dt.timedelta(hours=-3))
    journal = tmp_path / "batch.journal"
    async with client_for(emulator) as client:
        await client.submit_and_wait(paths[:1], journal=journal, settle_delay=SETTLE)
        emulator.inject_fault("drop-after", endpoint="scan", times=2)
        outcomes = await client.submit_and_wait(paths, journal=journal, settle_delay=SETTLE)
    assert all(o.ok for o in outcomes)
    assert sum(1 for o in outcomes if o.note and "adopted" in o.note) == 2
    assert set(billed_per_content(emulator).values()) == {1}


async def test_a_post_that_never_arrived_is_sent_again_once_the_overview_proves_it(
    emulator: Emulator, tmp_path: Path
) -> None:
    paths = documents(tmp_path, 2)
    journal = tmp_path / "batch.journal"
    emulator.inject_fault("drop-before", endpoint="scan")  # reset on receipt: no scan
    async with client_for(emulator) as client:
        first = await client.submit_and_wait(
            paths, journal=journal, submit_concurrency=1, settle_delay=SETTLE
        )
    assert all(o.ok for o in first)
    assert emulator.counters.scans_billed == 2
    assert len(billed_per_content(emulator)) == 2
    resent = [o.note for o in first if o.note and o.note.startswith("sent again")]
    assert len(resent) == 1  # the outcome says how it was decided
    assert "lists no scan from its lost POST" in resent[0]


async def test_a_resent_item_whose_answer_is_lost_again_is_settled_again(
    emulator: Emulator, tmp_path: Path
) -> None:
    paths = documents(tmp_path, 2)
    journal = tmp_path / "b.journal"
    async with client_for(emulator) as client:
        # A first scan calibrates scan-overview's zone; then the second item's POST is lost
        # twice (reset on receipt: no scan), and settling must prove it each time.
        await client.submit_and_wait(paths[:1], journal=journal, settle_delay=SETTLE)
        emulator.inject_fault("drop-before", endpoint="scan", times=2)
        outcomes = await asyncio.wait_for(
            client.submit_and_wait(paths, journal=journal, settle_delay=SETTLE), timeout=60
        )
    assert all(o.ok for o in outcomes)
    assert sorted(billed_per_content(emulator).values()) == [1, 1]
    assert requests(emulator, "POST") == 4  # 1 + the lost one twice + its resend


async def test_a_404_for_a_scan_the_server_started_is_asked_again_on_a_re_run(
    emulator: Emulator, tmp_path: Path
) -> None:
    """The adversary is a lagging replica (or a lying proxy): it answers 404 for a scan the
    service just started and billed. That item fails this run, but the journal keeps the
    scan, so the re-run reads its result instead of returning the 404 "from the journal"
    for good (a paid result lost)."""
    paths = documents(tmp_path, 2)
    journal = tmp_path / "batch.journal"
    emulator.inject_fault("404", endpoint="result")
    async with client_for(emulator) as client:
        first = await client.submit_and_wait(paths, journal=journal)
    assert sorted(type(o.error).__name__ for o in first) == ["NoneType", "ScanNotFound"]
    async with client_for(emulator) as client:
        again = await client.submit_and_wait(paths, journal=journal)
    assert all(o.ok for o in again)
    assert [o.scan_id for o in again] == [o.scan_id for o in first]
    assert emulator.counters.scans_billed == 2  # waited for again, never sent again


@pytest.mark.parametrize("in_doubt", [False, True])
async def test_a_journal_dated_years_ahead_by_a_lying_clock_does_not_stall_the_next_run(
    emulator: Emulator, tmp_path: Path, in_doubt: bool
) -> None:
    """The adversary is a server whose clock lied on an earlier run (a Date header ten years
    ahead): the journal's times, in the service's time, lie with it. Seeded as dated, the
    scan limiter held every slot for ten years and the next run never sent a thing."""
    paths = documents(tmp_path, 3)
    journal = tmp_path / "batch.journal"
    async with client_for(emulator) as client:
        await client.submit_and_wait(paths[:1], journal=journal, settle_delay=SETTLE)
    future = time.time() + 10 * 365 * 86400
    db = sqlite3.connect(journal)
    db.execute("UPDATE items SET sent_at = ?, until = ?, answered_at = ?", (future,) * 3)
    columns = [d[0] for d in db.execute("SELECT * FROM items").description]
    row = dict(zip(columns, db.execute("SELECT * FROM items").fetchone(), strict=True))
    for k in range(25):  # a whole window of answered scans, and maybe one in doubt
        doubt = in_doubt and k == 0
        fake = {**row, "key": f"earlier{k}", "state": "sending" if doubt else "done"}
        fake["scan_id"] = None if doubt else row["scan_id"]
        marks = ", ".join("?" * len(columns))
        insert = f"INSERT INTO items ({', '.join(columns)}) VALUES ({marks})"
        db.execute(insert, list(fake.values()))
    db.commit()
    db.close()
    async with client_for(emulator) as client:
        outcomes = await asyncio.wait_for(
            client.submit_and_wait(paths, journal=journal, settle_delay=SETTLE), timeout=20
        )
    assert all(o.ok for o in outcomes)
    assert set(billed_per_content(emulator).values()) == {1}


async def test_a_lost_post_never_adopts_the_scan_of_a_web_service_on_the_same_key(
    emulator: Emulator, tmp_path: Path
) -> None:
    """The adversary is a neighbour: a web service scanning with the same key while the
    batch runs. The batch's POST is lost before it registers, the neighbour's scan lands in
    that second, and scan-overview cannot tell them apart. The neighbour's later scans prove
    it is there, so its scan is not adopted (before: the item came back "ok" with the result
    of someone else's paper, and its own paper was never scanned)."""
    paths = documents(tmp_path, 2)
    theirs = [write_pdf(tmp_path / f"web{i}.pdf", pages=9 + i) for i in range(2)]
    journal = tmp_path / "batch.journal"
    async with client_for(emulator) as batch, client_for(emulator) as web:
        await batch.submit_and_wait(paths[:1], journal=journal, settle_delay=SETTLE)  # the zone
        posts = requests(emulator, "POST")
        emulator.inject_fault("drop-before", endpoint="scan")  # the batch's next POST

        async def web_service() -> list[str]:
            while requests(emulator, "POST") == posts:  # right after the batch's lost POST
                await asyncio.sleep(0.002)
            first = await web.scan(theirs[0])
            await asyncio.sleep(3.0)
            return [first.scan_id, (await web.scan(theirs[1])).scan_id]

        outcomes, web_ids = await asyncio.gather(
            batch.submit_and_wait(paths[1:], journal=journal, settle_delay=4.0), web_service()
        )
    (outcome,) = outcomes
    assert outcome.scan_id not in web_ids
    assert isinstance(outcome.error, AmbiguousSubmission)
    assert "another client scans with this key" in str(outcome.error)
    assert outcome.error.candidates == (web_ids[0],)


@pytest.mark.parametrize(("policy", "billed"), [("report", 3), ("resubmit", 4)])
async def test_the_ambiguous_policy_is_the_callers_choice(
    emulator: Emulator, tmp_path: Path, policy: str, billed: int
) -> None:
    paths = documents(tmp_path, 3)
    journal = tmp_path / "batch.journal"
    emulator.inject_fault("drop-after", endpoint="scan")
    async with client_for(emulator) as client:
        await client.submit_and_wait(
            paths,
            journal=journal,
            submit_concurrency=1,
            ambiguous=policy,  # type: ignore[arg-type]
        )
        second = await client.submit_and_wait(
            paths,
            journal=journal,
            ambiguous=policy,  # type: ignore[arg-type]
        )
    ambiguous = [o for o in second if isinstance(o.error, AmbiguousSubmission)]
    assert len(ambiguous) == (1 if policy == "report" else 0)
    if ambiguous:
        assert "resubmit" in str(ambiguous[0].error)
    assert emulator.counters.scans_billed == billed


async def test_two_runs_of_one_journal_cannot_overlap(emulator: Emulator, tmp_path: Path) -> None:
    journal_path = tmp_path / "batch.journal"
    async with await SQLiteJournal.open(journal_path), client_for(emulator) as client:
        with pytest.raises(JournalLocked, match="in use by another process"):
            await client.submit_and_wait(documents(tmp_path, 1), journal=journal_path)
    assert emulator.counters.scans_billed == 0


@pytest.mark.parametrize(
    "content", [b"not a database at all" * 100, b"SQLite format 3\x00" + b"\x13" * 200]
)
async def test_a_corrupted_journal_is_a_clear_error(
    emulator: Emulator, tmp_path: Path, content: bytes
) -> None:
    journal = tmp_path / "batch.journal"
    journal.write_bytes(content)
    async with client_for(emulator) as client:
        with pytest.raises(JournalError, match="journal"):
            await client.submit_and_wait(documents(tmp_path, 1), journal=journal)
    assert journal.read_bytes() == content  # untouched
    assert emulator.counters.scans_billed == 0


async def test_a_foreign_sqlite_file_is_refused(emulator: Emulator, tmp_path: Path) -> None:
    journal = tmp_path / "app.db"
    db = sqlite3.connect(journal)
    db.execute("CREATE TABLE users (id INTEGER)")
    db.commit()
    db.close()
    async with client_for(emulator) as client:
        with pytest.raises(JournalError, match="not an imagetwin journal"):
            await client.submit_and_wait(documents(tmp_path, 1), journal=journal)


async def test_a_journal_filled_against_an_emulator_never_answers_for_another_service(
    imagetwin_emulator_factory: Factory, emulator: Emulator, tmp_path: Path
) -> None:
    """The adversary is a user's own journal: filled in a test run against an emulator, then
    reused against the real API. Its results were never the API's; handing them back as
    "from the journal" would pass papers nobody scanned."""
    paths = documents(tmp_path, 2)
    journal = tmp_path / "batch.journal"
    async with client_for(emulator) as client:
        assert all(o.ok for o in await client.submit_and_wait(paths, journal=journal))
    before = len(emulator.requests)
    # The real API (nothing may reach it: the journal is refused before any request).
    async with ImagetwinClient("live-key", base_url="https://api.imagetwin.ai/v1") as client:
        with pytest.raises(JournalError, match=r"holds the scans of http://localhost:\*/v1"):
            await client.submit_and_wait(paths, journal=journal)
    # Another emulator on this machine (the CLI's --emulator takes a new port each run) is
    # as made up as the first: its journal goes on serving.
    other = await imagetwin_emulator_factory(speed=1.0, processing_time=0.2, seed=5)
    async with ImagetwinClient(**{**other.client_kwargs(), "base_url": other.url + "/"}) as c:
        again = await c.submit_and_wait(paths, journal=journal)
    assert {o.note for o in again} == {"from the journal"}
    assert len(emulator.requests) == before
    assert requests(other, "POST") == 0  # (one overview read dates its clock)


# ---- the kill test --------------------------------------------------------------------

# Kills per (skew, fault) case: 5 x 12 cases = 60 in the default run; KILL_TEST_KILLS=25 for
# the measurement in the README.
KILLS_PER_CASE = int(os.environ.get("KILL_TEST_KILLS", "5"))
SKEWS = [-600.0, -45.0, 35.0, 60.0, 600.0]
# scanDate in zones other than UTC (the reference shows no zone): calibration must find them.
ZONES = [dt.timezone(dt.timedelta(hours=h, minutes=m)) for h, m in ((5, 45), (-3, 0), (1, 0))]


@pytest.mark.slow
@pytest.mark.parametrize("drops", [False, True], ids=["no-faults", "5%-drop-after-register"])
@pytest.mark.parametrize(
    ("skew", "jump"),
    [*((s, 0.0) for s in SKEWS), (-30.0, 420.0)],
    ids=[*(f"clock{s:+g}s" for s in SKEWS), "clock-jumps-7min-mid-run"],
)
def test_sigkill_anywhere_never_costs_a_second_scan(
    tmp_path: Path, skew: float, jump: float, drops: bool
) -> None:
    """SIGKILL a journaled batch at random points (some while a scan's answer is held back,
    i.e. between the POST reaching the server and the journal hearing of it), restart it
    each time, and count the registrations of every content on the emulator's record.

    The worker's wall clock is off by ``skew`` (and jumps by ``jump`` mid-run); scanDate is
    written in a zone other than UTC; with ``drops`` 5% of scan POSTs are registered and
    billed and then lose their answer. The rate limits are the real shape (20 scans and 60
    reads a second at this speed), so a resumed run that forgot its predecessor's spending
    would draw 429s. Rounds of fresh documents share one journal until enough runs were
    killed.
    """
    seed = int(os.environ.get("KILL_TEST_SEED", "20261129"))
    rng = random.Random(f"{seed}{skew}{jump}{drops}")
    with ThreadedEmulator(
        speed=1.0,
        processing_time=1.0,
        rate_limits={"scan": (20, 1.0), "result": (60, 1.0)},
        scan_date_zone=rng.choice(ZONES),
    ) as threaded:
        run = kill_rounds(
            threaded,
            tmp_path / "sweep.journal",
            tmp_path / "docs",
            kills=KILLS_PER_CASE,
            rng=rng,
            skew=skew,
            jump=jump,
            drops=drops,
        )
    summary = run.summary(f"kill test clock{skew:+g}s jump{jump:+g}s drops={drops}")
    print(summary)
    if log := os.environ.get("KILL_TEST_LOG"):
        with open(log, "a") as out:
            out.write(summary + "\n")
    run.assert_never_paid_twice(KILLS_PER_CASE)
    assert run.after_kill_429s == [], "a resumed run spent a window its predecessor had filled"


@pytest.mark.slow
def test_a_run_resumed_right_after_a_kill_draws_no_429(tmp_path: Path) -> None:
    """The killed run spent a whole window of scans and reads a moment ago; the re-run, a
    new process with fresh limiters, must count that spending (from the journal) or the
    server answers 429."""
    journal = tmp_path / "sweep.journal"
    files = unique_documents(tmp_path / "docs", "r0-", 30)
    per = 6.0  # 20 scans and 60 reads in 6 s: wider than a process's start-up
    with ThreadedEmulator(
        speed=1.0,
        processing_time=1.0,
        rate_limits={"scan": (20, per), "result": (60, per)},
    ) as threaded:
        worker = start_worker(threaded, journal, files, per=per)
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 30
        while threaded.call(lambda e: e.counters.scans_billed) < 20:  # a window's worth
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.5)  # polls: reads spend their budget too
        kill(worker)
        first = threaded.call(lambda e: len(e.requests))
        rerun = start_worker(threaded, journal, files, per=per)
        out, _ = rerun.communicate(timeout=180)
        answers = threaded.call(lambda e: list(e.requests)[first:])
        billed = billed_per_content(threaded.emulator)
    assert rerun.returncode == 0
    outcomes = json.loads(out.strip().splitlines()[-1])
    assert all(o["ok"] for o in outcomes), outcomes
    assert max(billed.values()) == 1
    rejected = [(r.method, r.path) for r in answers if r.status == 429]
    assert rejected == [], f"the resumed run drew {len(rejected)} 429s"


class FlakyJournal(SQLiteJournal):
    """A journal whose "started" writes fail, as on a full disk."""

    async def started(
        self, key: str, scan_id: str, note: str | None = None, answered_at: float | None = None
    ) -> None:
        raise JournalError("database or disk is full")


async def test_a_failing_journal_write_never_loses_the_scan_or_hangs(
    emulator: Emulator, tmp_path: Path
) -> None:
    path = tmp_path / "batch.journal"
    flaky = await FlakyJournal.open(path)
    async with client_for(emulator) as client:
        outcomes = await asyncio.wait_for(
            client.submit_and_wait(documents(tmp_path, 2), journal=flaky), timeout=30
        )
    await flaky.close()
    assert all(o.ok for o in outcomes)
    assert emulator.counters.scans_billed == 2
    # The journal still says "sending": a re-run settles those through scan-overview.
    async with client_for(emulator) as client:
        again = await client.submit_and_wait(documents(tmp_path, 2), journal=path)
    assert all(o.ok for o in again)
    assert emulator.counters.scans_billed == 2


# ---- the meta store and the schema migration ----------------------------------------------


async def test_meta_values_survive_a_reopen_and_are_replaced_by_key(tmp_path: Path) -> None:
    path = tmp_path / "batch.journal"
    async with await SQLiteJournal.open(path) as journal:
        assert await journal.load_meta("clock") is None
        await journal.store_meta("clock", "one")
        await journal.store_meta("clock", "two")
        await journal.store_meta("durations", "{}")
    async with await SQLiteJournal.open(path) as journal:
        assert await journal.load_meta("clock") == "two"
        assert await journal.load_meta("durations") == "{}"


async def test_scan_ids_lists_every_scan_the_journal_holds(tmp_path: Path) -> None:
    # The optional JournalScanIds read settling repeats before each decision (for shared
    # journals; here it only agrees with entries()).
    async with await SQLiteJournal.open(tmp_path / "batch.journal") as journal:
        assert isinstance(journal, JournalScanIds)
        await journal.sending("a", "a.pdf", 1.0)
        await journal.sending("b", "b.pdf", 2.0)
        await journal.started("b", "scan-b")
        assert await journal.scan_ids() == {"scan-b"}


async def test_a_version_1_journal_is_migrated_keeping_its_items(tmp_path: Path) -> None:
    path = tmp_path / "old.journal"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA application_id = {0x4954_4A31}")  # "ITJ1": ours
    db.execute("PRAGMA user_version = 1")
    db.execute(
        "CREATE TABLE items (key TEXT PRIMARY KEY, label TEXT NOT NULL, state TEXT NOT NULL, "
        "sent_at REAL NOT NULL, scan_id TEXT, result TEXT, error TEXT, note TEXT, "
        "updated_at REAL NOT NULL)"
    )
    db.execute(
        "INSERT INTO items VALUES ('k', 'a.pdf', 'started', 1.0, 'id-1', NULL, NULL, NULL, 1)"
    )
    db.commit()
    db.close()
    async with await SQLiteJournal.open(path) as journal:
        entries = await journal.entries()
        await journal.store_meta("clock", "x")
        assert await journal.load_meta("clock") == "x"
    assert entries["k"].scan_id == "id-1"
    assert entries["k"].state == "started"
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA user_version").fetchone()[0] == 2
    check.close()
