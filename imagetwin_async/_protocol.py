"""The sans-I/O core: what to send for each endpoint, and what an answer means.

Pure functions over plain values, no event loop, no network. ``build_*`` turn a call into a
``Request``; ``read_*`` turn ``(status, headers, body)`` into a model or raise the error of
``_errors`` that the status means; ``retry_decision`` says whether an answer may be retried
without risking a second, billed scan.

    >>> request = build_result_request("d904c907...")
    >>> read_result(202, {}, b"", scan_id="d904c907...")
    ScanPending(scan_id='d904c907...')
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import ipaddress
import json
import math
import os
import re
import socket
import urllib.parse
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any, Literal, TypeVar

import attrs

from . import _spec
from ._convert import structure
from ._errors import (
    AmbiguousSubmission,
    APIError,
    AuthenticationError,
    BadRequest,
    ImagetwinError,
    InvalidArgument,
    InvalidUpload,
    RateLimited,
    ResponseFormatError,
    ResponseTooLarge,
    ScanFailed,
    ScanNotFound,
    ServerError,
    ServiceUnavailable,
    TransportError,
)
from ._models import ScanOverview, ScanPending, ScanResult, ScanStarted

__all__ = [
    "Delivery",
    "EndpointGroup",
    "ExportFormat",
    "Request",
    "RetryDecision",
    "build_overview_request",
    "build_result_request",
    "build_scan_request",
    "error_for_status",
    "failure_decision",
    "nothing_started",
    "oversized_answer",
    "parse_retry_after",
    "read_overview",
    "read_result",
    "read_scan_started",
    "report_target",
    "retry_decision",
    "server_message",
    "validate_callback_url",
    "validate_min_score",
    "validate_scan_id",
]

T = TypeVar("T")
EndpointGroup = Literal["scan", "result", "other"]
ExportFormat = Literal["json", "csv"]
LegacyEndpoint = Literal["scanPdf", "scanImages"]

_MAX_MESSAGE = 500  # characters of a server message kept on an exception
_MAX_CALLBACK_URL = 2048  # what browsers and most servers take; the API documents no limit


@attrs.frozen
class Request:
    """One HTTP request, before any I/O: the session layer sends it as it stands.

    ``path`` is relative to the client's base URL. ``file_field`` names the multipart part the
    upload goes in (None: no body). ``starts_scan`` marks a POST that bills a scan: it is never
    retried unless the answer proves no scan started. ``max_body``: the longest answer read
    (decompressed bytes); past it ``oversized_answer`` says what that means.
    """

    method: Literal["GET", "POST"]
    path: str
    group: EndpointGroup
    params: tuple[tuple[str, str], ...] = ()
    form_fields: tuple[tuple[str, str], ...] = ()
    file_field: str | None = None
    starts_scan: bool = False
    max_body: int = _spec.MAX_ANSWER_BYTES

    @property
    def endpoint(self) -> str:
        """Method and path template, for logs and errors (``POST /scan``, ``GET /result``)."""
        path = "/result/{scanId}" if self.path.startswith("result/") else f"/{self.path}"
        return f"{self.method} {path}"


def validate_min_score(min_score: float | None) -> float | None:
    """``min_score`` as the API takes it, or ``InvalidUpload`` if outside 0.0-0.9."""
    if min_score is None:
        return None
    low, high = _spec.MIN_SCORE_RANGE
    if (
        isinstance(min_score, bool)
        or not isinstance(min_score, int | float)
        or not math.isfinite(min_score)
        or not low <= min_score <= high
    ):
        raise InvalidUpload(f"min_score must be a number from {low} to {high}, got {min_score!r}")
    return float(min_score)


def build_scan_request(
    *,
    min_score: float | None = None,
    callback_url: str | None = None,
    exclude_identical_paper: bool | None = None,
    sandbox: bool = False,
    legacy: LegacyEndpoint | None = None,
) -> Request:
    """The POST that starts a scan; the upload's parts go in ``Request.file_field``.

    ``legacy`` picks a deprecated endpoint (``scanPdf`` / ``scanImages``), which takes none of
    the options of ``/scan``.
    """
    if legacy is not None:
        if sandbox or min_score is not None or callback_url or exclude_identical_paper is not None:
            raise InvalidArgument(f"the deprecated {legacy} endpoint takes no options")
        field = "pdfFile" if legacy == "scanPdf" else "imageFile"
        return Request("POST", legacy, "scan", file_field=field, starts_scan=True)
    fields: list[tuple[str, str]] = []
    score = validate_min_score(min_score)
    if score is not None:
        fields.append(("minScore", repr(score)))
    if callback_url is not None:
        fields.append(("callbackUrl", validate_callback_url(callback_url)))
    if exclude_identical_paper is not None:
        if not isinstance(exclude_identical_paper, bool):
            raise InvalidArgument("exclude_identical_paper must be True, False or None")
        fields.append(("excludeIdenticalPaper", "true" if exclude_identical_paper else "false"))
    return Request(
        "POST",
        "sandbox/scan" if sandbox else "scan",
        "scan",
        form_fields=tuple(fields),
        file_field="file",
        # The sandbox is free and returns canned ids: retrying it costs nothing.
        starts_scan=not sandbox,
    )


def validate_callback_url(url: str) -> str:
    """``url`` if the service can POST to it, else ``InvalidArgument`` (nothing is sent).

    An absolute ``http``/``https`` URL with a host, at most 2048 characters, printable ASCII
    only (percent-encode the rest: a space, CR, LF or NUL would split the form field or the
    service's request), no ``user:password@`` (it would reach the service's logs), and a port
    that is a number.
    """
    if not isinstance(url, str):
        raise InvalidArgument(f"callback_url must be a string, got {type(url).__name__}")
    shown = url if len(url) <= 200 else url[:200] + "..."
    if len(url) > _MAX_CALLBACK_URL:
        raise InvalidArgument(f"callback_url is longer than {_MAX_CALLBACK_URL} characters")
    if not all("!" <= c <= "~" for c in url):
        raise InvalidArgument(
            f"callback_url must be printable ASCII without spaces (percent-encode the rest): "
            f"{shown!r}"
        )
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # a non-numeric or out-of-range port raises here
    except ValueError as exc:
        raise InvalidArgument(f"callback_url is not a valid URL: {shown!r} ({exc})") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(f"callback_url must be an absolute http(s) URL, got {shown!r}")
    if "@" in parts.netloc:
        raise InvalidArgument("callback_url must not carry a user name or password")
    if port == 0:
        raise InvalidArgument(f"callback_url has port 0: {shown!r}")
    return url


def validate_scan_id(scan_id: str) -> str:
    """The scan id, or ``InvalidArgument`` if it could not be one (it goes in the URL path).

    A scan id is a 64-digit hex digest, or a UUID as the overview lists web scans.
    """
    if not isinstance(scan_id, str) or not _spec.SCAN_ID_PATTERN.fullmatch(scan_id):
        shown = scan_id[:80] + "..." if isinstance(scan_id, str) and len(scan_id) > 80 else scan_id
        raise InvalidArgument(f"not a scan id: {shown!r}")
    return scan_id


def build_result_request(scan_id: str) -> Request:
    """``GET /result/{scanId}``."""
    return Request("GET", f"result/{validate_scan_id(scan_id)}", "result")


def build_overview_request(
    start_date: dt.date | str, end_date: dt.date | str, export_format: ExportFormat = "json"
) -> Request:
    """``GET /scan-overview``: scans between two UTC dates, both included."""
    start, end = _as_date(start_date, "start_date"), _as_date(end_date, "end_date")
    if start > end:
        raise InvalidArgument(f"start_date {start} is after end_date {end}")
    if export_format not in ("json", "csv"):
        raise InvalidArgument(f"export_format must be 'json' or 'csv', got {export_format!r}")
    params = (
        ("startDate", start.isoformat()),
        ("endDate", end.isoformat()),
        ("exportFormat", export_format),
    )
    return Request(
        "GET", "scan-overview", "other", params=params, max_body=_spec.MAX_OVERVIEW_BYTES
    )


def _as_date(value: dt.date | str, name: str) -> dt.date:
    if isinstance(value, dt.datetime):
        # A datetime is a date too; take its UTC day, as the server stores dates in UTC.
        return (value.astimezone(dt.UTC) if value.tzinfo else value).date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise InvalidArgument(f"{name} must be a date or a 'YYYY-MM-DD' string, got {value!r}")


def _internal_host(host: str) -> bool:
    """Whether ``host`` names this machine or a private network (loopback, RFC 1918, link-local,
    carrier-grade NAT, unspecified, reserved), judged as written: ``localhost`` names, and
    addresses in any form a resolver accepts (``127.1``, ``2130706433``, ``0x7f.0.0.1``,
    ``::ffff:127.0.0.1``)."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(host)
    except ValueError:
        try:  # the legacy forms getaddrinfo still resolves, parsed without any lookup
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return False  # a name: judged by the resolver, not here (see report_link_refusal)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global


def report_link_refusal(link: str, *, api_url: str) -> str | None:
    """Why a report link (or a redirect on the way to one) must not be fetched; None: fetch it.

    The link is the server's word. A lying or compromised service could name an address
    inside the caller's network (cloud metadata at 169.254.169.254, a database on
    localhost) and have the client fetch it and write the answer to disk. So a link to an
    internal host is refused unless the API itself is on one (an emulator, a proxy inside the
    network: then the reports are too). Host names are judged as written, not resolved; a
    name that resolves inside the network is the resolver's to refuse.
    """
    parts = urllib.parse.urlsplit(link)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"not a downloadable URL: {link!r}"
    api_host = urllib.parse.urlsplit(api_url).hostname or ""
    if _internal_host(parts.hostname) and not _internal_host(api_host):
        return (
            f"the report link names an internal host ({parts.hostname!r}) while the API is "
            f"public ({api_host!r}): refused, a service must not make this client fetch "
            "addresses inside its network"
        )
    return None


def report_target(
    path: str | os.PathLike[str], *, is_dir: bool, scan_id: str | None, url: str
) -> Path:
    """Where ``download_report`` writes: ``path`` itself, or a file inside the folder ``path``.

    The file name inside a folder is ``<scan_id>.pdf`` when the id has a scan id's shape, else
    the report URL's own name when it is a plain ``[A-Za-z0-9_-]`` word, else ``report-`` and a
    hash of the URL: whatever the server sent, the file stays inside the folder.
    """
    target = Path(path)
    if not is_dir:
        return target
    stem = urllib.parse.unquote(urllib.parse.urlsplit(url).path).rpartition("/")[2]
    stem = stem.removesuffix(".pdf")
    if isinstance(scan_id, str) and _spec.SCAN_ID_PATTERN.fullmatch(scan_id):
        name = scan_id
    elif re.fullmatch(r"[A-Za-z0-9_-]{1,128}", stem):
        name = stem
    else:
        name = "report-" + hashlib.sha256(url.encode()).hexdigest()[:16]
    return target / f"{name}.pdf"


# ---- reading answers ---------------------------------------------------------------------


def oversized_answer(request: Request, status: int) -> Exception | None:
    """What an answer longer than ``request.max_body`` means; None: read its first bytes.

    An error answer is still that error (its message is cut). A success is unreadable: for
    a scan POST the scan may have started (``AmbiguousSubmission``, never resent), otherwise
    ``ResponseTooLarge``.
    """
    if status >= 300:
        return None
    why = f"the server's answer is larger than {request.max_body} bytes"
    if request.starts_scan:
        return ambiguous_error(request, f"the server accepted it but {why}")
    return ResponseTooLarge(f"{request.endpoint}: {why}", endpoint=request.endpoint)


def server_message(body: bytes) -> str | None:
    """What the server said in an error body: its JSON ``message``, else the text, shortened."""
    if not body:
        return None
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("message", "error", "detail"):
            if isinstance(data.get(key), str):
                text = data[key]
                break
    return text[:_MAX_MESSAGE] or None


def parse_retry_after(value: str | None, *, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date. None if absent
    or unreadable; never negative."""
    if value is None:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT; be lenient with a missing zone
        when = when.replace(tzinfo=dt.UTC)
    now = now or dt.datetime.now(dt.UTC)
    return max(0.0, (when - now).total_seconds())


_ERRORS: Mapping[int, type[APIError]] = {
    400: BadRequest,
    401: AuthenticationError,
    404: ScanNotFound,
    429: RateLimited,
    503: ServiceUnavailable,
    504: ServiceUnavailable,
}


def error_for_status(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    request: Request,
    now: dt.datetime | None = None,
) -> APIError:
    """The exception an error status means for this request (returned, not raised)."""
    cls: type[APIError]
    if status == 500 and request.group == "result":
        cls = ScanFailed
    elif status in _ERRORS:
        cls = _ERRORS[status]
    elif status >= 500:
        cls = ServerError
    else:
        cls = APIError
    said = server_message(body)
    what = {
        ScanFailed: "the scan failed on the server",
        ScanNotFound: "no result for this scan id",
        AuthenticationError: "the API key was refused",
        RateLimited: "rate limit exceeded",
    }.get(cls, f"HTTP {status}")
    return cls(
        f"{request.endpoint}: {what} ({status})" + (f": {said}" if said else ""),
        status=status,
        endpoint=request.endpoint,
        server_message=said,
        retry_after=parse_retry_after(_header(headers, "Retry-After"), now=now),
    )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:  # plain dicts in tests are not case-insensitive
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def _json(body: bytes, request: Request) -> Any:
    try:
        if body[:1] == b"{" and body[1:2] != b"\x00":
            # What json.loads(bytes) would detect (UTF-8: no BOM, no UTF-16/32 zero bytes),
            # decoded as it would, without its four probes.
            return json.loads(body.decode("utf-8", "surrogatepass"))
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # deep nesting exhausts the parser's stack
        raise ResponseFormatError(
            f"{request.endpoint}: the server's answer is not JSON", endpoint=request.endpoint
        ) from exc


def _read_object(body: bytes, cls: type[T], request: Request) -> T:
    data = _json(body, request)
    if not isinstance(data, dict):
        raise ResponseFormatError(
            f"{request.endpoint}: expected a JSON object, got {type(data).__name__}",
            endpoint=request.endpoint,
            path="$",
        )
    return structure(data, cls, endpoint=request.endpoint)


def read_scan_started(
    status: int, headers: Mapping[str, str], body: bytes, *, request: Request
) -> ScanStarted:
    """The answer to a scan POST: ``ScanStarted`` on 200 (or 201/202), else the error.

    A success we cannot read still started a (billed) scan: its ``scanId`` is taken if it is
    there at all, and otherwise the answer is an ``AmbiguousSubmission``, never an error that
    would invite a resend. A ``scanId`` not shaped as the reference shows (64 hex digits) is
    as good as none: it would become a URL path and a file name.
    """
    if status not in (200, 201, 202):
        raise error_for_status(status, headers, body, request=request)
    try:
        started = _read_object(body, ScanStarted, request)
    except ResponseFormatError as exc:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            data = None
        scan_id = data.get("scanId") if isinstance(data, dict) else None
        if isinstance(scan_id, str) and _spec.HEX_SCAN_ID_PATTERN.fullmatch(scan_id):
            message = data.get("message") if isinstance(data, dict) else None
            return ScanStarted(scan_id, message if isinstance(message, str) else "")
        if not request.starts_scan:
            raise
        raise ambiguous_error(
            request, f"the server accepted it but its answer is unreadable ({exc})"
        ) from exc
    if _spec.HEX_SCAN_ID_PATTERN.fullmatch(started.scan_id):
        return started
    bad = ResponseFormatError(
        f"{request.endpoint}: scanId {started.scan_id[:80]!r} is not a scan id",
        endpoint=request.endpoint,
        path="$.scanId",
    )
    if not request.starts_scan:
        raise bad
    raise ambiguous_error(request, f"the server accepted it but its answer is unreadable ({bad})")


def read_result(
    status: int, headers: Mapping[str, str], body: bytes, *, request: Request
) -> ScanResult | ScanPending:
    """``GET /result``: 200 a ``ScanResult``, 202 ``ScanPending``; 404 ``ScanNotFound``,
    500 ``ScanFailed``, others their error."""
    scan_id = request.path.removeprefix("result/")
    if status == 202:
        return ScanPending(scan_id)
    if status == 200:
        result = _read_object(body, ScanResult, request)
        if result.scan_id.lower() != scan_id.lower():
            # A result for another scan (a caching proxy, a server bug): never hand it out.
            raise ResponseFormatError(
                f"{request.endpoint}: asked for scan {scan_id} but the answer is for "
                f"{result.scan_id[:80]!r}",
                endpoint=request.endpoint,
                path="$.scanId",
            )
        return result
    raise error_for_status(status, headers, body, request=request)


def read_overview(
    status: int, headers: Mapping[str, str], body: bytes, *, request: Request
) -> ScanOverview | str:
    """``GET /scan-overview``: a ``ScanOverview`` for JSON, the text as sent for CSV."""
    if status != 200:
        raise error_for_status(status, headers, body, request=request)
    if ("exportFormat", "csv") in request.params:
        return body.decode("utf-8-sig", "replace")
    overview = _read_object(body, ScanOverview, request)
    for index, scan in enumerate(overview.scans):
        if not _spec.SCAN_ID_PATTERN.fullmatch(scan.scan_id):
            raise ResponseFormatError(
                f"{request.endpoint}: scanId {scan.scan_id[:80]!r} is not a scan id",
                endpoint=request.endpoint,
                path=f"$.scans[{index}].scanId",
            )
    return overview


# ---- retrying ---------------------------------------------------------------------------


class RetryDecision(Enum):
    """What to do with an answer that is not a success."""

    RAISE = "raise"  # final: hand the error to the caller
    RETRY = "retry"  # safe to send again after a back-off
    RETRY_RATE_LIMITED = "retry-rate-limited"  # 429: pause the whole endpoint, then send again
    AMBIGUOUS = "ambiguous"  # a scan may have started: never resend, tell the caller


class Delivery(Enum):
    """How far a request got when no answer came back (the session classifies its failures)."""

    NOT_SENT = "not-sent"  # no connection was made: the server saw nothing
    MAYBE_SENT = "maybe-sent"  # dropped or timed out after connecting: it may have arrived


def _refused(status: int, *, retry_after: bool) -> bool:
    """The one rule of money: whether an error answer proves the server started no scan.

    Any 4xx (429 included) is a refusal. A redirect is not: 303 "See Other" is how a server
    says "created, look there", and a gateway may redirect after taking the upload. Of the
    5xx, only a 503 or 504 carrying Retry-After: the service itself saying "not now, come
    back". Without it the answer may come from a gateway that gave up after the service took
    the request (proxies answer 503 when the upstream resets, 504 when it is slow), and a 500
    or 502 may come after the scan started.
    """
    return 400 <= status < 500 or (status in (503, 504) and retry_after)


def retry_decision(status: int, headers: Mapping[str, str], *, request: Request) -> RetryDecision:
    """Whether an error answer may be retried without risking a second billed scan.

    A 429 pauses the endpoint and is retried. Other errors are final except 502/503/504:
    GETs are idempotent, so any of those is retried; a scan POST is retried only where
    ``_refused`` proves no scan started, and is ambiguous otherwise. A redirect (redirects
    are never followed: the key would go along) is final for a read, and ambiguous for a scan
    POST, which it may have started.
    """
    if status < 400:
        return RetryDecision.AMBIGUOUS if request.starts_scan else RetryDecision.RAISE
    if status == 429:
        return RetryDecision.RETRY_RATE_LIMITED
    if status not in (502, 503, 504):
        return RetryDecision.RAISE
    if not request.starts_scan:
        return RetryDecision.RETRY
    if _refused(status, retry_after=_header(headers, "Retry-After") is not None):
        return RetryDecision.RETRY
    return RetryDecision.AMBIGUOUS


def failure_decision(delivery: Delivery, *, request: Request) -> RetryDecision:
    """Whether a request that got no answer may be sent again: ``retry_decision``'s twin.

    A request that never connected did nothing; anything else may have reached the server,
    which only matters for a scan POST.
    """
    if delivery is Delivery.NOT_SENT or not request.starts_scan:
        return RetryDecision.RETRY
    return RetryDecision.AMBIGUOUS


def nothing_started(error: ImagetwinError) -> bool:
    """Whether the error a scan POST ended with proves that no scan started (so it may be
    resent, and a journal may forget it).

    The same rule as ``retry_decision`` and ``failure_decision``, read back from the error
    they led to: a network failure says so itself (``scan_may_have_started``); an error
    answer was a refusal by ``_refused`` (a scan POST's 503/504 reaches the caller as
    ``ServiceUnavailable`` only when it carried Retry-After); a bad argument sent nothing.
    """
    if isinstance(error, TransportError):
        return not error.scan_may_have_started
    if isinstance(error, APIError):
        return _refused(error.status, retry_after=isinstance(error, ServiceUnavailable))
    return isinstance(error, InvalidArgument)  # raised before anything was sent


def ambiguous_error(request: Request, cause: str) -> AmbiguousSubmission:
    """The error for a scan POST whose fate is unknown."""
    return AmbiguousSubmission(
        f"{request.endpoint}: {cause}; the scan may have started (and be billed), so it was not "
        "retried. Check scan_overview for it, or resubmit knowingly.",
        endpoint=request.endpoint,
    )
