"""The sans-I/O core: request building and answer reading, no event loop, no network."""

from __future__ import annotations

import datetime as dt
import json
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagetwin_async import _spec
from imagetwin_async._errors import (
    AmbiguousSubmission,
    APIError,
    AuthenticationError,
    BadRequest,
    ImagetwinError,
    InvalidArgument,
    InvalidUpload,
    RateLimited,
    ResponseFormatError,
    ScanFailed,
    ScanNotFound,
    ServerError,
    ServiceUnavailable,
    TransportError,
)
from imagetwin_async._models import ScanOverview, ScanPending, ScanResult, ScanStarted
from imagetwin_async._protocol import (
    Delivery,
    Request,
    RetryDecision,
    ambiguous_error,
    build_overview_request,
    build_result_request,
    build_scan_request,
    error_for_status,
    failure_decision,
    nothing_started,
    parse_retry_after,
    read_overview,
    read_result,
    read_scan_started,
    report_link_refusal,
    retry_decision,
    server_message,
)

SCAN_ID = _spec.SANDBOX_FINISHED_ID
RESULT = {
    "scanId": SCAN_ID,
    "alterationCount": 0,
    "localDuplicateCount": 2,
    "externDuplicateCount": 0,
    "aiImageCount": 0,
    "pdfReport": "https://app.imagetwin.ai/pdfreport/e590.pdf",
    "resultUrl": "https://app.imagetwin.ai/result/e590",
    "minScore": 0.33,
    "highestScore": 0.99,
}


def body(data: object) -> bytes:
    return json.dumps(data).encode()


# ---- building requests ------------------------------------------------------------------


def test_scan_request_carries_the_options_in_the_vendors_names() -> None:
    request = build_scan_request(
        min_score=0.5, callback_url="https://example.org/cb", exclude_identical_paper=True
    )
    assert (request.method, request.path, request.file_field) == ("POST", "scan", "file")
    assert dict(request.form_fields) == {
        "minScore": "0.5",
        "callbackUrl": "https://example.org/cb",
        "excludeIdenticalPaper": "true",
    }
    assert request.starts_scan and request.group == "scan"
    assert request.endpoint == "POST /scan"


def test_scan_request_without_options_sends_no_fields() -> None:
    assert build_scan_request().form_fields == ()
    assert dict(build_scan_request(exclude_identical_paper=False).form_fields) == {
        "excludeIdenticalPaper": "false"
    }


def test_sandbox_scans_are_free_so_they_may_be_retried() -> None:
    request = build_scan_request(sandbox=True)
    assert request.path == "sandbox/scan"
    assert not request.starts_scan


@pytest.mark.parametrize(("legacy", "field"), [("scanPdf", "pdfFile"), ("scanImages", "imageFile")])
def test_deprecated_endpoints_use_their_own_file_fields(legacy: str, field: str) -> None:
    request = build_scan_request(legacy=legacy)  # type: ignore[arg-type]
    assert (request.path, request.file_field, request.starts_scan) == (legacy, field, True)


def test_deprecated_endpoints_take_no_options() -> None:
    with pytest.raises(InvalidArgument, match="takes no options"):
        build_scan_request(legacy="scanPdf", min_score=0.5)


@pytest.mark.parametrize("score", [-0.01, 0.91, 1.0, float("nan"), float("inf"), True, "0.5"])
def test_min_score_outside_the_references_range_is_refused(score: object) -> None:
    with pytest.raises(InvalidUpload, match="min_score"):
        build_scan_request(min_score=score)  # type: ignore[arg-type]


@given(st.floats(min_value=0.0, max_value=0.9))
def test_every_min_score_in_range_is_sent_exactly(score: float) -> None:
    ((name, value),) = build_scan_request(min_score=score).form_fields
    assert name == "minScore" and float(value) == score


@pytest.mark.parametrize("url", ["ftp://x.org/cb", "/relative", "http://", "not a url"])
def test_callback_url_must_be_absolute_http(url: str) -> None:
    with pytest.raises(InvalidArgument, match="callback_url"):
        build_scan_request(callback_url=url)


def test_result_request() -> None:
    request = build_result_request(SCAN_ID)
    assert (request.method, request.path, request.group) == ("GET", f"result/{SCAN_ID}", "result")
    assert request.endpoint == "GET /result/{scanId}"


@pytest.mark.parametrize("scan_id", ["", "../scan", "a/b", "id?x=1", "x" * 129, None])
def test_scan_ids_that_would_change_the_url_are_refused(scan_id: object) -> None:
    with pytest.raises(InvalidArgument, match="not a scan id"):
        build_result_request(scan_id)  # type: ignore[arg-type]


def test_overview_request_takes_dates_strings_and_datetimes() -> None:
    request = build_overview_request(
        dt.date(2025, 4, 10),
        dt.datetime(2025, 4, 12, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-2))),
        "csv",
    )
    assert dict(request.params) == {
        "startDate": "2025-04-10",
        "endDate": "2025-04-13",  # 23:30 at UTC-2 is the 13th in UTC, where the server counts
        "exportFormat": "csv",
    }
    assert build_overview_request("2025-01-01", "2025-01-01").params[0] == (
        "startDate",
        "2025-01-01",
    )


@pytest.mark.parametrize(
    ("start", "end", "fmt", "match"),
    [
        ("2025-02-01", "2025-01-01", "json", "after"),
        ("01/02/2025", "2025-01-01", "json", "start_date"),
        ("2025-01-01", 20250101, "json", "end_date"),
        ("2025-01-01", "2025-01-02", "xml", "export_format"),
    ],
)
def test_bad_overview_arguments_are_refused(
    start: object, end: object, fmt: str, match: str
) -> None:
    with pytest.raises(InvalidArgument, match=match):
        build_overview_request(start, end, fmt)  # type: ignore[arg-type]


# ---- reading answers --------------------------------------------------------------------


def test_scan_started() -> None:
    request = build_scan_request()
    started = read_scan_started(
        200, {}, body({"scanId": SCAN_ID, "message": "Scan started successfully."}), request=request
    )
    assert started == ScanStarted(SCAN_ID, "Scan started successfully.")


def test_result_200_is_a_typed_result() -> None:
    result = read_result(200, {}, body(RESULT), request=build_result_request(SCAN_ID))
    assert isinstance(result, ScanResult)
    assert (result.local_duplicate_count, result.highest_score, result.min_score) == (2, 0.99, 0.33)
    assert result.finding_count == 2 and not result.clean


def test_result_202_is_pending_not_an_error() -> None:
    assert read_result(202, {}, b"", request=build_result_request(SCAN_ID)) == ScanPending(SCAN_ID)


def test_results_from_before_newer_fields_still_parse() -> None:
    old = {k: v for k, v in RESULT.items() if k not in ("aiImageCount", "highestScore")}
    result = read_result(200, {}, body(old), request=build_result_request(SCAN_ID))
    assert isinstance(result, ScanResult)
    assert result.ai_image_count is None and result.highest_score is None


@given(
    st.dictionaries(
        st.text(min_size=1).filter(lambda k: k not in RESULT),
        st.one_of(st.none(), st.integers(), st.text(), st.lists(st.integers())),
        max_size=5,
    )
)
def test_unknown_fields_never_break_parsing(extra: dict[str, object]) -> None:
    result = read_result(200, {}, body({**RESULT, **extra}), request=build_result_request(SCAN_ID))
    assert isinstance(result, ScanResult) and result.scan_id == SCAN_ID


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"alterationCount": "none"}, "$.alterationCount"),
        ({"localDuplicateCount": 1.5}, "$.localDuplicateCount"),
        ({"minScore": True}, "$.minScore"),
        ({"pdfReport": None}, "$.pdfReport"),
    ],
)
def test_a_bad_field_is_named_in_the_error(change: dict[str, object], path: str) -> None:
    with pytest.raises(ResponseFormatError) as info:
        read_result(200, {}, body({**RESULT, **change}), request=build_result_request(SCAN_ID))
    assert info.value.path == path
    assert path in str(info.value)


def test_a_missing_field_is_named() -> None:
    data = dict(RESULT)
    del data["resultUrl"]
    with pytest.raises(ResponseFormatError, match=r"\$\.resultUrl"):
        read_result(200, {}, body(data), request=build_result_request(SCAN_ID))


@pytest.mark.parametrize("raw", [b"", b"<html>", b"[]", b"null", b"[" * 100_000])
def test_a_body_that_is_not_a_json_object_is_a_format_error(raw: bytes) -> None:
    with pytest.raises(ResponseFormatError):
        read_result(200, {}, raw, request=build_result_request(SCAN_ID))


def test_overview_json_is_typed_and_utc() -> None:
    data = {
        "startDate": "2025-04-10",
        "endDate": "2025-04-12",
        "scans": [
            {
                "scanId": "1625b21d-0492-44b5-83bb-76161ab116eb",
                "scanDate": "2025-04-10T13:54:05",
                "user": "someone@example.org",
                "freeOfCharge": False,
                "apiScan": True,
            }
        ],
    }
    request = build_overview_request("2025-04-10", "2025-04-12")
    overview = read_overview(200, {}, body(data), request=request)
    assert isinstance(overview, ScanOverview)
    (scan,) = overview.scans
    assert scan.scan_date == dt.datetime(2025, 4, 10, 13, 54, 5, tzinfo=dt.UTC)
    assert scan.api_scan and not scan.free_of_charge


def test_overview_csv_is_the_text_as_sent() -> None:
    request = build_overview_request("2025-04-10", "2025-04-12", "csv")
    text = "scanId,scanDate\nabc,2025-04-10T13:54:05\n"
    assert read_overview(200, {}, text.encode(), request=request) == text


# ---- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "request_", "error"),
    [
        (400, build_scan_request(), BadRequest),
        (401, build_scan_request(), AuthenticationError),
        (404, build_result_request(SCAN_ID), ScanNotFound),
        (429, build_result_request(SCAN_ID), RateLimited),
        (500, build_result_request(SCAN_ID), ScanFailed),
        (500, build_scan_request(), ServerError),
        (502, build_scan_request(), ServerError),
        (503, build_scan_request(), ServiceUnavailable),
        (504, build_result_request(SCAN_ID), ServiceUnavailable),
        (418, build_scan_request(), APIError),
    ],
)
def test_each_status_of_the_reference_maps_to_its_error(
    status: int, request_: Request, error: type[APIError]
) -> None:
    exc = error_for_status(status, {}, body({"message": "nope"}), request=request_)
    assert type(exc) is error
    assert exc.status == status
    assert exc.endpoint == request_.endpoint
    assert exc.server_message == "nope"
    assert "nope" in str(exc)


def test_500_from_the_result_endpoint_raises_scan_failed() -> None:
    with pytest.raises(ScanFailed):
        read_result(500, {}, b"", request=build_result_request(SCAN_ID))


def test_404_from_the_result_endpoint_raises_scan_not_found() -> None:
    with pytest.raises(ScanNotFound):
        read_result(404, {}, body({"message": "No result"}), request=build_result_request(SCAN_ID))


def test_error_carries_retry_after() -> None:
    exc = error_for_status(429, {"retry-after": "7"}, b"", request=build_scan_request())
    assert exc.retry_after == 7.0


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        (b'{"message": "Invalid file type"}', "Invalid file type"),
        (b'{"detail": "x"}', "x"),
        (b"plain words", "plain words"),
        (b"", None),
        (b"x" * 5000, "x" * 500),
    ],
)
def test_server_message(raw: bytes, said: str | None) -> None:
    assert server_message(raw) == said


# ---- Retry-After ------------------------------------------------------------------------

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


@given(st.integers(min_value=0, max_value=10**6))
def test_retry_after_in_seconds(seconds: int) -> None:
    assert parse_retry_after(str(seconds), now=NOW) == float(seconds)


@given(st.integers(min_value=0, max_value=10**5))
def test_retry_after_as_an_http_date(seconds: int) -> None:
    header = format_datetime(NOW + dt.timedelta(seconds=seconds), usegmt=True)
    assert parse_retry_after(header, now=NOW) == float(seconds)


def test_retry_after_in_the_past_is_zero_and_garbage_is_none() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=NOW) == 0.0
    assert parse_retry_after("soon", now=NOW) is None
    assert parse_retry_after("-5", now=NOW) is None
    assert parse_retry_after(None) is None


# ---- what may be retried (the Money rule) -----------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "scan", "decision"),
    [
        (429, {}, True, RetryDecision.RETRY_RATE_LIMITED),
        (429, {}, False, RetryDecision.RETRY_RATE_LIMITED),
        (503, {"Retry-After": "5"}, True, RetryDecision.RETRY),
        (504, {"Retry-After": "5"}, True, RetryDecision.RETRY),
        (503, {}, True, RetryDecision.AMBIGUOUS),
        (504, {}, True, RetryDecision.AMBIGUOUS),
        (502, {}, True, RetryDecision.AMBIGUOUS),
        (502, {"Retry-After": "5"}, True, RetryDecision.AMBIGUOUS),
        (503, {}, False, RetryDecision.RETRY),
        (504, {}, False, RetryDecision.RETRY),
        (502, {}, False, RetryDecision.RETRY),
        (500, {}, True, RetryDecision.RAISE),
        (500, {}, False, RetryDecision.RAISE),
        (400, {}, True, RetryDecision.RAISE),
        (401, {}, False, RetryDecision.RAISE),
        (404, {}, False, RetryDecision.RAISE),
    ],
)
def test_retry_decision(
    status: int, headers: dict[str, str], scan: bool, decision: RetryDecision
) -> None:
    request = build_scan_request() if scan else build_result_request(SCAN_ID)
    assert retry_decision(status, headers, request=request) is decision


def test_an_unreadable_success_keeps_its_scan_id() -> None:
    raw = body({"scanId": SCAN_ID, "message": None})
    assert read_scan_started(200, {}, raw, request=build_scan_request()) == ScanStarted(SCAN_ID, "")


@pytest.mark.parametrize("raw", [b"<html>ok</html>", b'{"scanId": 5}', b"[" * 100_000])
def test_an_unreadable_success_without_a_scan_id_is_ambiguous(raw: bytes) -> None:
    with pytest.raises(AmbiguousSubmission, match="unreadable"):
        read_scan_started(200, {}, raw, request=build_scan_request())


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirected_scan_post_is_ambiguous_and_a_redirected_read_is_final(status: int) -> None:
    """A lying server or gateway answers the upload with a redirect: no proof either way."""
    headers = {"Location": "https://elsewhere.example/scan"}
    assert retry_decision(status, headers, request=build_scan_request()) is (
        RetryDecision.AMBIGUOUS
    )
    assert retry_decision(status, headers, request=build_result_request(SCAN_ID)) is (
        RetryDecision.RAISE
    )


def test_sandbox_scan_504_is_retried_because_it_is_free() -> None:
    assert retry_decision(504, {}, request=build_scan_request(sandbox=True)) is RetryDecision.RETRY


def test_ambiguous_error_says_what_to_do() -> None:
    exc = ambiguous_error(build_scan_request(), "the connection dropped")
    assert isinstance(exc, AmbiguousSubmission) and exc.scan_may_have_started
    assert "scan_overview" in str(exc)


@pytest.mark.parametrize("retry_after", [False, True])
@pytest.mark.parametrize("status", range(300, 600))
def test_a_scan_error_proves_nothing_started_only_when_it_was_a_refusal(
    status: int, retry_after: bool
) -> None:
    # A gateway in front of the service may answer anything: whatever error a scan POST ends
    # with, a batch forgets (and may resend) the item only if the error proves no scan started,
    # and that is the very rule by which the session retried it.
    request = build_scan_request()
    headers = {"Retry-After": "5"} if retry_after else {}
    if retry_decision(status, headers, request=request) is RetryDecision.AMBIGUOUS:
        error: ImagetwinError = ambiguous_error(request, f"the gateway answered {status}")
    else:
        error = error_for_status(status, headers, b"", request=request)
    # A redirect is no refusal: 303 "See Other" is how a server says "created, look there".
    refused = 400 <= status < 500 or (status in (503, 504) and retry_after)
    assert nothing_started(error) is refused


@pytest.mark.parametrize(
    ("delivery", "scan", "decision"),
    [
        (Delivery.NOT_SENT, True, RetryDecision.RETRY),
        (Delivery.NOT_SENT, False, RetryDecision.RETRY),
        (Delivery.MAYBE_SENT, True, RetryDecision.AMBIGUOUS),
        (Delivery.MAYBE_SENT, False, RetryDecision.RETRY),
    ],
)
def test_failure_decision_resends_a_scan_post_only_if_it_never_connected(
    delivery: Delivery, scan: bool, decision: RetryDecision
) -> None:
    request = build_scan_request() if scan else build_result_request(SCAN_ID)
    assert failure_decision(delivery, request=request) is decision
    error = TransportError("lost", scan_may_have_started=decision is RetryDecision.AMBIGUOUS)
    assert nothing_started(error) is (decision is not RetryDecision.AMBIGUOUS)


def test_a_bad_argument_proves_nothing_started() -> None:
    assert nothing_started(InvalidUpload("too big"))
    assert not nothing_started(ImagetwinError("something else"))


PUBLIC_API = "https://api.imagetwin.ai/v1"


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.1",
        "2130706433",
        "0x7f.0.0.1",
        "[::1]",
        "[::ffff:10.1.2.3]",
        "0.0.0.0",
        "169.254.169.254",
        "192.168.1.1",
        "172.16.0.1",
        "100.64.0.1",
        "localhost",
        "db.localhost.",
    ],
)
def test_a_report_link_to_an_internal_host_is_refused_only_when_the_api_is_public(
    host: str,
) -> None:
    link = f"http://{host}/r.pdf"
    assert "internal host" in (
        report_link_refusal(link, api_url="https://api.imagetwin.ai/v1") or ""
    )
    # An emulator or a proxy inside the network serves its reports from there too.
    assert report_link_refusal(link, api_url="http://127.0.0.1:8080/v1") is None
    assert report_link_refusal(link, api_url="http://10.0.0.2/v1") is None


@pytest.mark.parametrize(
    "link",
    ["https://reports.imagetwin.ai/x.pdf", "http://8.8.8.8/r.pdf", "https://[2606:4700::1]/r"],
)
def test_a_report_link_to_a_public_host_is_fetched(link: str) -> None:
    assert report_link_refusal(link, api_url=PUBLIC_API) is None


@pytest.mark.parametrize("link", ["ftp://reports.example/r.pdf", "file:///etc/passwd", "/r.pdf"])
def test_a_report_link_that_is_not_http_is_refused(link: str) -> None:
    assert "not a downloadable URL" in (
        report_link_refusal(link, api_url="https://api.imagetwin.ai/v1") or ""
    )
