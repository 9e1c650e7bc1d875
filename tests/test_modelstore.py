"""Keeping the learned durations between runs: a cache file, a journal, a custom store.

The adversaries: a crash in the middle of a write, a cache file someone filled with garbage,
a store that fails outright. None of them may fail a run: a log line and a cold start.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from imagetwin_async import FileModelStore, ScanPending, ScanResult
from imagetwin_async._durations import DurationModel
from imagetwin_async._modelstore import JournalModelStore, ModelStore, default_cache_path
from imagetwin_async._polling import PollScheduler

pytestmark = pytest.mark.looptime


def result(scan_id: str) -> ScanResult:
    return ScanResult(scan_id, 0, 0, 0, "https://r/x.pdf", "https://r/x", 0.33, 0, 0.0)


class Endpoint:
    def __init__(self) -> None:
        self.ends: dict[str, float] = {}
        self.reads: list[tuple[float, str]] = []

    def start(self, scan_id: str, duration: float) -> None:
        self.ends[scan_id] = asyncio.get_running_loop().time() + duration

    async def poll(self, scan_id: str) -> ScanResult | ScanPending:
        now = asyncio.get_running_loop().time()
        self.reads.append((now, scan_id))
        return result(scan_id) if now >= self.ends[scan_id] else ScanPending(scan_id)


async def learn(scheduler: PollScheduler, endpoint: Endpoint, n: int, seconds: float) -> None:
    for i in range(n):
        endpoint.start(f"old{i}", seconds + i % 5)
        scheduler.note_started(f"old{i}")
    await asyncio.gather(*(scheduler.wait(f"old{i}") for i in range(n)))


async def test_a_second_run_starts_warm_from_the_cache_file(tmp_path: Path) -> None:
    store = FileModelStore(tmp_path / "cache" / "durations.json")
    endpoint = Endpoint()
    first = PollScheduler(endpoint.poll, poll_interval=2.0, model_store=store)
    await learn(first, endpoint, 20, 120.0)
    await first.close()
    assert store.path.exists()
    assert [p.name for p in store.path.parent.iterdir()] == ["durations.json"]  # no temp left

    second = PollScheduler(endpoint.poll, poll_interval=2.0, model_store=store)
    assert not second.model.ready
    t0 = asyncio.get_running_loop().time()
    endpoint.start("new", 120.0)
    second.note_started("new")
    await second.wait("new")
    assert second.model.ready
    reads = [t - t0 for t, s in endpoint.reads if s == "new"]
    assert reads[0] > 60.0  # the cold schedule would have read it at 2 s
    await second.close()


@pytest.mark.parametrize("content", [b"\x00\xff garbage", b'{"version": 1, "observations": 7}'])
async def test_a_corrupted_cache_file_costs_a_log_line_and_a_cold_start(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "durations.json"
    path.write_bytes(content)
    endpoint = Endpoint()
    scheduler = PollScheduler(endpoint.poll, poll_interval=1.0, model_store=FileModelStore(path))
    endpoint.start("a", 3.0)
    with caplog.at_level(logging.WARNING, logger="imagetwin_async"):
        assert (await scheduler.wait("a", timeout=100)).scan_id == "a"
    assert "ignoring the" in caplog.text
    assert not scheduler.model.ready
    await scheduler.close()


async def test_an_oversized_cache_file_is_not_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "durations.json"
    path.write_bytes(b" " * (2 << 20))
    with caplog.at_level(logging.WARNING, logger="imagetwin_async"):
        assert await FileModelStore(path).load() is None
    assert "larger than 1 MiB" in caplog.text


async def test_a_crash_mid_write_keeps_the_old_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileModelStore(tmp_path / "durations.json")
    await store.save('{"old": true}')

    def crash(*_: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        await store.save('{"new": true}')
    assert await store.load() == '{"old": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["durations.json"]


async def test_a_failing_store_never_fails_a_wait(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        async def load(self) -> str | None:
            raise ConnectionError("store down")

        async def save(self, state: str) -> None:
            raise ConnectionError("store down")

    assert isinstance(Broken(), ModelStore)
    endpoint = Endpoint()
    scheduler = PollScheduler(endpoint.poll, poll_interval=1.0, model_store=Broken())
    with caplog.at_level(logging.WARNING, logger="imagetwin_async"):
        await learn(scheduler, endpoint, 6, 5.0)
        await scheduler.close()
    assert "ignoring the stored duration model" in caplog.text
    assert "could not save the duration model" in caplog.text


async def test_the_journal_keeps_the_model_in_its_meta_table() -> None:
    class Meta:
        def __init__(self) -> None:
            self.values: dict[str, str] = {}

        async def load_meta(self, key: str) -> str | None:
            return self.values.get(key)

        async def store_meta(self, key: str, value: str) -> None:
            self.values[key] = value

    meta = Meta()
    endpoint = Endpoint()
    first = PollScheduler(endpoint.poll, model_store=JournalModelStore(meta))
    await learn(first, endpoint, 10, 30.0)
    await first.close()
    model = DurationModel()
    assert model.restore(meta.values["duration_model"]) == 10


def test_the_default_cache_lives_in_the_user_cache_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    path = default_cache_path()
    assert path.name == "durations.json"
    assert path.parent.name == "imagetwin"
