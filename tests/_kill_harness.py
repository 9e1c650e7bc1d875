"""The SIGKILL test shared by every journal: a journaled batch run as its own process
(``tests._journal_worker``), killed at random instants, restarted each time, and the emulator's
record read for what was billed.

    run = kill_rounds(threaded, journal, tmp_path / "docs", kills=20, rng=random.Random(1))
    run.assert_never_paid_twice()

The journal is anything ``submit_and_wait(journal=...)`` takes as a string: a SQLite path or a
PostgreSQL URL, so the SQLite and PostgreSQL journals pass the very same test.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs

from imagetwin_async.emulator import Emulator, ThreadedEmulator

from ._files import write_pdf

ROOT = Path(__file__).resolve().parent.parent


def start_worker(
    emu: ThreadedEmulator,
    journal: str | Path,
    files: list[Path],
    *,
    skew: float = 0.0,
    jump: float = 0.0,
    per: float = 1.0,
) -> subprocess.Popen[str]:
    """Start a batch of ``files`` on ``journal`` in a new process whose wall clock is off by
    ``skew`` seconds (and jumps ``jump`` more a second in); its limits are 20 scans and 60
    reads per ``per`` seconds. The caller reads its "ready" line before timing a kill."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests._journal_worker",
            emu.url,
            emu.api_key,
            str(journal),
            str(skew),
            str(jump),
            *map(str, files),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "KILL_TEST_PER": str(per)},
    )


def kill(worker: subprocess.Popen[str]) -> None:
    """SIGKILL ``worker`` (no clean-up of any kind runs in it) and reap it."""
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    if worker.stdout is not None:
        worker.stdout.close()


def unique_documents(folder: Path, tag: str, n: int) -> list[Path]:
    """``n`` PDFs of 1-5 pages whose contents differ from every other call's (by ``tag``)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = write_pdf(folder / f"{tag}paper{i}.pdf", pages=1 + i % 5)
        with path.open("ab") as out:  # a trailing comment: same pages, distinct content
            out.write(f"% {tag} item {i}\n".encode())
        paths.append(path)
    return paths


def billed_per_content(emu: Emulator) -> collections.Counter[tuple[str, ...]]:
    """How many billed scans the emulator registered for each content (its files' hashes)."""
    return collections.Counter(
        tuple(f.sha256 for f in scan.files) for scan in emu.scans.values() if scan.billed
    )


@attrs.define
class KillRun:
    """What a run of kill rounds saw: every process started, every kill, the finished runs'
    outcomes (as the worker printed them) and what the emulator billed."""

    runs: int = 0
    kills: int = 0
    finals: list[dict[str, Any]] = attrs.field(factory=list)
    # (method, path, time) of every 429 drawn by a run started right after a kill.
    after_kill_429s: list[tuple[str, str, float]] = attrs.field(factory=list)
    billed: collections.Counter[tuple[str, ...]] = attrs.field(factory=collections.Counter)

    @property
    def ambiguous(self) -> list[dict[str, Any]]:
        return [o for o in self.finals if o["error"] == "AmbiguousSubmission"]

    def summary(self, name: str) -> str:
        adopted = sum(1 for o in self.finals if o["note"] and "adopted" in o["note"])
        return (
            f"{name}: {self.runs} runs, {self.kills} killed, {len(self.finals)} items, "
            f"{sum(self.billed.values())} scans billed, {max(self.billed.values())} at most "
            f"per content, {adopted} adopted, {len(self.ambiguous)} left in doubt "
            f"({len(self.ambiguous) / max(self.kills, 1):.2f} a kill), 429s in runs right "
            f"after a kill: {len(self.after_kill_429s)}"
        )

    def assert_never_paid_twice(self, kills: int) -> None:
        """The promise: no content billed twice, nothing lost but what is reported in doubt
        (with its candidates, at most one item a kill)."""
        ambiguous = self.ambiguous
        assert self.kills >= kills
        assert max(self.billed.values()) == 1, "some content was paid for twice"
        assert [o for o in self.finals if not o["ok"] and o not in ambiguous] == []
        assert all(o["candidates"] for o in ambiguous), "an in-doubt item without candidates"
        assert len(ambiguous) <= self.kills, "more than one item a kill left in doubt"
        assert len(self.billed) >= len(self.finals) - len(ambiguous)


def kill_rounds(
    threaded: ThreadedEmulator,
    journal: str | Path,
    folder: Path,
    *,
    kills: int,
    rng: random.Random,
    skew: float = 0.0,
    jump: float = 0.0,
    drops: bool = False,
) -> KillRun:
    """Run rounds of 12 fresh documents on one journal until ``kills`` runs were SIGKILLed:
    1-4 kills a round at 0.05-3 s (during settling, uploads and polls alike), then a run left
    to finish the round. Every third run holds the next scan answer back 5 s, so its kill lands
    between the POST reaching the server and the journal hearing of it; with ``drops``, 5% of
    scan POSTs are billed and then lose their answer."""
    run = KillRun()
    round_ = 0
    killed_last = False
    while run.kills < kills:
        files = unique_documents(folder, f"r{round_}-", 12)
        round_ += 1
        round_kills = rng.randint(1, 4)
        while True:
            run.runs += 1
            if run.runs % 3 == 0:
                threaded.call(lambda e: e.inject_fault("delay", endpoint="scan", delay=5.0))
            if drops:
                for _ in range(sum(rng.random() < 0.05 for _ in files)):
                    threaded.call(lambda e: e.inject_fault("drop-after", endpoint="scan"))
            first = threaded.call(lambda e: len(e.requests))
            worker = start_worker(threaded, journal, files, skew=skew, jump=jump)
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
            kill_at = rng.uniform(0.05, 3.0) if round_kills > 0 else 120.0
            round_kills -= 1
            try:
                out, _ = worker.communicate(timeout=kill_at)
            except subprocess.TimeoutExpired:
                kill(worker)
                run.kills += 1
                killed = True
            else:
                killed = False
            if killed_last:  # this run came right after a kill: did it draw a 429?
                answers = threaded.call(lambda e, n=first: list(e.requests)[n:])
                run.after_kill_429s.extend(
                    (r.method, r.path, r.time) for r in answers if r.status == 429
                )
            killed_last = killed
            if killed:
                continue
            assert worker.returncode == 0
            final = json.loads(out.strip().splitlines()[-1])
            assert len(final) == len(files)
            run.finals.extend(final)
            break
    threaded.call(lambda e: e.faults.clear())
    run.billed = billed_per_content(threaded.emulator)
    return run
