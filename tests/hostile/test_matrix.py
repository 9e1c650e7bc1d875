"""The lying server against every public call: each case ends in a typed error (or a value the
call may honestly return), within its time budget, with the key nowhere and no file outside the
folder the caller named.

Adversary: a hostile or broken service, or anything between us and it (a proxy, a captive
portal, a cache). Classes: statuses, bodies, headers, sizes, timing, ids. Calls: ``scan``,
``get_result``, ``wait_for_result``, ``scan_overview``, ``download_report``,
``submit_and_wait`` and the ``imagetwin`` command. Every request the client makes gets the
case's answer (the report download included).

    pytest tests/hostile/test_matrix.py -q      # prints the count of cases per class
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

import imagetwin_async._client as client_module
from imagetwin_async import ImagetwinClient, ImagetwinError, ScanOutcome, ScanResult, Timings
from imagetwin_async._convert import converter
from imagetwin_async.cli import main

from ._server import Answer, HostileServer, Seen, gzip_bomb
from .conftest import KEY, OTHER_ID, SCAN_ID, assert_no_key, files_under, make_client

REQUEST_TIMEOUT = 0.5  # the client's per-request time-out here: the timing cases need it
BUDGET = 8.0  # seconds any one call may take, retries and back-off included
CALLS = [
    "scan",
    "get_result",
    "wait_for_result",
    "scan_overview",
    "download_report",
    "submit_and_wait",
    "cli",
]


def _result(scan_id: str) -> dict[str, Any]:
    return {
        "scanId": scan_id,
        "alterationCount": 0,
        "localDuplicateCount": 0,
        "externDuplicateCount": 0,
        "aiImageCount": 0,
        "pdfReport": "http://127.0.0.1:1/r.pdf",
        "resultUrl": "https://x",
        "minScore": 0.33,
        "highestScore": 0.0,
    }


def _json(status: int, data: Any, *headers: tuple[str, str]) -> Answer:
    return Answer(status, body=json.dumps(data).encode(), headers=headers)


RA = "Retry-After"
BOMB = gzip_bomb(64 * 1024 * 1024)
RESULT = json.dumps(_result(SCAN_ID)).encode()
UUID = "1625b21d-0492-44b5-83bb-76161ab116eb"
CASES: dict[str, dict[str, Answer]] = {
    "statuses": {
        "400": _json(400, {"message": "no"}),
        "401": _json(401, {"message": "bad key"}),
        "403": _json(403, {}),
        "404": _json(404, {"message": "gone"}),
        "418": Answer(418, body=b"teapot"),
        "500": _json(500, {"message": "boom"}),
        "502": Answer(502, body=b"<html>bad gateway</html>"),
        "503 no Retry-After": Answer(503),
        "504": Answer(504),
        "301 to elsewhere": Answer(301, headers=(("Location", "http://evil.example/steal"),)),
        "307 to elsewhere": Answer(307, headers=(("Location", "http://evil.example/steal"),)),
        "204 empty": Answer(204),
        "599": Answer(599, body=b"?"),
    },
    "bodies": {
        "html": Answer(200, body=b"<html>login</html>", headers=(("Content-Type", "text/html"),)),
        "empty": Answer(200, body=b""),
        "array": _json(200, [1, 2, 3]),
        "null": Answer(200, body=b"null"),
        "wrong types": _json(200, {**_result(SCAN_ID), "alterationCount": "many", "scanId": 5}),
        "deep nesting": Answer(200, body=b"[" * 200_000),
        "invalid utf-8": Answer(200, body=b'{"message": "\xff\xfe"}'),
        "NaN": Answer(200, body=b'{"scanId": NaN}'),
        "key echoed": _json(400, {"message": f"bad Bearer {KEY}", "echo": KEY}),
        "key escaped": Answer(
            401, body=b'{"message": "' + "".join(f"\\u{ord(c):04x}" for c in KEY).encode() + b'"}'
        ),
        "gzip bomb": Answer(
            200, body=gzip_bomb(64 * 1024 * 1024), headers=(("Content-Encoding", "gzip"),)
        ),
        "not gzip": Answer(200, body=b"plain", headers=(("Content-Encoding", "gzip"),)),
    },
    "headers": {
        "429 Retry-After 86400": Answer(429, headers=((RA, "86400"),)),
        "429 Retry-After 999999999": Answer(429, headers=((RA, "999999999"),)),
        "429 Retry-After 2100": Answer(429, headers=((RA, "Wed, 01 Dec 2100 00:00:00 GMT"),)),
        "429 Retry-After -5": Answer(429, headers=((RA, "-5"),)),
        "429 Retry-After garbage": Answer(429, headers=((RA, "soon, promise"),)),
        "429 Retry-After past date": Answer(429, headers=((RA, "Thu, 01 Jan 1970 00:00:00 GMT"),)),
        "503 Retry-After 86400": Answer(503, headers=((RA, "86400"),)),
        "Content-Length too long": Answer(200, body=b'{"scanId": "x"}', content_length=5000),
        "Content-Length too short": Answer(
            200, body=json.dumps(_result(SCAN_ID)).encode(), content_length=10
        ),
        "Content-Length garbage": Answer(200, body=b"{}", headers=(("Content-Length", "lots"),)),
        "302 with the key": Answer(302, headers=(("Location", f"http://evil.example/?k={KEY}"),)),
        "header echoes key": Answer(401, headers=(("X-Echo", f"Bearer {KEY}"),), body=b"{}"),
    },
    "sizes": {
        "3 MiB JSON": Answer(200, body=b'{"pad": "' + b"x" * (3 * 1024 * 1024) + b'"}'),
        "declared 1 TB": Answer(200, body=b"{}", content_length=10**12),
        "3 MiB error": Answer(500, body=b"e" * (3 * 1024 * 1024)),
    },
    "timing": {
        "never answers": Answer(hang=True),
        "headers then silence": Answer(200, hang_after_headers=True, content_length=100),
        "slow drip": Answer(200, body=RESULT, drip=0.05),
        "late": Answer(202, delay=0.3),
    },
    "ids": {
        "traversal": _json(200, {**_result("../../etc/passwd"), "message": "ok"}),
        "absolute": _json(200, {**_result("/tmp/evil"), "message": "ok"}),
        "mismatched": _json(200, {**_result(OTHER_ID), "message": "ok"}),
        "uuid for a POST": _json(
            200, {**_result("1625b21d-0492-44b5-83bb-76161ab116eb"), "message": "ok"}
        ),
        "65 hex": _json(200, {**_result("e" * 65), "message": "ok"}),
        "control chars": _json(200, {**_result("e" * 63 + "\n"), "message": "ok"}),
        "overview traversal": _json(
            200,
            {
                "startDate": "2025-04-10",
                "endDate": "2025-04-12",
                "scans": [{"scanId": "../x", "scanDate": "2025-04-10T13:54:05", "user": "u"}],
            },
        ),
    },
}

PARAMS = [
    pytest.param(cls, name, answer, call, id=f"{cls}-{name}-{call}")
    for cls, cases in CASES.items()
    for name, answer in cases.items()
    for call in CALLS
]
COUNTS = collections.Counter(cls for cls, _, _, _ in (p.values for p in PARAMS))


def test_the_matrix_covers_every_class_and_call() -> None:
    print("\nclass      cases (answers x calls)")
    for cls, count in COUNTS.items():
        print(f"{cls:10} {count:4} ({len(CASES[cls])} x {len(CALLS)})")
    print(f"{'total':10} {sum(COUNTS.values()):4}")
    assert set(COUNTS) == {"statuses", "bodies", "headers", "sizes", "timing", "ids"}


@pytest.fixture
def short_cli_timings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI builds its client with the default Timings: give it this suite's time-out."""

    def short(**kwargs: Any) -> Timings:
        kwargs.setdefault("timeout", REQUEST_TIMEOUT)
        kwargs.setdefault("connect_timeout", REQUEST_TIMEOUT)
        kwargs.setdefault("backoff_base", 0.001)
        kwargs.setdefault("backoff_cap", 0.01)
        return Timings(**kwargs)

    monkeypatch.setattr(client_module, "Timings", short)


async def _drive(
    call: str, client: ImagetwinClient, server: HostileServer, folder: Path, pdf: Path
) -> object:
    if call == "scan":
        return await client.scan(pdf)
    if call == "get_result":
        return await client.get_result(SCAN_ID)
    if call == "wait_for_result":
        return await client.wait_for_result(SCAN_ID, timeout=3.0)
    if call == "scan_overview":
        return await client.scan_overview("2025-04-10", "2025-04-12")
    if call == "download_report":
        result = converter.structure(
            {**_result(SCAN_ID), "pdfReport": f"{server.url}/pdfreport/{SCAN_ID}.pdf"}, ScanResult
        )
        return await client.download_report(result, f"{folder}/")
    if call == "submit_and_wait":
        return await client.submit_and_wait([pdf], timeout=4.0)
    raise AssertionError(call)


def _run_cli(server: HostileServer, pdf: Path) -> tuple[int, str]:
    # --speed 60: the CLI's rate windows and back-off as against a sped-up emulator, so that
    # a 429 without a usable Retry-After backs off for seconds, not the real minutes (at
    # speed 1 that back-off is bounded too: max_retries doublings up to a minute each).
    base = ["--base-url", server.url + "/v1", "--api-key", KEY, "--speed", "60", "-v"]
    return main([*base, "result", SCAN_ID, "--json"]), ""


@pytest.mark.usefixtures("short_cli_timings")
@pytest.mark.parametrize(("cls", "name", "answer", "call"), PARAMS)
async def test_a_lying_server_gets_a_typed_error_in_time_and_no_key_leaks(
    server: HostileServer,
    tmp_path: Path,
    pdf: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    cls: str,
    name: str,
    answer: Answer,
    call: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    server.answer = lambda seen: answer
    sandbox = tmp_path / "sandbox"
    folder = sandbox / "reports"
    sandbox.mkdir()
    before = files_under(tmp_path)
    started = time.monotonic()
    error: BaseException | None = None
    value: object = None
    if call == "cli":
        code, _ = await asyncio.wait_for(asyncio.to_thread(_run_cli, server, pdf), BUDGET)
        out, err = capfd.readouterr()
        assert_no_key(out, err)
        assert "Traceback" not in err, err[-2000:]
        assert code in (0, 1, 2, 3, 4), code
    else:
        async with make_client(
            server, timeout=REQUEST_TIMEOUT, connect_timeout=REQUEST_TIMEOUT
        ) as client:
            try:
                value = await asyncio.wait_for(_drive(call, client, server, folder, pdf), BUDGET)
            except ImagetwinError as exc:
                error = exc
    elapsed = time.monotonic() - started
    assert elapsed < BUDGET, f"{elapsed:.1f} s"
    if error is not None:
        assert_no_key(error)
    if isinstance(value, list):  # submit_and_wait: every outcome typed
        for outcome in value:
            assert isinstance(outcome, ScanOutcome)
            assert outcome.ok or isinstance(outcome.error, ImagetwinError)
            if outcome.error is not None:
                assert_no_key(outcome.error)
    assert_no_key(*(r.getMessage() for r in caplog.records))
    # Nothing written but inside the folder the caller named.
    written = files_under(tmp_path) - before
    assert all(folder in p.parents for p in written), written
    # No request ever left for another host, and the key went only where it belongs.
    assert all(s.headers.get("host", "").startswith("127.0.0.1") for s in server.seen)
    if call == "download_report":
        assert all("authorization" not in s.headers for s in server.requests_to("/pdfreport"))
    _ = (cls, name)


_ = (Callable, Seen, attrs)
