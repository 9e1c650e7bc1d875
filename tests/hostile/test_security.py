"""Security regressions (issue 12, items 1-5), each against the lying server.

Adversary: a compromised or buggy service (or a proxy in front of it) that sends scan ids
shaped as paths, results for other scans, echoes of our Authorization header in every
escaping, bottomless bodies, and callback URLs the caller did not mean.
"""

from __future__ import annotations

import gzip
import json
import tracemalloc
from pathlib import Path

import pytest
from multidict import CIMultiDictProxy

from imagetwin_async import (
    AmbiguousSubmission,
    APIError,
    ImagetwinClient,
    InvalidArgument,
    ResponseFormatError,
    ResponseTooLarge,
    ScanResult,
    TransportError,
    _spec,
)
from imagetwin_async._convert import converter
from imagetwin_async._protocol import build_result_request, read_result

from ._server import Answer, HostileServer, Seen, gzip_bomb
from .conftest import (
    KEY,
    OTHER_ID,
    SCAN_ID,
    assert_no_key,
    assert_no_key_logged,
    files_under,
    make_client,
)


def result_body(scan_id: str, report: str) -> dict[str, object]:
    return {
        "scanId": scan_id,
        "alterationCount": 0,
        "localDuplicateCount": 0,
        "externDuplicateCount": 0,
        "aiImageCount": 0,
        "pdfReport": report,
        "resultUrl": "https://app.imagetwin.ai/result/x",
        "minScore": 0.33,
        "highestScore": 0.0,
    }


# ---- 1. scan ids shaped as paths --------------------------------------------------------


TRAVERSALS = ["../x", "../../etc/passwd", "/tmp/evil", "a/b", "..", "x\x00y", "C:\\evil", " "]


@pytest.mark.parametrize("bad_id", TRAVERSALS)
async def test_a_scan_answer_with_a_path_for_an_id_is_not_a_started_scan(
    server: HostileServer, client: ImagetwinClient, pdf: Path, bad_id: str
) -> None:
    server.answer = lambda seen: Answer(200, json={"scanId": bad_id, "message": "ok"})
    with pytest.raises(AmbiguousSubmission, match="not a scan id"):
        await client.scan(pdf)


@pytest.mark.parametrize("status", [301, 303, 307])
async def test_a_scan_answered_by_a_redirect_is_never_paid_twice(
    server: HostileServer, pdf: Path, tmp_path: Path, status: int
) -> None:
    """A server that takes the upload and answers "See Other": the batch must keep the item
    in its journal in doubt (no key follows the redirect), and a re-run must not send it
    again."""
    server.answer = lambda seen: (
        Answer(status, headers=(("Location", "https://elsewhere.example/scan"),))
        if seen.method == "POST"
        else Answer(200, json=[])  # scan-overview: nothing the batch can adopt
    )
    journal = tmp_path / "sweep.journal"
    async with make_client(server) as client:
        with pytest.raises(AmbiguousSubmission):
            await client.scan(pdf)
        for _ in range(2):
            (outcome,) = await client.submit_and_wait(
                [pdf], journal=journal, ambiguous="report", settle_delay=0.0
            )
            assert isinstance(outcome.error, AmbiguousSubmission)
    posts = [s for s in server.seen if s.method == "POST"]
    assert len(posts) == 2  # the bare scan, and the batch's one upload: never resent


@pytest.mark.parametrize("bad_id", TRAVERSALS)
async def test_a_report_stays_inside_the_folder_whatever_the_scan_id(
    server: HostileServer, client: ImagetwinClient, tmp_path: Path, bad_id: str
) -> None:
    server.answer = lambda seen: Answer(
        200, body=b"%PDF-1.4 report", headers=(("Content-Type", "application/pdf"),)
    )
    folder = tmp_path / "deep" / "reports"
    report = f"{server.url}/pdfreport/{bad_id.replace('/', '%2F')}.pdf"
    # A ScanResult built by hand (or by an older SDK) can carry any id at all.
    result = converter.structure(result_body(bad_id, report), ScanResult)
    written = await client.download_report(result, f"{folder}/")
    assert written.parent == folder
    assert files_under(tmp_path) == {written}


@pytest.mark.parametrize(
    "name", ["..%2F..%2Fescape", "%2Ftmp%2Fabsolute", "..", "%00nul", "a%5Cb", "%0D%0Ax"]
)
async def test_a_report_url_named_as_a_path_stays_inside_the_folder(
    server: HostileServer, client: ImagetwinClient, tmp_path: Path, name: str
) -> None:
    server.answer = lambda seen: Answer(200, body=b"%PDF-1.4")
    folder = tmp_path / "reports"
    folder.mkdir()
    written = await client.download_report(f"{server.url}/r/{name}.pdf", folder)
    assert written.parent == folder
    assert files_under(tmp_path) == {written}


async def test_the_overview_with_a_path_for_an_id_is_refused(
    server: HostileServer, client: ImagetwinClient
) -> None:
    scans = [{"scanId": "../x", "scanDate": "2025-04-10T13:54:05", "user": "u"}]
    server.answer = lambda seen: Answer(
        200, json={"startDate": "2025-04-10", "endDate": "2025-04-12", "scans": scans}
    )
    with pytest.raises(ResponseFormatError) as caught:
        await client.scan_overview("2025-04-10", "2025-04-12")
    assert caught.value.path == "$.scans[0].scanId"


# ---- 2. a result for another scan ------------------------------------------------------


async def test_get_result_refuses_a_result_for_another_scan(
    server: HostileServer, client: ImagetwinClient
) -> None:
    server.answer = lambda seen: Answer(200, json=result_body(OTHER_ID, "https://r/x.pdf"))
    with pytest.raises(ResponseFormatError, match="asked for scan") as caught:
        await client.get_result(SCAN_ID)
    assert caught.value.path == "$.scanId"


async def test_wait_for_result_refuses_a_result_for_another_scan(
    server: HostileServer, client: ImagetwinClient
) -> None:
    server.answer = lambda seen: Answer(200, json=result_body(OTHER_ID, "https://r/x.pdf"))
    with pytest.raises(ResponseFormatError, match="asked for scan"):
        await client.wait_for_result(SCAN_ID, timeout=5)


# ---- 3. the key, echoed in every escaping ------------------------------------------------


def _echo_forms() -> list[bytes]:
    json_escaped = "".join(f"\\u{ord(c):04x}" for c in KEY).encode()
    return [
        f'{{"message": "bad key {KEY}"}}'.encode(),
        f'{{"message": "bad key {KEY.replace("/", chr(92) + "/")}"}}'.encode(),
        b'{"message": "bad key ' + json_escaped + b'"}',
        b'{"message": "bad key ' + KEY[:5].encode() + json_escaped[30:] + b'"}',
        f"<html>Bearer {KEY.replace('/', '&#47;')}</html>".encode(),
        f"<html>Bearer {KEY.replace('/', '%2F').replace('+', '%2B')}</html>".encode(),
    ]


@pytest.mark.parametrize("body", _echo_forms())
@pytest.mark.parametrize("status", [400, 401, 500])
async def test_an_echoed_key_is_redacted_after_decoding(
    server: HostileServer,
    client: ImagetwinClient,
    debug_logs: pytest.LogCaptureFixture,
    body: bytes,
    status: int,
) -> None:
    server.answer = lambda seen: Answer(status, body=body)
    with pytest.raises(APIError) as caught:
        await client.get_result(SCAN_ID)
    assert caught.value.server_message
    assert_no_key(caught.value, caught.value.server_message)
    assert_no_key_logged(debug_logs)


def _echo_spellings() -> list[str]:
    """The key as a JSON string's content, spelled plainly and escaped the ways decoders undo."""
    return [
        KEY,
        KEY.upper(),  # the pattern matches any letter case
        KEY.replace("/", "\\/"),
        "".join(f"\\u{ord(c):04x}" for c in KEY),
        KEY.replace("/", "%2F").replace("+", "%2b"),
        KEY.replace("/", "&#x2f;"),
    ]


@pytest.mark.parametrize("spelling", _echo_spellings())
async def test_a_successful_answer_echoing_the_key_in_a_field_keeps_it_out_of_the_error(
    server: HostileServer,
    client: ImagetwinClient,
    debug_logs: pytest.LogCaptureFixture,
    spelling: str,
) -> None:
    # A 200 whose scanId is our key (in some spelling): the mismatch error quotes the scanId.
    # Bodies are no longer redacted unconditionally but where the key could be; it could.
    body = json.dumps(result_body(SCAN_ID, "https://r/x.pdf")).replace(
        f'"{SCAN_ID}"', f'"{spelling}"'
    )
    server.answer = lambda seen: Answer(200, body=body.encode())
    with pytest.raises(ResponseFormatError) as caught:
        await client.get_result(SCAN_ID)
    assert "[redacted]" in str(caught.value)
    assert_no_key(caught.value)
    assert_no_key_logged(debug_logs)


@pytest.mark.parametrize("spelling", _echo_spellings())
async def test_an_echoed_key_in_a_successful_answers_headers_stays_in_the_session(
    server: HostileServer, client: ImagetwinClient, spelling: str
) -> None:
    # What leaves the session layer (the answer the core reads) never holds the key, whether
    # the headers are passed on as aiohttp read them (nothing to hide) or copied and redacted.
    server.answer = lambda seen: Answer(
        200,
        json=result_body(SCAN_ID, "https://r/x.pdf"),
        headers=(("X-Echo", f"Bearer {spelling}"), ("Retry-After", spelling)),
    )
    response = await client._transport.send(build_result_request(SCAN_ID))
    assert response.status == 200
    assert response.headers["X-Echo"] == "Bearer [redacted]"
    assert_no_key(repr(response), *response.headers.values())
    assert isinstance(read_result(200, response.headers, response.body, request=_READ), ScanResult)


async def test_headers_without_any_trace_of_the_key_are_aiohttps_own_read_only_view(
    server: HostileServer, client: ImagetwinClient
) -> None:
    server.answer = lambda seen: Answer(200, json=result_body(SCAN_ID, "https://r/x.pdf"))
    response = await client._transport.send(build_result_request(SCAN_ID))
    assert isinstance(response.headers, CIMultiDictProxy)  # no copy: nothing to redact
    with pytest.raises(TypeError):
        response.headers["X-Forged"] = "1"  # type: ignore[index]


_READ = build_result_request(SCAN_ID)


@pytest.mark.parametrize(
    "raw",
    [
        f"HTTP/1.1 2OO {KEY}\r\n\r\n".encode(),
        b"HTTP/1.1 abc Bearer\r\nContent-Length: 5\r\n\r\nhello",
        b"NOT HTTP AT ALL\r\n\r\n",
        f"HTTP/1.1 200 OK\r\nX-Echo: Bearer {KEY}\r\nContent-Length: 9999\r\n\r\n{{".encode(),
    ],
)
async def test_a_malformed_answer_chains_nothing_that_holds_the_request_headers(
    server: HostileServer,
    client: ImagetwinClient,
    debug_logs: pytest.LogCaptureFixture,
    pdf: Path,
    raw: bytes,
) -> None:
    server.answer = lambda seen: Answer(raw=raw)
    with pytest.raises(TransportError) as caught:
        await client.get_result(SCAN_ID)
    assert_no_key(caught.value)
    with pytest.raises(AmbiguousSubmission) as ambiguous:
        await client.scan(pdf)
    assert_no_key(ambiguous.value)
    assert_no_key_logged(debug_logs)
    for exc in (caught.value, ambiguous.value):
        for linked in (exc.__cause__, exc.__context__):
            assert not hasattr(linked, "request_info")


# ---- 4. bottomless bodies --------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        Answer(200, body=b"{" + b" " * (3 * 1024 * 1024) + b"}"),
        Answer(200, body=gzip_bomb(256 * 1024 * 1024), headers=(("Content-Encoding", "gzip"),)),
        Answer(200, body=b"x", content_length=10**12),
    ],
    ids=["3 MiB", "gzip bomb 256 MiB", "declared 1 TB"],
)
async def test_an_answer_past_the_cap_is_a_typed_error_not_memory(
    server: HostileServer, client: ImagetwinClient, pdf: Path, answer: Answer
) -> None:
    server.answer = lambda seen: answer
    tracemalloc.start()
    try:
        with pytest.raises(ResponseTooLarge):
            await client.get_result(SCAN_ID)
        with pytest.raises(AmbiguousSubmission, match="larger than"):
            await client.scan(pdf)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB"


async def test_an_error_answer_past_the_cap_is_still_that_error(
    server: HostileServer, client: ImagetwinClient
) -> None:
    server.answer = lambda seen: Answer(
        400, body=gzip.compress(b"no " * 2_000_000), headers=(("Content-Encoding", "gzip"),)
    )
    with pytest.raises(APIError) as caught:
        await client.get_result(SCAN_ID)
    assert caught.value.status == 400
    assert len(str(caught.value)) < 1000


async def test_a_report_past_the_cap_leaves_nothing_behind(
    server: HostileServer,
    client: ImagetwinClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_spec, "MAX_REPORT_BYTES", 1024 * 1024)
    server.answer = lambda seen: Answer(
        200, body=gzip_bomb(64 * 1024 * 1024), headers=(("Content-Encoding", "gzip"),)
    )
    with pytest.raises(ResponseTooLarge):
        await client.download_report(f"{server.url}/r/report.pdf", tmp_path / "out.pdf")
    assert files_under(tmp_path) == set()


# ---- 5. callback URLs ------------------------------------------------------------------


BAD_CALLBACKS = [
    "https://example.org/cb path",
    "https://example.org/cb\r\nX-Injected: 1",
    "https://example.org/cb\nx",
    "https://example.org/cb\x00",
    "https://user:pass@example.org/cb",
    "https://user@example.org/cb",
    "https://example.org\t/cb",
    "https://" + "a" * 3000 + ".org/cb",
    "https://example.org:99999/cb",
    "https://example.org:abc/cb",
    "https:///cb",
    "javascript:alert(1)",
    "file:///etc/passwd",
    "ftp://example.org/cb",
    "//example.org/cb",
    "https://exämple.org/cb",
]


@pytest.mark.parametrize("url", BAD_CALLBACKS)
async def test_a_bad_callback_url_is_refused_before_anything_is_sent(
    server: HostileServer, client: ImagetwinClient, pdf: Path, url: str
) -> None:
    server.answer = lambda seen: Answer(200, json={"scanId": SCAN_ID, "message": "billed"})
    with pytest.raises(InvalidArgument, match="callback_url"):
        await client.scan(pdf, callback_url=url)
    with pytest.raises(InvalidArgument, match="callback_url"):
        await client.submit_and_wait([pdf], callback_url=url, timeout=5)
    assert server.seen == []


async def test_a_good_callback_url_is_sent_as_given(
    server: HostileServer, client: ImagetwinClient, pdf: Path
) -> None:
    def answer(seen: Seen) -> Answer:
        return Answer(200, json={"scanId": SCAN_ID, "message": "ok"})

    server.answer = answer
    url = "https://hooks.example.org:8443/imagetwin/cb?token=a%20b#x"
    await client.scan(pdf, callback_url=url)
    assert url.encode() in server.seen[0].body
