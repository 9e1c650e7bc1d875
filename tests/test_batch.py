"""submit_and_wait and iter_outcomes against the emulator, a minute lasting one second."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from imagetwin_async import (
    AmbiguousSubmission,
    AuthenticationError,
    BatchProgress,
    ImagetwinClient,
    InvalidUpload,
    PollTimeout,
    ScanFailed,
    SQLiteJournal,
)
from imagetwin_async.emulator import Emulator, Outcome

from ._files import png_bytes, write_pdf

SPEED = 60.0  # an emulated minute lasts one real second
WINDOW = 60.0 / SPEED

Factory = Callable[..., Awaitable[Emulator]]


def fast_client(emu: Emulator, **options: Any) -> ImagetwinClient:
    """A client whose timings match the emulator's speed (``options`` override, as given)."""
    return ImagetwinClient(**{**emu.client_kwargs(), **options})


def documents(tmp_path: Path, n: int, prefix: str = "paper") -> list[Path]:
    return [write_pdf(tmp_path / f"{prefix}{i}.pdf", pages=1 + i % 4) for i in range(n)]


def scan_posts(emu: Emulator) -> list[Any]:
    return [r for r in emu.requests if r.method == "POST" and r.path.endswith("/scan")]


@pytest.fixture
async def emulator(imagetwin_emulator_factory: Factory) -> Emulator:
    return await imagetwin_emulator_factory(speed=SPEED, processing_time=20.0)


@pytest.mark.parametrize("algorithm", ["fixed", "sliding", "token_bucket"])
async def test_a_batch_draws_no_429_from_any_server_algorithm(
    imagetwin_emulator_factory: Factory, tmp_path: Path, algorithm: str
) -> None:
    emu = await imagetwin_emulator_factory(
        speed=SPEED, rate_limit_algorithm=algorithm, processing_time=10.0
    )
    paths = documents(tmp_path, 45)
    async with fast_client(emu) as client:
        outcomes = await client.submit_and_wait(paths)
    assert [o.source for o in outcomes] == paths  # input order
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    assert len({o.scan_id for o in outcomes}) == 45
    assert emu.counters.rate_limited == {}
    assert emu.counters.scans_billed == 45
    posts = sorted(r.time for r in scan_posts(emu))
    span = (posts[-1] - posts[0]) / SPEED  # real seconds
    assert span >= 2 * WINDOW * 0.99  # 45 scans need three windows: no bursting past 20
    assert span <= 2 * WINDOW * 1.25  # and no dawdling (generous: CI machines are busy)


async def test_mixed_outcomes_are_each_in_place(emulator: Emulator, tmp_path: Path) -> None:
    good = documents(tmp_path, 3)
    broken = write_pdf(tmp_path / "broken.pdf", pages=2)
    stuck = write_pdf(tmp_path / "stuck.pdf", pages=3)
    emulator.script(Outcome.failed(), file_name="broken.pdf")
    emulator.script(Outcome.never(), file_name="stuck.pdf")
    missing = tmp_path / "missing.pdf"
    image = tmp_path / "fig.png"
    image.write_bytes(png_bytes(1))
    batch = [good[0], broken, missing, stuck, [image], good[1], good[2]]
    async with fast_client(emulator) as client:
        outcomes = await client.submit_and_wait(batch, timeout=3.0)
    assert [o.source for o in outcomes] == batch
    ok = [o.ok for o in outcomes]
    assert ok == [True, False, False, False, True, True, True]
    assert isinstance(outcomes[1].error, ScanFailed)
    assert outcomes[1].scan_id is not None
    assert isinstance(outcomes[2].error, InvalidUpload)
    assert outcomes[2].scan_id is None
    assert isinstance(outcomes[3].error, PollTimeout)
    assert outcomes[3].scan_id is not None
    assert emulator.counters.scans_billed == 6  # nothing sent for the missing file


async def test_progress_is_reported_and_adds_up(emulator: Emulator, tmp_path: Path) -> None:
    seen: list[BatchProgress] = []
    paths = [*documents(tmp_path, 5), tmp_path / "nope.pdf"]
    async with fast_client(emulator) as client:
        await client.submit_and_wait(paths, progress=seen.append)
    assert seen[0] == BatchProgress(total=6)
    last = seen[-1]
    assert (last.submitted, last.running, last.finished, last.failed) == (5, 0, 5, 1)
    for before, after in itertools.pairwise(seen):
        assert after.submitted >= before.submitted
        assert after.done >= before.done


async def test_iter_outcomes_yields_as_they_complete(emulator: Emulator, tmp_path: Path) -> None:
    slow = write_pdf(tmp_path / "slow.pdf", pages=2)
    emulator.script(Outcome.finished(processing_time=40.0), file_name="slow.pdf")
    fast = documents(tmp_path, 3)
    async with fast_client(emulator) as client:
        order = [o.source async for o in client.iter_outcomes([slow, *fast])]
    assert order[-1] == slow
    assert sorted(map(str, order)) == sorted(map(str, [slow, *fast]))


async def test_leaving_iter_outcomes_early_cancels_the_rest(
    emulator: Emulator, tmp_path: Path
) -> None:
    paths = documents(tmp_path, 60)
    async with fast_client(emulator) as client:
        async with contextlib.aclosing(client.iter_outcomes(paths)) as outcomes:
            async for outcome in outcomes:
                assert outcome.ok
                break
        at_close = emulator.counters.scans_billed
        await asyncio.sleep(3 * WINDOW)
        assert client.scheduler.waiting == 0
    assert emulator.counters.scans_billed == at_close  # nothing sent once closed
    assert at_close < 60  # the rest were never sent


async def test_concurrent_batches_share_the_budget(
    imagetwin_emulator_factory: Factory, tmp_path: Path
) -> None:
    emu = await imagetwin_emulator_factory(speed=SPEED, rate_limit_algorithm="sliding")
    a = documents(tmp_path, 25, "a")
    b = documents(tmp_path, 25, "b")
    async with fast_client(emu) as client:
        first, second = await asyncio.gather(client.submit_and_wait(a), client.submit_and_wait(b))
    assert all(o.ok for o in [*first, *second])
    assert emu.counters.rate_limited == {}


async def test_a_refused_key_stops_the_batch_after_one_request(
    emulator: Emulator, tmp_path: Path
) -> None:
    paths = documents(tmp_path, 10)
    async with ImagetwinClient("wrong-key", base_url=emulator.url) as client:
        outcomes = await client.submit_and_wait(paths, submit_concurrency=1)
    assert all(isinstance(o.error, AuthenticationError) for o in outcomes)
    assert len(scan_posts(emulator)) == 1


async def test_bad_options_raise_before_anything_is_sent(
    emulator: Emulator, tmp_path: Path
) -> None:
    async with fast_client(emulator) as client:
        with pytest.raises(InvalidUpload, match="min_score"):
            await client.submit_and_wait(documents(tmp_path, 2), min_score=1.5)
    assert emulator.requests == [] or len(emulator.requests) == 0


async def iterate(it: AsyncIterator[Any]) -> list[Any]:
    return [x async for x in it]


async def test_a_failing_progress_callback_does_not_stop_the_batch(
    emulator: Emulator, tmp_path: Path
) -> None:
    def broken(_: BatchProgress) -> None:
        raise RuntimeError("the dashboard is down")

    async with fast_client(emulator) as client:
        outcomes = await asyncio.wait_for(
            client.submit_and_wait(documents(tmp_path, 3), progress=broken), timeout=30
        )
    assert all(o.ok for o in outcomes)


async def test_a_timeout_during_an_upload_says_the_scan_may_have_started(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.inject_fault("delay", endpoint="scan", delay=600.0)  # answer held for 10 s
    async with fast_client(emulator) as client:
        (outcome,) = await client.submit_and_wait(documents(tmp_path, 1), timeout=0.5)
    assert isinstance(outcome.error, AmbiguousSubmission)
    assert emulator.counters.scans_billed == 1


async def test_a_client_is_usable_again_after_close(emulator: Emulator, tmp_path: Path) -> None:
    client = fast_client(emulator)
    async with client:
        first = await client.submit_and_wait(documents(tmp_path, 1, "a"))
    async with client:
        second = await client.submit_and_wait(documents(tmp_path, 1, "b"))
    assert first[0].ok
    assert second[0].ok


class MetaJournal:
    """A journal with a meta store (an SQLite journal plus a dict), as the batch sees one."""

    def __init__(self, inner: SQLiteJournal, meta: dict[str, str]) -> None:
        self._inner = inner
        self.meta = meta
        self.entries = inner.entries
        self.sending = inner.sending
        self.started = inner.started
        self.finished = inner.finished
        self.failed = inner.failed
        self.forget = inner.forget
        self.close = inner.close

    async def load_meta(self, key: str) -> str | None:
        return self.meta.get(key)

    async def store_meta(self, key: str, value: str) -> None:
        self.meta[key] = value


async def test_a_batch_keeps_its_learned_durations_in_the_journal(
    imagetwin_emulator_factory: Factory, tmp_path: Path
) -> None:
    # A restarted service re-runs its batch: the new process's scheduler starts from the
    # durations the first run learned, instead of polling cold.
    emu = await imagetwin_emulator_factory(speed=SPEED, processing_time=30.0)
    meta: dict[str, str] = {}
    paths = documents(tmp_path, 6)
    async with fast_client(emu) as first:
        journal = MetaJournal(await SQLiteJournal.open(tmp_path / "j.journal"), meta)
        outcomes = await first.submit_and_wait(paths, journal=journal)
        await journal.close()
    assert all(o.ok for o in outcomes)
    assert "duration_model" in meta

    async with fast_client(emu) as second:
        assert not second.scheduler.model.ready
        journal = MetaJournal(await SQLiteJournal.open(tmp_path / "j2.journal"), meta)
        await second.submit_and_wait(documents(tmp_path, 3, prefix="more"), journal=journal)
        await journal.close()
        assert second.scheduler.model.ready
        assert second.scheduler.model.observations == 6 + 3


async def test_a_rerun_on_the_same_journal_file_polls_warm(
    imagetwin_emulator_factory: Factory, tmp_path: Path
) -> None:
    # The SQLite journal's meta table carries the model: a new process re-running the batch
    # file with more documents (a restarted service) starts from what the first run learned.
    emu = await imagetwin_emulator_factory(speed=SPEED, processing_time=30.0)
    journal = tmp_path / "sweep.journal"
    first_docs = [write_pdf(tmp_path / f"a{i}.pdf", pages=i + 1) for i in range(6)]
    async with fast_client(emu) as first:
        assert all(o.ok for o in await first.submit_and_wait(first_docs, journal=journal))
    more = [write_pdf(tmp_path / f"b{i}.pdf", pages=i + 7) for i in range(2)]  # new content
    async with fast_client(emu) as second:
        assert not second.scheduler.model.ready
        outcomes = await second.submit_and_wait([*first_docs, *more], journal=journal)
        assert all(o.ok for o in outcomes)
        assert [o.note for o in outcomes[:6]] == ["from the journal"] * 6
        assert second.scheduler.model.observations == 6 + 2  # six restored, two new
