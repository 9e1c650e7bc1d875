"""The aiohttp application: the vendor's endpoints, the report host's pages, the control API.

Every API request goes through ``_Api.wrap``, in this order, so tests can reason about it:
record -> injected fault (503/504/404/drop-before) -> Bearer key (401) -> rate limit, counted on
receipt (429) -> the endpoint (400 on a broken limit; a scan is registered) -> injected fault
(drop-after/delay) -> answer. A 429 or 401 never reaches the endpoint, so it starts no scan.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import io
import re
from collections.abc import Awaitable, Callable
from datetime import date
from importlib import resources
from typing import TYPE_CHECKING, Final

from aiohttp import web

from ._faults import FaultKind
from ._multipart import SCAN, SCAN_IMAGES, SCAN_PDF, UploadRejected, UploadRules, read_upload
from ._records import Endpoint, RequestRecord
from ._report import render_pdf_report, render_result_page
from ._state import Scan, ScanStatus

if TYPE_CHECKING:
    from ._emulator import Emulator

__all__ = ["build_app"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ApiHandler = Callable[[web.Request, str, RequestRecord], Awaitable[web.StreamResponse]]

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_RATE_MESSAGES = {
    "scan": "Too many requests: the scan endpoint allows {n} requests per {per:g} seconds.",
    "result": "Too many requests: the result endpoint allows {n} requests per {per:g} seconds.",
    "overview": "Too many requests: the overview allows {n} requests per {per:g} seconds.",
}
_UNAVAILABLE = "The service is currently unavailable or under maintenance."
# Faults answered at the front door, and what they say.
_FRONT_DOOR: Final = {
    FaultKind.SERVICE_UNAVAILABLE: _UNAVAILABLE,
    FaultKind.GATEWAY_TIMEOUT: _UNAVAILABLE,
    FaultKind.NOT_FOUND: "No result found for this scan.",  # a replica that lags
}


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """Every error body is ``{"message": ...}``, as the real service answers."""
    return web.json_response({"message": message}, status=status, headers=headers)


def _parse_date(value: str) -> date | None:
    """Strictly YYYY-MM-DD (``date.fromisoformat`` alone would also take 20250410)."""
    if not _DATE.fullmatch(value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:  # 2025-02-30
        return None


@functools.cache
def openapi_document() -> bytes:
    return resources.files(__package__).joinpath("openapi.yaml").read_bytes()


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own 404/405 are plain text; keep the JSON error shape everywhere."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error(exc.status, exc.reason, headers)


class _Api:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu

    def wrap(self, endpoint: Endpoint, handler: ApiHandler) -> Handler:
        emu = self.emu
        group = endpoint.group

        async def wrapped(request: web.Request) -> web.StreamResponse:
            clock = emu.clock
            header = request.headers.get("Authorization")
            key = emu.authenticate(header)
            record = RequestRecord(
                request.method,
                request.path,
                endpoint,
                clock.now(),
                authorization=header is not None,
                carries_api_key=key is not None,
                user=None if key is None else emu.api_keys[key],
            )
            emu.requests.append(record)
            fault = emu.faults.take(endpoint) if emu.faults else None
            if fault is not None:
                emu.counters.faults_injected += 1
                record.fault = fault.kind.value
                if fault.kind in _FRONT_DOOR:  # answered before the key or the limit
                    headers = None
                    if fault.retry_after is not None:
                        headers = {"Retry-After": emu.retry_after_header(fault.retry_after)}
                    status = int(fault.kind)
                    return self._answer(record, error(status, _FRONT_DOOR[fault.kind], headers))
                if fault.kind is FaultKind.DROP_BEFORE:
                    return self._drop(request, record)
            if key is None:
                return self._answer(
                    record,
                    error(
                        401,
                        "Unauthorized: missing or invalid API key.",
                        {"WWW-Authenticate": "Bearer"},
                    ),
                )
            if group is not None:
                wait = emu.limiter.acquire(key, group, clock.epoch())
                if wait is not None:
                    counts = emu.counters.rate_limited
                    counts[endpoint.value] = counts.get(endpoint.value, 0) + 1
                    n, per = emu.limiter.limits[group]
                    headers = (
                        {"Retry-After": emu.retry_after_header(wait)} if emu.retry_after else None
                    )
                    message = _RATE_MESSAGES[group].format(n=n, per=per)
                    return self._answer(record, error(429, message, headers))
            try:
                response = await handler(request, key, record)
            except UploadRejected as exc:
                response = error(400, exc.message)
            if fault is not None:
                if fault.kind is FaultKind.DROP_AFTER:
                    return self._drop(request, record)
                if fault.kind is FaultKind.DELAY:
                    await asyncio.sleep(clock.to_real(fault.delay))
            return self._answer(record, response)

        return wrapped

    def _answer(self, record: RequestRecord, response: web.StreamResponse) -> web.StreamResponse:
        record.status = response.status
        record.answered_at = self.emu.clock.now()
        return response

    def _drop(self, request: web.Request, record: RequestRecord) -> web.StreamResponse:
        """Reset the connection: the client reads no status line at all."""
        record.dropped = True
        record.answered_at = self.emu.clock.now()
        if request.transport is not None:
            request.transport.abort()
        # aiohttp needs a response object; it is never written to the aborted transport.
        return web.Response(status=499)

    # -- scans -----------------------------------------------------------------------------

    def scan_handler(self, endpoint: Endpoint, rules: UploadRules) -> ApiHandler:
        emu = self.emu

        async def scan(request: web.Request, key: str, record: RequestRecord) -> web.Response:
            upload = await read_upload(request, rules, size_unit=emu.size_unit)
            record.file_names = tuple(f.name for f in upload.files)
            record.sha256 = tuple(f.sha256 for f in upload.files)
            if upload.unreadable and emu.corrupt_documents == "reject":
                return error(400, "The document could not be read.")
            if endpoint is Endpoint.SANDBOX_SCAN:
                record.scan_id = emu.sandbox_scan(upload)
            else:
                record.scan_id = emu.start_scan(key, endpoint, upload).scan_id
            return web.json_response(
                {"scanId": record.scan_id, "message": "Scan started successfully."}
            )

        return scan

    async def result(self, request: web.Request, key: str, record: RequestRecord) -> web.Response:
        scan_id = request.match_info["scan_id"]
        record.scan_id = scan_id
        scan = self.emu.lookup(scan_id, key)
        if scan is None:
            return error(404, f"No result found for scan {scan_id}.")
        status = scan.status(self.emu.clock.now())
        if status is ScanStatus.RUNNING:
            return web.json_response(
                {
                    "scanId": scan_id,
                    "status": "running",
                    "message": "The scan is still in progress.",
                },
                status=202,
            )
        if status is ScanStatus.FAILED:
            return error(500, "A server error occurred during processing the provided data.")
        f = scan.findings
        origin = f"{request.scheme}://{request.host}"
        return web.json_response(
            {
                "scanId": scan_id,
                "alterationCount": f.alteration_count,
                "localDuplicateCount": f.local_duplicate_count,
                "externDuplicateCount": f.extern_duplicate_count,
                "aiImageCount": f.ai_image_count,
                "pdfReport": f"{origin}/pdfreport/{scan.report_id}.pdf",
                "resultUrl": f"{origin}/result/{scan.report_id}",
                "minScore": scan.min_score,
                "highestScore": f.highest_score,
            }
        )

    async def overview(self, request: web.Request, key: str, record: RequestRecord) -> web.Response:
        query = request.query
        dates: list[date] = []
        for name in ("startDate", "endDate"):
            value = query.get(name)
            if value is None:
                return error(400, f"{name} is required, in YYYY-MM-DD format.")
            day = _parse_date(value)
            if day is None:
                return error(400, f"{name} must be a date in YYYY-MM-DD format, got {value!r}.")
            dates.append(day)
        start, end = dates
        if start > end:
            return error(400, "startDate must not be after endDate.")
        export_format = query.get("exportFormat", "json")
        if export_format not in {"json", "csv"}:
            return error(400, f"exportFormat must be json or csv, got {export_format!r}.")
        zone = self.emu.scan_date_zone
        rows = [
            row.as_json(zone)
            for row in self.emu.store.overview(self.emu.api_keys[key], start, end, zone)
        ]
        if export_format == "json":
            return web.json_response(
                {"startDate": start.isoformat(), "endDate": end.isoformat(), "scans": rows}
            )
        out = io.StringIO()
        fields = ["scanId", "scanDate", "user", "freeOfCharge", "apiScan"]
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\r\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: str(v).lower() if isinstance(v, bool) else v for k, v in row.items()}
            )
        filename = f"scan-overview_{start}_{end}.csv"
        return web.Response(
            text=out.getvalue(),
            content_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    # -- the report host (app.imagetwin.ai in production): no API key, ever ------------------

    def _page_record(self, request: web.Request, endpoint: Endpoint) -> RequestRecord:
        emu = self.emu
        # A client that leaks its key here might put it in any header or in the URL.
        haystack = " ".join([*request.headers.values(), request.path_qs])
        record = RequestRecord(
            request.method,
            request.path,
            endpoint,
            emu.clock.now(),
            authorization="Authorization" in request.headers,
            carries_api_key=any(key in haystack for key in emu.api_keys),
        )
        emu.requests.append(record)
        return record

    def _finished_scan(self, report_id: str) -> Scan | None:
        scan = self.emu.store.by_report.get(report_id)
        now = self.emu.clock.now()
        if scan is None or scan.status(now) is not ScanStatus.FINISHED or scan.expired(now):
            return None
        return scan

    async def pdf_report(self, request: web.Request) -> web.StreamResponse:
        record = self._page_record(request, Endpoint.PDF_REPORT)
        name = request.match_info["name"]
        scan = self._finished_scan(name.removesuffix(".pdf")) if name.endswith(".pdf") else None
        if scan is None:
            return self._answer(record, error(404, "Report not found."))
        record.scan_id = scan.scan_id
        if scan.report_pdf is None:
            scan.report_pdf = render_pdf_report(scan)  # built once, on first download
        response = web.Response(
            body=scan.report_pdf,
            content_type="application/pdf",
            headers={"Content-Disposition": f'inline; filename="{name}"'},
        )
        return self._answer(record, response)

    async def result_page(self, request: web.Request) -> web.StreamResponse:
        record = self._page_record(request, Endpoint.RESULT_PAGE)
        scan = self._finished_scan(request.match_info["report_id"])
        if scan is None:
            return self._answer(record, error(404, "Result not found."))
        record.scan_id = scan.scan_id
        return self._answer(
            record, web.Response(text=render_result_page(scan), content_type="text/html")
        )

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=openapi_document(), content_type="application/yaml")


def build_app(emu: Emulator) -> web.Application:
    """The whole emulator as an aiohttp application (also usable with aiohttp's TestServer)."""
    from ._control import add_control_routes  # noqa: PLC0415 - keeps the control API optional

    app = web.Application(middlewares=[_json_errors])
    api = _Api(emu)
    add = app.router.add_route
    for endpoint, rules in (
        (Endpoint.SCAN, SCAN),
        (Endpoint.SANDBOX_SCAN, SCAN),
        (Endpoint.SCAN_PDF, SCAN_PDF),
        (Endpoint.SCAN_IMAGES, SCAN_IMAGES),
    ):
        add("POST", f"/v1/{endpoint.value}", api.wrap(endpoint, api.scan_handler(endpoint, rules)))
    add("GET", "/v1/result/{scan_id}", api.wrap(Endpoint.RESULT, api.result))
    add("GET", "/v1/scan-overview", api.wrap(Endpoint.SCAN_OVERVIEW, api.overview))
    add("GET", "/v1/openapi.yaml", api.openapi)
    add("GET", "/openapi.yaml", api.openapi)
    add("GET", "/pdfreport/{name}", api.pdf_report)
    add("GET", "/result/{report_id}", api.result_page)
    if emu.control_api:
        add_control_routes(app, emu)
    return app
