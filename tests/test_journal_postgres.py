"""The PostgreSQL journal: a batch pod rescheduled onto a fresh disk, and pods sharing a journal.

Needs a PostgreSQL server (``IMAGETWIN_POSTGRES_URL``, default
``postgresql://127.0.0.1:5432/test``, trust auth). Each test works in its own schema, dropped
after, so parallel runs never meet. Without a server the tests skip, unless ``CI`` is set:
there they must run, so they fail instead.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import json
import os
import random
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from imagetwin_async import ImagetwinClient, JournalError, JournalLocked, RateLimit
from imagetwin_async._journal_postgres import PostgresJournal
from imagetwin_async._models import ScanOverview, ScanSummary
from imagetwin_async._recovery import ZONE_KEY, Recovery
from imagetwin_async._servicetime import ServiceClock
from imagetwin_async._settlement import Settlement
from imagetwin_async.emulator import Emulator, ThreadedEmulator

from ._files import write_pdf
from ._kill_harness import billed_per_content, kill_rounds
from ._services import require_postgres

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parent.parent
Factory = Callable[..., Awaitable[Emulator]]


@pytest.fixture(scope="module")
def server() -> str:
    return require_postgres()


@pytest.fixture
def url(server: str) -> Iterator[str]:
    """A journal URL whose tables live in a schema of this test's own."""
    schema = f"imagetwin_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
    yield f"{server}?options=-csearch_path%3D{schema}#sweep"
    with psycopg.connect(server, autocommit=True) as db:
        db.execute(f"DROP SCHEMA {schema} CASCADE")


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


def documents(folder: Path, n: int, tag: str = "") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = write_pdf(folder / f"{tag}paper{i}.pdf", pages=1 + i % 5)
        with path.open("ab") as out:  # distinct content for every (tag, i)
            out.write(f"% {tag} item {i}\n".encode())
        paths.append(path)
    return paths


@pytest.fixture
async def emulator(imagetwin_emulator_factory: Factory) -> Emulator:
    return await imagetwin_emulator_factory(
        speed=1.0, processing_time=0.2, rate_limits={"scan": (1000, 60.0), "result": (1000, 60.0)}
    )


async def test_a_pod_rescheduled_onto_a_fresh_disk_reruns_from_the_server(
    emulator: Emulator, url: str, tmp_path: Path
) -> None:
    paths = documents(tmp_path / "docs", 4)
    async with client_for(emulator) as client:
        first = await client.submit_and_wait(paths, journal=url)
        before = len(emulator.requests)
        again = await client.submit_and_wait(paths, journal=url)
    assert all(o.ok for o in first)
    assert [o.result for o in again] == [o.result for o in first]
    assert {o.note for o in again} == {"from the journal"}
    assert len(emulator.requests) == before  # not one request


async def test_the_intent_is_on_the_server_before_the_post_leaves(
    emulator: Emulator, url: str, tmp_path: Path
) -> None:
    seen: list[tuple[str | None, int]] = []
    journal = await PostgresJournal.open(url)
    original = journal.sending

    async def sending(key: str, label: str, sent_at: float, until: float | None = None) -> None:
        await original(key, label, sent_at, until)
        # What another connection (a pod started right now) reads, and the POSTs so far.
        async with await psycopg.AsyncConnection.connect(url.partition("#")[0]) as db:
            cursor = await db.execute("SELECT state FROM imagetwin_journal_items")
            row = await cursor.fetchone()
        posts = sum(1 for r in emulator.requests if r.method == "POST" and "/v1/" in r.path)
        seen.append((row[0] if row else None, posts))

    journal.sending = sending  # type: ignore[method-assign]
    async with client_for(emulator) as client:
        outcomes = await client.submit_and_wait(documents(tmp_path / "d", 1), journal=journal)
    await journal.close()
    assert outcomes[0].ok
    assert seen == [("sending", 0)]


async def test_a_live_claim_is_never_taken_over(url: str) -> None:
    """Two pods on one journal: what one is sending, the other neither sees nor sends."""
    pod_a = await PostgresJournal.open(url)
    pod_b = await PostgresJournal.open(url)
    try:
        await pod_a.sending("item-1", "paper1.pdf", 1.0)
        assert "item-1" not in await pod_b.entries()
        with pytest.raises(JournalLocked, match="another run"):
            await pod_b.sending("item-1", "paper1.pdf", 2.0)
        with pytest.raises(JournalError):
            await pod_b.forget("item-1")
        await pod_a.started("item-1", "scan-a")
        # Started: B may see it (and wait for that scan), never send it.
        assert (await pod_b.entries())["item-1"].scan_id == "scan-a"
        with pytest.raises(JournalLocked):
            await pod_b.sending("item-1", "paper1.pdf", 3.0)
    finally:
        await pod_a.close()
        await pod_b.close()


async def test_a_dead_pods_claims_pass_to_the_next_run_at_once(url: str) -> None:
    dead = await PostgresJournal.open(url)
    await dead.sending("item-1", "paper1.pdf", 1.0)
    await dead.close()  # its session ends, as when the pod is killed
    heir = await PostgresJournal.open(url)
    try:
        async with asyncio.timeout(5.0):  # the backend exits a moment after the socket closes
            while "item-1" not in (entries := await heir.entries()):
                await asyncio.sleep(0.01)
        assert entries["item-1"].state == "sending"  # to settle through scan-overview
        await heir.forget("item-1")  # settled: never arrived
        await heir.sending("item-1", "paper1.pdf", 2.0)
    finally:
        await heir.close()


async def test_a_dead_pods_ambiguous_items_wait_while_another_pod_is_sending(url: str) -> None:
    """Settling reads scan-overview; another pod's unrecorded POSTs would confuse it."""
    dead = await PostgresJournal.open(url)
    await dead.sending("lost", "lost.pdf", 1.0)
    await dead.close()
    busy = await PostgresJournal.open(url)
    await busy.sending("busy", "busy.pdf", 2.0)
    heir = await PostgresJournal.open(url)
    try:
        assert set(await heir.entries()) == set()
        with pytest.raises(JournalLocked):
            await heir.sending("lost", "lost.pdf", 3.0)  # never resent blindly
        await busy.close()
        # Both dead now, ours to settle, once the server has seen busy's session end (its
        # backend exits a moment after the socket closes).
        async with asyncio.timeout(5.0):
            while set(await heir.entries()) != {"lost", "busy"}:
                await asyncio.sleep(0.01)
    finally:
        await heir.close()


async def test_pods_starting_together_never_split_a_dead_runs_items(url: str) -> None:
    """Four pods start at once on a journal a dead run left 30 items "sending" in: each such
    item may have started a scan, and whoever takes it settles it through scan-overview. Split
    between two pods, each would settle its part blind to the other's (both adopting one scan,
    or one resending into a window holding the other's POST): they go whole to one pod."""
    for round_ in range(5):
        dead = await PostgresJournal.open(url)
        keys = {f"r{round_}-item-{i}" for i in range(30)}
        for key in sorted(keys):
            await dead.sending(key, f"{key}.pdf", 1.0)
        await dead.close()  # SIGKILLed: its session ends, its claims lapse
        pods = [await PostgresJournal.open(url) for _ in range(4)]
        try:
            async with asyncio.timeout(5.0):  # the backend exits a moment after the socket
                while True:
                    seen = await asyncio.gather(*(pod.entries() for pod in pods))
                    taken = [keys & set(found) for found in seen]
                    if any(taken):
                        break
                    await asyncio.sleep(0.01)
            assert sorted(len(t) for t in taken) == [0, 0, 0, 30]
            # Asked again, at once, the others still find them held by a live run.
            again = await asyncio.gather(*(pod.entries() for pod in pods))
            assert [len(keys & set(found)) for found in again] == [len(t) for t in taken]
        finally:
            for pod in pods:
                await pod.close()


async def test_pods_sweeping_overlapping_shards_pay_for_each_content_once(
    emulator: Emulator, url: str, tmp_path: Path
) -> None:
    """Three pods run overlapping shards of one batch against one journal at the same time."""
    paths = documents(tmp_path / "docs", 12)
    shards = [paths[0:6], paths[3:9], paths[6:12] + paths[0:2]]
    async with client_for(emulator) as client:
        runs = await asyncio.gather(
            *(client.submit_and_wait(shard, journal=url, submit_concurrency=2) for shard in shards)
        )
        # Items another pod held came back JournalLocked; a re-run of every shard collects them.
        again = await asyncio.gather(*(client.submit_and_wait(s, journal=url) for s in shards))
    errors = {type(o.error).__name__ for run in runs for o in run if not o.ok}
    assert errors <= {"JournalLocked"}
    assert all(o.ok for run in again for o in run)
    billed = billed_per_content(emulator)
    assert len(billed) == 12
    assert max(billed.values()) == 1, "two pods paid for one content"


async def test_meta_values_are_kept_per_journal(url: str) -> None:
    journal = await PostgresJournal.open(url)
    other = await PostgresJournal.open(url, name="other")
    try:
        assert await journal.load_meta("model") is None
        await journal.store_meta("model", '{"mu": 3.1}')
        await journal.store_meta("model", '{"mu": 3.2}')
        assert await journal.load_meta("model") == '{"mu": 3.2}'
        assert await other.load_meta("model") is None
    finally:
        await journal.close()
        await other.close()


async def test_an_unreachable_server_is_a_journal_error_before_anything_is_sent(
    emulator: Emulator, tmp_path: Path
) -> None:
    url = "postgresql://batch:s3cret-pw@127.0.0.1:1/test#sweep"  # nothing listens on port 1
    async with client_for(emulator) as client:
        with pytest.raises(JournalError) as caught:
            await client.submit_and_wait(documents(tmp_path / "d", 1), journal=url)
    assert "s3cret-pw" not in str(caught.value)
    assert caught.value.__cause__ is None or "s3cret-pw" not in str(caught.value.__cause__)
    assert emulator.counters.scans_billed == 0


async def test_tables_from_a_newer_version_are_refused(url: str) -> None:
    journal = await PostgresJournal.open(url)
    await journal.close()
    async with await psycopg.AsyncConnection.connect(url.partition("#")[0], autocommit=True) as db:
        await db.execute("UPDATE imagetwin_journal_meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(JournalError, match="newer"):
        await PostgresJournal.open(url)


async def test_scan_ids_are_every_runs_and_read_without_taking_anything_over(url: str) -> None:
    dead = await PostgresJournal.open(url)
    await dead.sending("lost", "lost.pdf", 1.0)
    await dead.close()
    busy = await PostgresJournal.open(url)
    reader = await PostgresJournal.open(url)
    try:
        await busy.sending("done", "done.pdf", 2.0)
        await busy.started("done", "scan-done")
        await busy.sending("sending", "sending.pdf", 3.0)  # no scan id yet
        assert await reader.scan_ids() == {"scan-done"}
        # Unlike entries(), nothing changed hands: the dead run's row is nobody's of the living.
        assert await owner_of(url, "lost") not in (None, busy._owner, reader._owner)
    finally:
        await busy.close()
        await reader.close()


async def owner_of(url: str, key: str) -> int | None:
    """The owner number on the journal's row for ``key`` (None: no such row)."""
    async with await psycopg.AsyncConnection.connect(url.partition("#")[0]) as db:
        cursor = await db.execute(
            "SELECT owner FROM imagetwin_journal_items WHERE key = %s", (key,)
        )
        row = await cursor.fetchone()
    return None if row is None or row[0] is None else int(row[0])


async def dated_recovery(
    journal: PostgresJournal,
    t0: float,
    read_overview: Callable[[dt.date, dt.date], Awaitable[ScanOverview]],
    now: list[float],
    sleep: Callable[[float], Awaitable[None]],
) -> Recovery:
    """A Recovery whose every clock is a parameter: service time ``t0`` at monotonic 0 (``now``
    is the monotonic clock, ``sleep`` advances it), scan-overview's dates read as UTC."""
    await journal.store_meta(ZONE_KEY, json.dumps({"lo": 0.0, "hi": 0.0}))
    clock = ServiceClock()
    clock.observe(0.0, 0.0, email.utils.formatdate(t0, usegmt=True))
    recovery = Recovery(
        journal,
        clock,
        read_overview,
        request_timeout=300.0,
        settle_delay=30.0,
        monotonic=lambda: now[0],
        sleep=sleep,
    )
    await recovery.calibrate()
    return recovery


async def test_a_scan_another_pod_records_while_settling_waits_is_never_adopted(url: str) -> None:
    """The adversary on a shared journal: a dead pod left "lost" in doubt; the heir takes it
    over and settles it, and while it waits for the window to close a live pod sends, is
    answered and records its scan, which scan-overview dates in the heir's first second: inside
    "lost"'s window. Judged by the heir's snapshot it was unclaimed, "lost"'s only candidate,
    and adopted: another item's result. Every clock here is a parameter; nothing sleeps."""
    t0 = 1_800_000_000.0  # service time at the heir's start
    dead = await PostgresJournal.open(url)
    await dead.sending("lost", "lost.pdf", t0 - 100.0, t0 + 200.0)
    await dead.close()
    heir = await PostgresJournal.open(url)
    pods: list[PostgresJournal] = []
    listed: list[ScanSummary] = []
    now = [0.0]  # the heir's monotonic clock, moved by its sleeps only

    async def read_overview(start: dt.date, end: dt.date) -> ScanOverview:
        return ScanOverview(start, end, tuple(listed))

    async def sleep(seconds: float) -> None:
        now[0] += seconds
        pod_b = await PostgresJournal.open(url)  # alive until the test ends
        pods.append(pod_b)
        await pod_b.sending("b-item", "b.pdf", t0 + 0.2, t0 + 300.0)
        await pod_b.started("b-item", "scan-of-pod-b", answered_at=t0 + 2.0)
        listed.append(
            ScanSummary("scan-of-pod-b", dt.datetime.fromtimestamp(t0, dt.UTC), api_scan=True)
        )

    try:
        async with asyncio.timeout(5.0):  # the dead backend exits a moment after the socket
            while "lost" not in (entries := await heir.entries()):
                await asyncio.sleep(0.01)
        recovery = await dated_recovery(heir, t0, read_overview, now, sleep)
        decisions = await recovery.settle(entries)
        assert len(pods) == 1 and recovery.waited == 31.0  # window end (t0 + 1) + settle_delay
        assert decisions["lost"].kind is not Settlement.ADOPT, decisions["lost"]
        # No scan but pod B's is listed, read after the window closed: proof it never arrived.
        assert decisions["lost"].kind is Settlement.RESEND
        after = await heir.entries()
        assert "lost" not in after
        assert after["b-item"].scan_id == "scan-of-pod-b"
    finally:
        for pod in pods:
            await pod.close()
        await heir.close()


async def test_in_flight_is_every_runs_sending_read_without_taking_anything_over(
    url: str,
) -> None:
    dead = await PostgresJournal.open(url)
    await dead.sending("lost", "lost.pdf", 1.0, 301.0)
    await dead.close()
    busy = await PostgresJournal.open(url)
    reader = await PostgresJournal.open(url)
    try:
        await busy.sending("done", "done.pdf", 2.0)
        await busy.started("done", "scan-done")
        await busy.sending("sending", "sending.pdf", 3.0, 303.0)  # no answer yet
        sending = await reader.in_flight()
        # Every "sending" row, the live pod's and the dead run's alike, with its window.
        assert set(sending) == {"lost", "sending"}
        assert (sending["sending"].sent_at, sending["sending"].until) == (3.0, 303.0)
        assert (sending["lost"].sent_at, sending["lost"].until) == (1.0, 301.0)
        # The dead run's answer will never come: settling must not wait for it.
        assert (sending["sending"].live, sending["lost"].live) == (True, False)
        # Unlike entries(), nothing changed hands: the dead run's row is nobody's of the living.
        assert await owner_of(url, "lost") not in (None, busy._owner, reader._owner)
    finally:
        await busy.close()
        await reader.close()


async def test_a_scan_another_pods_unanswered_post_made_is_never_adopted(url: str) -> None:
    """The adversary on a shared journal: this pod's POST for "mine" lost its answer; pod B's
    POST, sent a second later, registered its scan (listed, dated in "mine"'s window) while
    its answer is still on its way: its row is "sending" with no scan id, and nothing claims
    the scan. Settling "mine" late (as ``_run_late_settle`` does) took it as "mine"'s only
    candidate and adopted it: pod B's result. Now it waits for pod B's answer, which claims the
    scan during the second wait, and "mine", which made none, is sent again. Every clock here
    is a parameter; nothing sleeps."""
    t0 = 1_800_000_000.0  # service time at this run's start
    mine = await PostgresJournal.open(url)
    pod_b = await PostgresJournal.open(url)
    listed: list[ScanSummary] = []
    now = [0.0]  # this run's monotonic clock, moved by its sleeps only
    slept: list[float] = []

    async def read_overview(start: dt.date, end: dt.date) -> ScanOverview:
        return ScanOverview(start, end, tuple(listed))

    async def sleep(seconds: float) -> None:
        now[0] += seconds
        slept.append(seconds)
        if len(slept) == 2:  # while settling waits for pod B's answer, it comes
            await pod_b.started("b-item", "scan-of-pod-b", answered_at=t0 + 50.0)

    try:
        recovery = await dated_recovery(mine, t0, read_overview, now, sleep)
        now[0] = 10.0
        await mine.sending("mine", "mine.pdf", *recovery.send_times())  # [t0 + 10, t0 + 311]
        await pod_b.sending("b-item", "b.pdf", t0 + 11.0, t0 + 312.0)
        listed.append(
            ScanSummary(
                "scan-of-pod-b", dt.datetime.fromtimestamp(t0 + 12.0, dt.UTC), api_scan=True
            )
        )
        now[0] = 12.0
        recovery.lost("mine")  # its window: [t0 + 10, t0 + 13]
        decisions = await recovery.settle(await mine.entries())
        assert decisions["mine"].kind is not Settlement.ADOPT, decisions["mine"]
        assert slept == [31.0, 30.0]  # the window's end + settle_delay, then pod B's answer
        # With pod B's scan claimed, nothing listed is "mine"'s: proof, sent again.
        assert decisions["mine"].kind is Settlement.RESEND
        after = await pod_b.entries()
        assert "mine" not in after
        assert after["b-item"].scan_id == "scan-of-pod-b"
    finally:
        await pod_b.close()
        await mine.close()


# ---- the kill test, as for SQLite -----------------------------------------------------------


def test_sigkill_anywhere_never_costs_a_second_scan(url: str, tmp_path: Path) -> None:
    """The SQLite journal's kill test against PostgreSQL: a batch pod SIGKILLed at random
    points (every third run while a scan's answer is held back, so the kill lands between the
    POST and the journal hearing of it), restarted each time, until 20 runs were killed. The
    pod's clock is a minute ahead of the service's: settling works in the service's time
    whatever the host says."""
    rng = random.Random(int(os.environ.get("KILL_TEST_SEED", "20261201")))
    with ThreadedEmulator(
        speed=1.0,
        processing_time=1.0,
        rate_limits={"scan": (1000, 60.0), "result": (1000, 60.0)},
    ) as threaded:
        run = kill_rounds(threaded, url, tmp_path / "docs", kills=20, rng=rng, skew=60.0)
    print(run.summary("postgres kill test"))
    run.assert_never_paid_twice(20)
