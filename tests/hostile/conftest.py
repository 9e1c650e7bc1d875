"""The lying server, a client pointed at it, and the checks every hostile case ends with."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from imagetwin_async import ImagetwinClient, ImagetwinError, RateLimit

from ._server import HostileServer

# Distinctive and full of characters that escape differently in JSON, URLs and HTML.
KEY = "sk-hostile/0123+abcdef=XYZ"
SCAN_ID = "e" * 64
OTHER_ID = "d" * 64
REQUEST_TIMEOUT = 2.0  # seconds: the client's own per-request time-out in these tests


@pytest.fixture
def server() -> Iterator[HostileServer]:
    with HostileServer() as hostile:
        yield hostile


def make_client(server: HostileServer, **options: object) -> ImagetwinClient:
    settings: dict[str, object] = {
        "base_url": server.url + "/v1",
        "scan_limit": RateLimit(20, per=1.0),
        "result_limit": RateLimit(60, per=1.0),
        "poll_interval": 0.01,
        "max_poll_interval": 0.05,
        "backoff_base": 0.001,
        "backoff_cap": 0.01,
        "max_retries": 2,
        "timeout": REQUEST_TIMEOUT,
        "connect_timeout": 1.0,
    }
    settings.update(options)
    return ImagetwinClient(KEY, **settings)  # type: ignore[arg-type]


@pytest.fixture
async def client(server: HostileServer) -> AsyncIterator[ImagetwinClient]:
    async with make_client(server) as c:
        yield c


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and everything behind it: causes and contexts, each once."""
    seen: list[BaseException] = []
    stack = [exc]
    while stack:
        current = stack.pop()
        if any(current is s for s in seen):
            continue
        seen.append(current)
        stack += [e for e in (current.__cause__, current.__context__) if e is not None]
    return seen


def key_forms() -> list[str]:
    return [KEY, KEY.replace("/", "\\/"), KEY.replace("/", "%2F")]


def assert_no_key(*texts: object) -> None:
    """The key in none of ``texts`` (strings, or exceptions with their whole chain)."""
    for item in texts:
        parts: list[str] = []
        if isinstance(item, BaseException):
            for exc in chain(item):
                parts += [str(exc), repr(exc), repr(exc.args), repr(vars(exc))]
        else:
            parts.append(str(item))
        for part in parts:
            for form in key_forms():
                assert form not in part, f"the API key leaked: {part[:300]}"


def assert_no_key_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert_no_key(*(record.getMessage() for record in caplog.records))
    for record in caplog.records:
        if record.exc_info and record.exc_info[1] is not None:
            assert_no_key(record.exc_info[1])


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


__all__ = [
    "KEY",
    "OTHER_ID",
    "REQUEST_TIMEOUT",
    "SCAN_ID",
    "ImagetwinError",
    "assert_no_key",
    "assert_no_key_logged",
    "chain",
    "files_under",
    "make_client",
]
