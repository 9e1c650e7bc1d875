"""The public API as users write it. Only type-checked (mypy --strict and pyright), never run."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from imagetwin_async import (
    AmbiguousPolicy,
    BatchProgress,
    ClientClosed,
    FileContent,
    ImagetwinClient,
    ImagetwinError,
    LimitState,
    NamedFile,
    PollTimeout,
    RateLimit,
    RateLimitBusy,
    ScanFailure,
    ScanOutcome,
    ScanOverview,
    ScanPending,
    ScanResult,
    ScanStarted,
    ScanSuccess,
    SchedulerStats,
    Timings,
    Uploadable,
)


def show(progress: BatchProgress) -> None:
    print(progress.submitted, progress.running, progress.finished, progress.failed)


async def main() -> None:
    async with ImagetwinClient(
        base_url="http://127.0.0.1:8080/v1",
        scan_limit=RateLimit(20, per=60.0),
        result_limit=RateLimit(60, per=60.0),
        poll_interval=5.0,
        max_poll_interval=60.0,
    ) as client:
        started: ScanStarted = await client.scan("paper.pdf", min_score=0.5)
        images: ScanStarted = await client.scan([Path("fig1.png"), "fig2.tif"])
        memory: ScanStarted = await client.scan(FileContent("upload.pdf", b"%PDF-1.7 ..."))
        answer: ScanResult | ScanPending = await client.get_result(started.scan_id)
        if isinstance(answer, ScanPending):
            try:
                result: ScanResult = await client.wait_for_result(images.scan_id, timeout=600)
            except PollTimeout:
                pass
            else:
                print(result.highest_score, result.finding_count)
        # Sequence, not list: a list of outcomes of str items is not a list of ScanOutcome[object].
        outcomes: Sequence[ScanOutcome] = await client.submit_and_wait(
            ["a.pdf", "b.docx", ["fig1.png", "fig2.tif"]], journal="sweep.journal", progress=show
        )
        for outcome in outcomes:
            error: ImagetwinError | None = outcome.error
            print(outcome.source, outcome.scan_id, outcome.ok, error)
        # The README's loop: each kind of outcome matched, `result` and `error` narrowed;
        # `source` is the item's type (mypy and pyright alike).
        for done_item in await client.submit_and_wait(["a.pdf", "b.pdf"]):
            match done_item:
                case ScanSuccess(result=found):
                    findings: int = found.finding_count
                    name: str = done_item.source
                    print(name, findings)
                case ScanFailure(error=why):
                    print(done_item.source.upper(), why)
            # `if done_item.ok:` narrows under mypy; pyright narrows `ok is True` (both do).
            if done_item.ok is True:
                print(done_item.result.finding_count)
            else:
                reason: ImagetwinError = done_item.error
                print(reason)
            if isinstance(done_item, ScanSuccess):
                print(done_item.result.clean)
        async with contextlib.aclosing(client.iter_outcomes(["c.pdf"])) as stream:
            async for item in stream:
                print(item.result)
        overview: ScanOverview = await client.scan_overview(dt.date(2025, 1, 1), "2025-01-31")
        csv: str = await client.scan_overview("2025-01-01", "2025-01-31", export_format="csv")
        done = await client.wait_for_result(memory.scan_id)
        await client.download_report(done, Path("reports"))
        state: LimitState = client.limits["scan"]
        print(overview.scans, csv, state.available, state.next_slot_in)
        # The batch keywords are typed: a misspelt one is an error before anything runs.
        await client.submit_and_wait(["a.pdf"], min_scor=0.5)  # type: ignore[call-arg]
        await client.submit_and_wait(["a.pdf"], timeout="soon")  # type: ignore[arg-type]
        try:
            await client.scan("paper.pdf", block=False)
        except RateLimitBusy as busy:
            print(busy.retry_after)


async def against_the_emulator() -> None:
    from imagetwin_async.emulator import Emulator  # noqa: PLC0415

    async with Emulator(speed=60) as emu, ImagetwinClient(**emu.client_kwargs()) as client:
        timings: Timings = client.timings
        print(timings.poll_interval * 60)
    fast = Timings().scaled(60)
    async with ImagetwinClient("key", base_url="http://127.0.0.1:8080/v1", timings=fast) as c2:
        print(c2.timings.scan_limit.per)
    async with ImagetwinClient("key", base_url="http://127.0.0.1:8080/v1", speed=60) as c3:
        print(c3.timings.result_limit)


async def with_options(client: ImagetwinClient, scan_id: str) -> None:
    # A view is an ImagetwinClient: every endpoint, typed the same; options per call on top.
    quick: ImagetwinClient = client.with_options(timeout=10, max_retries=1)
    answer: ScanResult | ScanPending = await quick.get_result(scan_id, max_retries=0)
    started: ScanStarted = await client.with_options(max_retries=0).scan("a.pdf", timeout=30)
    overview: ScanOverview = await quick.scan_overview("2025-01-01", "2025-01-31", max_retries=2)
    unbounded = client.with_options(timeout=None, connect_timeout=5.0, max_retry_after=60.0)
    print(answer, started, overview, unbounded.timings.timeout)
    try:
        async with client.with_options(timeout=5) as view:
            await view.wait_for_result(scan_id)
    except ClientClosed as closed:
        print(closed.message)
    client.with_options(timeout="10")  # type: ignore[arg-type]
    await client.get_result(scan_id, max_retries=1.5)  # type: ignore[arg-type]


async def scan_everything(
    client: ImagetwinClient, items: list[Uploadable], upload: NamedFile
) -> None:
    policy: AmbiguousPolicy = "report"
    await client.submit_and_wait([*items, upload], ambiguous=policy, submit_concurrency=5)
    stats: SchedulerStats = client.scheduler.stats
    print(stats)
