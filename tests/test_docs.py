"""Every Python snippet in README.md and docs/*.md runs, against the emulator (issue 12, 13).

Adversary: a new user who copies a snippet. Each fenced ``python`` block is run as it stands,
in a temporary directory holding the files snippets name (``paper.pdf``, ``fig1.png``, ...),
with the emulator standing in for the service: every ``ImagetwinClient`` a snippet builds talks
to it whatever ``base_url`` and key it was given, with its timings scaled to the emulator's
speed; Redis URLs point at the test Redis. Top-level ``await`` works, as in a notebook.

The convention, for snippet authors (also in CONTRIBUTING notes of docs/emulator.md): an HTML
comment on the line right above the fence says how a block runs.

- (none): run it. These names exist without being defined, as the prose around snippets says:
  ``client``, ``api_key``, ``paths``, ``papers``, ``upload``, ``pdf_bytes``, ``scan_id``,
  ``emu``, ``receiver``, ``token``, ``content_length``, ``body_chunks``.
- ``<!-- snippet: pytest -->``: a test module: run by pytest in a subprocess, in both
  pytest-asyncio modes (strict, the default, and auto); every test must pass, none skip.
- ``<!-- snippet: skip REASON -->``: not run; the reason is required and printed, and there may
  be at most ``MAX_SKIPPED`` of them.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

import imagetwin_async
import imagetwin_async.redis
from imagetwin_async import CallbackReceiver, FileContent, ImagetwinClient, RateLimit
from imagetwin_async.emulator import ThreadedEmulator

from ._files import docx_bytes, pdf_bytes, write_image, write_pdf

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
REDIS_URL = os.environ.get("IMAGETWIN_REDIS_URL", "redis://127.0.0.1:6379/15")
SPEED = 600  # an emulated minute lasts 0.1 s
MAX_SKIPPED = 2
_MARKER = re.compile(r"<!--\s*snippet:\s*(\w+)\s*(.*?)\s*-->")


@attrs.frozen
class Snippet:
    path: Path
    line: int
    code: str
    kind: str  # "run", "pytest" or "skip"
    reason: str = ""

    @property
    def name(self) -> str:
        return f"{self.path.name}:{self.line}"


def snippets() -> list[Snippet]:
    found = []
    for path in DOCS:
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            if lines[i].strip() == "```python":
                start = i
                end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
                before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
                marker = _MARKER.search(before)
                kind, reason = (marker.group(1), marker.group(2)) if marker else ("run", "")
                code = "\n".join(lines[start + 1 : end])
                found.append(Snippet(path, start + 1, code, kind, reason))
                i = end
            i += 1
    return found


ALL = snippets()
RUN = [s for s in ALL if s.kind == "run"]
PYTEST = [s for s in ALL if s.kind == "pytest"]
SKIPPED = [s for s in ALL if s.kind == "skip"]


def test_every_snippet_is_run_or_skipped_for_a_stated_reason() -> None:
    assert {s.kind for s in ALL} <= {"run", "pytest", "skip"}, [s.name for s in ALL]
    for snippet in SKIPPED:
        assert snippet.reason, f"{snippet.name}: a skipped snippet must say why"
        print(f"\nnot run: {snippet.name}: {snippet.reason}")
    print(f"\n{len(RUN)} run, {len(PYTEST)} run by pytest, {len(SKIPPED)} not run, of {len(ALL)}")
    assert len(SKIPPED) <= MAX_SKIPPED
    assert len(RUN) + len(PYTEST) >= 14


# ---- the environment snippets run in -----------------------------------------------------


@pytest.fixture(scope="module")
def emulator() -> Iterator[ThreadedEmulator]:
    with ThreadedEmulator(speed=SPEED, processing_time=30.0, port=0) as threaded:
        yield threaded


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "tests" / "data").mkdir(parents=True)
    for name in ("paper.pdf", "a.pdf", "b.pdf", "upload.pdf", "tests/data/paper.pdf"):
        write_pdf(tmp_path / name, pages=3)
    (tmp_path / "b.docx").write_bytes(docx_bytes(pages=2))
    for i, name in enumerate(["fig1.png", "fig2.png", "fig2.tif", "fig3.jpg"]):
        write_image(tmp_path / name, seed=i)
    monkeypatch.chdir(tmp_path)
    return tmp_path


class _EmulatorProxy:
    """The emulator, as a snippet sees it: its methods run on the emulator's own thread."""

    def __init__(self, threaded: ThreadedEmulator) -> None:
        self._threaded = threaded

    def __getattr__(self, name: str) -> Any:
        value = self._threaded.call(lambda e: getattr(e, name))
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._threaded.call(lambda e: getattr(e, name)(*args, **kwargs))

        return call


def _redirect(url: str) -> str:
    return REDIS_URL if "redis.internal" in url else url


@pytest.fixture
def patched(emulator: ThreadedEmulator, monkeypatch: pytest.MonkeyPatch) -> ThreadedEmulator:
    """Every client a snippet builds talks to the emulator, at its speed; Redis is ours."""
    original = ImagetwinClient

    def scaled(limit: Any) -> Any:
        if isinstance(limit, RateLimit):
            return RateLimit(limit.requests, per=limit.per / SPEED, strategy=limit.strategy)
        return limit

    class DocClient(original):  # type: ignore[misc, valid-type]
        def __init__(self, api_key: str | None = None, **options: Any) -> None:
            options["base_url"] = emulator.url
            for name in ("scan_limit", "result_limit"):
                options[name] = scaled(options.get(name, RateLimit(60 if "result" in name else 20)))
            options.setdefault("poll_interval", 0.01)
            options.setdefault("max_poll_interval", 0.05)
            options.setdefault("backoff_base", 0.001)
            options.setdefault("backoff_cap", 0.01)
            super().__init__(emulator.api_key, **options)

    monkeypatch.setattr(imagetwin_async, "ImagetwinClient", DocClient)
    original_limits = imagetwin_async.redis.redis_limits
    monkeypatch.setattr(
        imagetwin_async.redis,
        "redis_limits",
        lambda url, key=None, **kw: original_limits(
            _redirect(url),
            key,
            **{
                **kw,
                "scan_limit": scaled(kw.get("scan_limit", RateLimit(20))),
                "result_limit": scaled(kw.get("result_limit", RateLimit(60))),
                "prefix": "imagetwin-docs",
            },
        ),
    )
    original_from_url = imagetwin_async.redis.RedisLimiter.from_url.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(
        imagetwin_async.redis.RedisLimiter,
        "from_url",
        classmethod(lambda cls, url, *a, **kw: original_from_url(cls, _redirect(url), *a, **kw)),
    )
    monkeypatch.setenv("IMAGETWIN_API_KEY", emulator.api_key)
    return emulator


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _namespace(threaded: ThreadedEmulator, workdir: Path) -> dict[str, Any]:
    client = imagetwin_async.ImagetwinClient()
    started = await client.scan("paper.pdf")
    receiver = CallbackReceiver(client, "https://my.service/imagetwin/callbacks")
    return {
        "__name__": "__snippet__",
        "client": client,
        "api_key": threaded.api_key,
        "paths": [workdir / "a.pdf", workdir / "b.pdf"],
        "papers": [workdir / "a.pdf", workdir / "b.docx"],
        "upload": FileContent("upload.pdf", pdf_bytes(2)),
        "pdf_bytes": pdf_bytes(2),
        "scan_id": started.scan_id,
        "emu": _EmulatorProxy(threaded),
        "receiver": receiver,
        "token": receiver.callback_url.rsplit("/", 1)[-1],
        "content_length": 80,
        "body_chunks": _chunks(
            b'{"scanId": "' + started.scan_id.encode() + b'", "status": "finished"}'
        ),
    }


def _run(snippet: Snippet, threaded: ThreadedEmulator, workdir: Path) -> None:
    """Run one snippet on a fresh loop in its own thread, as a user's script would."""
    code = compile(
        snippet.code, snippet.name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
    )

    async def main() -> None:
        namespace = await _namespace(threaded, workdir)
        ours = namespace["client"]
        try:
            result = eval(code, namespace)
            if inspect.iscoroutine(result):
                await result
        finally:
            await ours.close()
            if isinstance(namespace.get("client"), ImagetwinClient):
                await namespace["client"].close()  # one the snippet built in its place

    def script() -> None:
        # A snippet that calls asyncio.run() itself needs a thread with no running loop.
        namespace = asyncio.run(_namespace(threaded, workdir))
        asyncio.run(namespace["client"].close())
        eval(code, namespace)

    errors: list[BaseException] = []

    def target() -> None:
        try:
            script() if "asyncio.run(" in snippet.code else asyncio.run(main())
        except BaseException as exc:  # reported on the test's thread
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), f"{snippet.name} did not finish in 120 s"
    if errors:
        raise errors[0]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("snippet", RUN, ids=[s.name for s in RUN])
def test_snippet_runs(snippet: Snippet, patched: ThreadedEmulator, workdir: Path) -> None:
    _run(snippet, patched, workdir)


@pytest.mark.parametrize("mode", ["strict", "auto"])
@pytest.mark.parametrize("snippet", PYTEST, ids=[s.name for s in PYTEST])
def test_pytest_snippet_passes(snippet: Snippet, workdir: Path, mode: str) -> None:
    (workdir / "test_snippet.py").write_text(snippet.code + "\n")
    shutil.copy(workdir / "paper.pdf", workdir / "paper-copy.pdf")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            f"asyncio_mode={mode}",
            "-o",
            "asyncio_default_fixture_loop_scope=function",
            "-rA",
            "test_snippet.py",
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTEST")},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert " skipped" not in done.stdout and "SKIPPED" not in done.stdout, done.stdout
    assert re.search(r"\d+ passed", done.stdout), done.stdout


def test_the_snippet_harness_sees_a_broken_snippet(
    patched: ThreadedEmulator, workdir: Path
) -> None:
    """The harness itself can fail: a snippet naming what does not exist raises."""
    broken = Snippet(REPO / "README.md", 0, "await client.scan(undefined_name)", "run")
    with pytest.raises(NameError):
        _run(broken, patched, workdir)
