"""ImagetwinClient against a mocked API (aioresponses): every endpoint, status and retry rule."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from email.utils import format_datetime
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from imagetwin_async import (
    AmbiguousSubmission,
    APIError,
    AuthenticationError,
    BadRequest,
    ConfigurationError,
    ImagetwinClient,
    InvalidArgument,
    InvalidUpload,
    RateLimit,
    RateLimitBusy,
    RateLimited,
    ScanFailed,
    ScanNotFound,
    ScanOverview,
    ScanPending,
    ScanResult,
    ServiceUnavailable,
    TransportError,
    _spec,
)

from ._mock import mocked
from .conftest import API, KEY

SCAN_ID = _spec.SANDBOX_FINISHED_ID
RESULT = {
    "scanId": SCAN_ID,
    "alterationCount": 1,
    "localDuplicateCount": 2,
    "externDuplicateCount": 0,
    "aiImageCount": 0,
    "pdfReport": "https://app.imagetwin.test/pdfreport/e590.pdf",
    "resultUrl": "https://app.imagetwin.test/result/e590",
    "minScore": 0.33,
    "highestScore": 0.99,
}
STARTED = {"scanId": SCAN_ID, "message": "Scan started successfully."}


def calls(api: mocked, method: str, url: str) -> list[dict[str, object]]:
    return [call.kwargs for call in api.requests.get((method, URL(url)), [])]


# ---- construction -----------------------------------------------------------------------


def test_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGETWIN_API_KEY", KEY)
    client = ImagetwinClient(base_url=API)
    assert KEY not in repr(client)


def test_no_key_at_all_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMAGETWIN_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="IMAGETWIN_API_KEY"):
        ImagetwinClient()


@pytest.mark.parametrize("url", ["api.imagetwin.ai/v1", "ftp://x/v1", "/v1", ""])
def test_a_base_url_that_is_not_http_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="base_url"):
        ImagetwinClient(KEY, base_url=url)


@pytest.mark.parametrize(
    "url", ["http://user:SECRETPW@127.0.0.1:1/v1", "https://:SECRETPW@proxy.example/v1"]
)
def test_a_base_url_with_credentials_is_refused_naming_no_password(url: str) -> None:
    """A proxy URL pasted with its password: aiohttp would refuse it on every request (beside
    our Authorization header), and the password would show wherever the URL is shown."""
    with pytest.raises(ConfigurationError, match="credentials") as caught:
        ImagetwinClient(KEY, base_url=url)
    assert "SECRETPW" not in f"{caught.value} {caught.value!r} {caught.value.args!r}"
    assert caught.value.__cause__ is None and caught.value.__context__ is None


def test_bad_timings_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        ImagetwinClient(KEY, poll_interval=0)
    with pytest.raises(ConfigurationError):
        ImagetwinClient(KEY, poll_interval=10, max_poll_interval=5)
    with pytest.raises(ConfigurationError):
        ImagetwinClient(KEY, max_retries=-1)


async def test_a_callers_session_is_used_and_left_open(api: mocked) -> None:
    api.get(f"{API}/result/{SCAN_ID}", status=202)
    async with aiohttp.ClientSession() as session:
        async with ImagetwinClient(KEY, base_url=API, session=session) as client:
            assert isinstance(await client.get_result(SCAN_ID), ScanPending)
        assert not session.closed


# ---- scan -------------------------------------------------------------------------------


async def test_scan_sends_the_file_the_key_and_the_options(
    api: mocked, client: ImagetwinClient, pdf: Path
) -> None:
    api.post(f"{API}/scan", payload=STARTED)
    started = await client.scan(pdf, min_score=0.5, exclude_identical_paper=True)
    assert started.scan_id == SCAN_ID
    assert started.message == "Scan started successfully."
    (sent,) = calls(api, "POST", f"{API}/scan")
    assert sent["headers"]["Authorization"] == f"Bearer {KEY}"  # type: ignore[index]
    form = sent["data"]
    assert isinstance(form, aiohttp.FormData)
    fields = {f[0]["name"]: f for f in form._fields}
    assert fields["file"][0]["filename"] == "paper.pdf"
    assert fields["minScore"][2] == "0.5"
    assert fields["excludeIdenticalPaper"][2] == "true"


async def test_an_image_set_is_one_scan_with_one_part_per_image(
    api: mocked, client: ImagetwinClient, images: list[Path]
) -> None:
    api.post(f"{API}/scan", payload=STARTED)
    await client.scan(images)
    (sent,) = calls(api, "POST", f"{API}/scan")
    form = sent["data"]
    assert isinstance(form, aiohttp.FormData)
    names = [f[0]["filename"] for f in form._fields if f[0]["name"] == "file"]
    assert names == ["fig1.png", "fig2.png", "fig3.png"]


async def test_the_sandbox_endpoint(api: mocked, client: ImagetwinClient, pdf: Path) -> None:
    api.post(f"{API}/sandbox/scan", payload=STARTED)
    assert (await client.scan(pdf, sandbox=True)).scan_id == SCAN_ID


async def test_bad_input_is_refused_before_anything_is_sent(
    api: mocked, client: ImagetwinClient, pdf: Path, tmp_path: Path
) -> None:
    with pytest.raises(InvalidUpload):
        await client.scan(tmp_path / "missing.pdf")
    with pytest.raises(InvalidUpload, match="min_score"):
        await client.scan(pdf, min_score=2.0)
    with pytest.raises(InvalidUpload):
        await client.scan([])
    assert api.requests == {}


@pytest.mark.parametrize(
    ("legacy", "field"), [("scan_pdf", "pdfFile"), ("scan_images", "imageFile")]
)
async def test_deprecated_endpoints_warn_and_work(
    api: mocked, client: ImagetwinClient, pdf: Path, images: list[Path], legacy: str, field: str
) -> None:
    path = "scanPdf" if legacy == "scan_pdf" else "scanImages"
    api.post(f"{API}/{path}", payload=STARTED)
    with pytest.warns(DeprecationWarning, match=path):
        started = await getattr(client, legacy)(pdf if legacy == "scan_pdf" else images)
    assert started.scan_id == SCAN_ID
    (sent,) = calls(api, "POST", f"{API}/{path}")
    form = sent["data"]
    assert isinstance(form, aiohttp.FormData)
    assert {f[0]["name"] for f in form._fields} == {field}


# ---- result -----------------------------------------------------------------------------


async def test_get_result_200_202_404_500(api: mocked, client: ImagetwinClient) -> None:
    url = f"{API}/result/{SCAN_ID}"
    api.get(url, payload=RESULT)
    api.get(url, status=202)
    api.get(url, status=404, payload={"message": "No result found"})
    api.get(url, status=500, payload={"message": "Scan failed"})
    result = await client.get_result(SCAN_ID)
    assert isinstance(result, ScanResult)
    assert result.alteration_count == 1
    assert await client.get_result(SCAN_ID) == ScanPending(SCAN_ID)
    with pytest.raises(ScanNotFound, match="No result found"):
        await client.get_result(SCAN_ID)
    with pytest.raises(ScanFailed) as failed:
        await client.get_result(SCAN_ID)
    assert failed.value.status == 500
    assert failed.value.endpoint == "GET /result/{scanId}"


async def test_wait_for_result_polls_until_done(api: mocked, client: ImagetwinClient) -> None:
    url = f"{API}/result/{SCAN_ID}"
    api.get(url, status=202)
    api.get(url, status=202)
    api.get(url, payload=RESULT)
    result = await client.wait_for_result(SCAN_ID, timeout=5)
    assert result.scan_id == SCAN_ID
    assert len(calls(api, "GET", url)) == 3


# ---- overview and report ----------------------------------------------------------------


async def test_scan_overview_json_and_csv(api: mocked, client: ImagetwinClient) -> None:
    pattern = re.compile(rf"{re.escape(API)}/scan-overview\?.*")
    api.get(
        pattern,
        payload={
            "startDate": "2025-04-10",
            "endDate": "2025-04-12",
            "scans": [
                {
                    "scanId": "b8218b13-ad59-4f59-8067-d5406732440f",
                    "scanDate": "2025-04-10T15:07:23",
                    "user": "someone@example.org",
                    "freeOfCharge": True,
                    "apiScan": False,
                }
            ],
        },
    )
    api.get(
        pattern, body="scanId,scanDate\nb8218b13,2025-04-10T15:07:23\n", content_type="text/csv"
    )
    overview = await client.scan_overview(dt.date(2025, 4, 10), "2025-04-12")
    assert isinstance(overview, ScanOverview)
    assert overview.scans[0].free_of_charge
    csv = await client.scan_overview("2025-04-10", "2025-04-12", export_format="csv")
    assert csv.startswith("scanId,scanDate")
    sent = [c for (m, u), cs in api.requests.items() for c in cs if m == "GET"]
    assert sent[0].kwargs["params"] == (
        ("startDate", "2025-04-10"),
        ("endDate", "2025-04-12"),
        ("exportFormat", "json"),
    )


async def test_download_report_streams_without_the_key(
    api: mocked, client: ImagetwinClient, tmp_path: Path
) -> None:
    pdf_bytes = b"%PDF-1.4\n" + b"x" * 40_000 + b"\n%%EOF\n"
    api.get(RESULT["pdfReport"], body=pdf_bytes, content_type="application/pdf")
    result = ScanResult(
        scan_id=SCAN_ID,
        alteration_count=0,
        local_duplicate_count=0,
        extern_duplicate_count=0,
        pdf_report=str(RESULT["pdfReport"]),
        result_url=str(RESULT["resultUrl"]),
        min_score=0.33,
    )
    path = await client.download_report(result, f"{tmp_path}/reports/")
    assert path == tmp_path / "reports" / f"{SCAN_ID}.pdf"
    assert path.read_bytes() == pdf_bytes
    (sent,) = calls(api, "GET", str(RESULT["pdfReport"]))
    assert "Authorization" not in (sent.get("headers") or {})
    assert list(tmp_path.glob("**/*.part")) == []


@pytest.mark.parametrize(
    "link",
    [
        "http://169.254.169.254/latest/meta-data/iam/",  # cloud metadata
        "http://127.1:6379/",  # a database on this machine, in a form resolvers accept
        "http://2130706433/",
        "http://[::ffff:127.0.0.1]/",
        "http://localhost:8080/admin",
        "https://10.0.0.7/internal.pdf",
    ],
)
async def test_a_report_link_to_an_internal_host_is_refused_while_the_api_is_public(
    api: mocked, client: ImagetwinClient, tmp_path: Path, link: str
) -> None:
    """A lying or compromised service names an address inside the caller's network (SSRF):
    nothing is fetched, nothing is written."""
    with pytest.raises(InvalidArgument, match="internal host"):
        await client.download_report(link, tmp_path / "r.pdf")
    assert api.requests == {}
    assert list(tmp_path.iterdir()) == []


async def test_a_report_redirected_to_an_internal_host_is_refused_at_that_hop(
    api: mocked, client: ImagetwinClient, tmp_path: Path
) -> None:
    metadata = "http://169.254.169.254/latest/meta-data/"
    api.get(str(RESULT["pdfReport"]), status=302, headers={"Location": metadata})
    api.get(metadata, body=b"secret-instance-credentials")
    with pytest.raises(TransportError, match="internal host"):
        await client.download_report(str(RESULT["pdfReport"]), tmp_path / "r.pdf")
    assert calls(api, "GET", metadata) == []
    assert list(tmp_path.iterdir()) == []


async def test_a_report_redirected_on_a_public_host_is_followed(
    api: mocked, client: ImagetwinClient, tmp_path: Path
) -> None:
    moved = "https://cdn.imagetwin.example/reports/r.pdf"
    api.get(str(RESULT["pdfReport"]), status=301, headers={"Location": moved})
    api.get(moved, body=b"%PDF-1.4\n%%EOF\n", content_type="application/pdf")
    path = await client.download_report(str(RESULT["pdfReport"]), tmp_path / "r.pdf")
    assert path.read_bytes() == b"%PDF-1.4\n%%EOF\n"


# ---- errors, retries and the Money rule -------------------------------------------------


@pytest.mark.parametrize(("status", "error"), [(400, BadRequest), (401, AuthenticationError)])
async def test_client_errors_are_not_retried(
    api: mocked, client: ImagetwinClient, pdf: Path, status: int, error: type[Exception]
) -> None:
    api.post(f"{API}/scan", status=status, payload={"message": "no"}, repeat=True)
    with pytest.raises(error):
        await client.scan(pdf)
    assert len(calls(api, "POST", f"{API}/scan")) == 1


async def test_the_key_never_reaches_an_exception_or_a_log_line(
    api: mocked, client: ImagetwinClient, pdf: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A server that echoes the Authorization header back in its error message.
    api.post(f"{API}/scan", status=401, payload={"message": f"bad key Bearer {KEY}"})
    caplog.set_level(logging.DEBUG, logger="imagetwin_async")
    with pytest.raises(AuthenticationError) as info:
        await client.scan(pdf)
    exc = info.value
    for text in (str(exc), repr(exc), exc.server_message or "", *map(str, exc.args)):
        assert KEY not in text
    assert "[redacted]" in str(exc)
    assert caplog.records, "requests are logged at DEBUG"
    assert all(KEY not in r.getMessage() for r in caplog.records)
    assert any("POST /scan -> 401 (attempt 1" in r.getMessage() for r in caplog.records)


async def test_the_key_is_redacted_from_any_answer_even_a_redirect(
    api: mocked, client: ImagetwinClient
) -> None:
    api.get(f"{API}/result/{SCAN_ID}", status=302, body=f"you sent: Bearer {KEY}")
    with pytest.raises(APIError) as info:
        await client.get_result(SCAN_ID)
    assert KEY not in str(info.value)
    assert len(calls(api, "GET", f"{API}/result/{SCAN_ID}")) == 1  # no redirect followed


@pytest.mark.looptime
async def test_429_with_retry_after_is_waited_out_then_retried(
    api: mocked, client: ImagetwinClient, pdf: Path
) -> None:
    api.post(f"{API}/scan", status=429, headers={"Retry-After": "7"})
    api.post(f"{API}/scan", payload=STARTED)
    loop = asyncio.get_running_loop()
    before = loop.time()
    started = await client.scan(pdf)
    assert started.scan_id == SCAN_ID
    assert loop.time() - before >= 7.0
    assert len(calls(api, "POST", f"{API}/scan")) == 2


@pytest.mark.looptime
async def test_429_as_an_http_date_is_honoured(
    api: mocked, client: ImagetwinClient, pdf: Path
) -> None:

    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    api.post(f"{API}/scan", status=429, headers={"Retry-After": format_datetime(when, usegmt=True)})
    api.post(f"{API}/scan", payload=STARTED)
    loop = asyncio.get_running_loop()
    before = loop.time()
    await client.scan(pdf)
    assert loop.time() - before >= 28.0


@pytest.mark.looptime
async def test_429_slows_the_whole_endpoint_not_one_request(
    api: mocked, client: ImagetwinClient
) -> None:
    url = f"{API}/result/{SCAN_ID}"
    api.get(url, status=429, headers={"Retry-After": "10"})
    api.get(url, status=202, repeat=True)
    loop = asyncio.get_running_loop()
    first = asyncio.create_task(client.get_result(SCAN_ID))
    while client.limits["result"].paused_for == 0:
        await asyncio.sleep(0.001)
    paused_at = loop.time()
    # Another caller, who never saw the 429, waits out the same pause.
    await client.get_result(SCAN_ID)
    assert loop.time() - paused_at >= 9.9
    await first


@pytest.mark.looptime
async def test_429_after_retries_are_spent_raises_rate_limited(
    api: mocked, client: ImagetwinClient
) -> None:
    api.get(f"{API}/result/{SCAN_ID}", status=429, repeat=True)
    with pytest.raises(RateLimited) as info:
        await client.get_result(SCAN_ID)
    assert info.value.status == 429
    assert len(calls(api, "GET", f"{API}/result/{SCAN_ID}")) == 4  # 1 + max_retries


async def test_503_with_retry_after_on_a_scan_is_retried(
    api: mocked, client: ImagetwinClient, pdf: Path
) -> None:
    # Retry-After: the service itself says it took nothing and to come back.
    api.post(f"{API}/scan", status=503, headers={"Retry-After": "0"})
    api.post(f"{API}/scan", payload=STARTED)
    assert (await client.scan(pdf)).scan_id == SCAN_ID
    assert len(calls(api, "POST", f"{API}/scan")) == 2


async def test_503_until_retries_are_spent_raises_service_unavailable(
    api: mocked, client: ImagetwinClient, pdf: Path
) -> None:
    api.post(f"{API}/scan", status=503, headers={"Retry-After": "0"}, repeat=True)
    with pytest.raises(ServiceUnavailable):
        await client.scan(pdf)
    assert len(calls(api, "POST", f"{API}/scan")) == 4


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_a_gateway_error_on_a_scan_is_ambiguous_and_never_retried(
    api: mocked, client: ImagetwinClient, pdf: Path, status: int
) -> None:
    api.post(f"{API}/scan", status=status, repeat=True)
    with pytest.raises(AmbiguousSubmission, match="may have started"):
        await client.scan(pdf)
    assert len(calls(api, "POST", f"{API}/scan")) == 1


async def test_504_on_a_read_is_retried(api: mocked, client: ImagetwinClient) -> None:
    api.get(f"{API}/result/{SCAN_ID}", status=504)
    api.get(f"{API}/result/{SCAN_ID}", payload=RESULT)
    assert isinstance(await client.get_result(SCAN_ID), ScanResult)


async def test_a_dropped_connection_after_sending_a_scan_is_ambiguous(
    api: mocked, client: ImagetwinClient, pdf: Path
) -> None:
    api.post(f"{API}/scan", exception=aiohttp.ServerDisconnectedError(), repeat=True)
    with pytest.raises(AmbiguousSubmission) as info:
        await client.scan(pdf)
    assert info.value.scan_may_have_started
    assert len(calls(api, "POST", f"{API}/scan")) == 1


async def test_a_refused_connection_is_retried_even_for_a_scan(
    api: mocked, client: ImagetwinClient, pdf: Path
) -> None:
    refused = aiohttp.ClientConnectorError(
        aiohttp.client_reqrep.ConnectionKey("api", 443, True, None, None, None, None),
        ConnectionRefusedError(111, "Connection refused"),
    )
    api.post(f"{API}/scan", exception=refused)
    api.post(f"{API}/scan", payload=STARTED)
    assert (await client.scan(pdf)).scan_id == SCAN_ID
    assert len(calls(api, "POST", f"{API}/scan")) == 2


async def test_network_failures_on_reads_give_up_with_transport_error(
    api: mocked, client: ImagetwinClient
) -> None:
    api.get(f"{API}/result/{SCAN_ID}", exception=aiohttp.ServerDisconnectedError(), repeat=True)
    with pytest.raises(TransportError, match="gave up after 4 attempts"):
        await client.get_result(SCAN_ID)


# ---- the limiter as the caller sees it --------------------------------------------------


async def test_block_false_raises_at_once_when_no_slot_is_free(api: mocked, pdf: Path) -> None:
    api.post(f"{API}/scan", payload=STARTED, repeat=True)
    async with ImagetwinClient(KEY, base_url=API, scan_limit=RateLimit(2, per=60.0)) as client:
        await client.scan(pdf, block=False)
        await client.scan(pdf, block=False)
        assert client.limits["scan"].available == 0
        with pytest.raises(RateLimitBusy) as info:
            await client.scan(pdf, block=False)
    assert info.value.status == 429
    assert info.value.retry_after is not None
    assert 59.0 < info.value.retry_after <= 61.0
    assert len(calls(api, "POST", f"{API}/scan")) == 2


async def test_limits_are_readable(client: ImagetwinClient) -> None:
    scan, result = client.limits["scan"], client.limits["result"]
    assert (scan.requests, scan.per, scan.available) == (20, 60.0, 20)
    assert (result.requests, result.available, result.next_slot_in) == (60, 60, 0.0)
