"""What the emulator saw: typed records a test can assert on."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from .. import _spec

__all__ = [
    "CallbackRecord",
    "Counters",
    "Endpoint",
    "RequestRecord",
    "UploadedFile",
]


_DOCUMENT_SUFFIXES = tuple(_spec.DOCUMENT_EXTENSIONS)


class Endpoint(StrEnum):
    """Endpoints by their path under ``/v1`` (plus the report host's two pages)."""

    SCAN = "scan"
    SANDBOX_SCAN = "sandbox/scan"
    SCAN_PDF = "scanPdf"  # deprecated
    SCAN_IMAGES = "scanImages"  # deprecated
    RESULT = "result"
    SCAN_OVERVIEW = "scan-overview"
    OPENAPI = "openapi.yaml"
    PDF_REPORT = "pdfreport"  # outside /v1, like app.imagetwin.ai/pdfreport/...
    RESULT_PAGE = "result-page"  # outside /v1, like app.imagetwin.ai/result/...

    @property
    def group(self) -> str | None:
        """The rate-limit group the endpoint counts against (see ``Emulator.rate_limits``)."""
        return _GROUPS.get(self)


_GROUPS = {
    Endpoint.SCAN: "scan",
    Endpoint.SANDBOX_SCAN: "scan",
    Endpoint.SCAN_PDF: "scan",
    Endpoint.SCAN_IMAGES: "scan",
    Endpoint.RESULT: "result",
    Endpoint.SCAN_OVERVIEW: "overview",
}


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """One uploaded file, as streamed: its name, size and content hash (never its bytes)."""

    name: str
    size: int
    sha256: str
    pages: int | None = None  # counted for PDFs (and .docx that declare it)

    @property
    def is_document(self) -> bool:
        return self.name.lower().endswith(_DOCUMENT_SUFFIXES)


@dataclass(slots=True)
class RequestRecord:
    """One request, appended on receipt and completed when answered.

    ``time`` is emulated seconds since the emulator started. ``status`` is None while the
    request is in flight or when the connection was dropped (then ``dropped`` is true).
    ``authorization`` says whether an Authorization header came at all; ``carries_api_key``
    whether any header or the URL contained one of the configured API keys (the report and
    result pages must never see one).
    """

    method: str
    path: str
    endpoint: Endpoint
    time: float
    authorization: bool
    carries_api_key: bool
    user: str | None = None
    status: int | None = None
    dropped: bool = False
    fault: str | None = None
    scan_id: str | None = None
    file_names: tuple[str, ...] = ()
    sha256: tuple[str, ...] = ()
    answered_at: float | None = None


@dataclass(frozen=True, slots=True)
class CallbackRecord:
    """One callback the emulator sent (or dropped on purpose)."""

    scan_id: str
    url: str
    status: str  # "finished" | "failed"
    time: float
    delivered: bool
    dropped: bool = False
    http_status: int | None = None
    error: str | None = None


@dataclass(slots=True)
class Counters:
    """Running totals since start or the last ``reset()``."""

    scans_billed: int = 0
    sandbox_scans: int = 0
    rate_limited: dict[str, int] = field(default_factory=dict)  # Endpoint value -> 429s
    faults_injected: int = 0
    callbacks_delivered: int = 0
    callbacks_failed: int = 0
    callbacks_dropped: int = 0
