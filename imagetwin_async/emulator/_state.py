"""Scans and the account history the scan overview lists."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from enum import StrEnum

from .. import _spec
from ._outcomes import Findings
from ._records import Endpoint, UploadedFile

__all__ = ["OverviewEntry", "Scan", "ScanStatus", "ScanStore"]

RETENTION = 90 * 86400.0  # "Results are available for 90 days", in emulated seconds


class ScanStatus(StrEnum):
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"


@dataclass(slots=True, eq=False)
class Scan:
    """A scan the emulator started (or one of the sandbox's predefined ones).

    Times are emulated seconds since start; ``ends_at`` is ``math.inf`` for a scan scripted
    never to finish. The status is read lazily from the clock: no timer runs per scan.
    """

    scan_id: str
    user: str | None  # None: a sandbox scan every key may read
    endpoint: Endpoint
    files: tuple[UploadedFile, ...]
    min_score: float
    exclude_identical_paper: bool
    callback_url: str | None
    received_at: float
    ends_at: float
    fails: bool
    findings: Findings
    scan_date: datetime  # real UTC time of receipt, what the overview lists
    report_id: str
    billed: bool = True
    report_pdf: bytes | None = field(default=None, repr=False)  # built on first download

    def status(self, now: float) -> ScanStatus:
        if now < self.ends_at:
            return ScanStatus.RUNNING
        return ScanStatus.FAILED if self.fails else ScanStatus.FINISHED

    def expired(self, now: float) -> bool:
        return self.billed and now - self.received_at > RETENTION


@dataclass(frozen=True, slots=True)
class OverviewEntry:
    """One row of the scan overview (``apiScan`` false rows stand for web-app scans)."""

    scan_id: str
    scan_date: datetime
    user: str
    free_of_charge: bool = False
    api_scan: bool = False

    def as_json(self, zone: tzinfo = UTC) -> dict[str, object]:
        return {
            "scanId": self.scan_id,
            # Zone-less, as the reference shows it: in UTC unless the emulator was told
            # otherwise (Emulator(scan_date_zone=...)), so clients cannot count on UTC.
            "scanDate": self.scan_date.astimezone(zone).strftime("%Y-%m-%dT%H:%M:%S"),
            "user": self.user,
            "freeOfCharge": self.free_of_charge,
            "apiScan": self.api_scan,
        }


# The reference's example result, served for the sandbox's "successful scan" id.
SANDBOX_REPORT_ID = "e590ff7414eef232b52c990ab15773e58c5ad9965340b8f3461531d047184a60"


def sandbox_scans() -> list[Scan]:
    """The three predefined sandbox results: finished (200), running forever (202), failed."""

    def predefined(scan_id: str, *, ends_at: float, fails: bool, findings: Findings) -> Scan:
        return Scan(
            scan_id=scan_id,
            user=None,
            endpoint=Endpoint.SANDBOX_SCAN,
            files=(),
            min_score=_spec.DEFAULT_MIN_SCORE,
            exclude_identical_paper=False,
            callback_url=None,
            received_at=-math.inf,
            ends_at=ends_at,
            fails=fails,
            findings=findings,
            scan_date=datetime(2023, 10, 3, tzinfo=UTC),  # the API's launch; never listed
            report_id=SANDBOX_REPORT_ID if scan_id == _spec.SANDBOX_FINISHED_ID else scan_id,
            billed=False,
        )

    return [
        predefined(
            _spec.SANDBOX_FINISHED_ID,
            ends_at=-math.inf,
            fails=False,
            findings=Findings(0, 2, 0, 0, 0.99),
        ),
        predefined(_spec.SANDBOX_RUNNING_ID, ends_at=math.inf, fails=False, findings=Findings()),
        predefined(_spec.SANDBOX_FAILED_ID, ends_at=-math.inf, fails=True, findings=Findings()),
    ]


class ScanStore:
    """Scans by id and by report id, plus extra overview rows a test added."""

    def __init__(self) -> None:
        self.scans: dict[str, Scan] = {}
        self.by_report: dict[str, Scan] = {}
        self.history: list[OverviewEntry] = []
        self.clear()

    def add(self, scan: Scan) -> None:
        self.scans[scan.scan_id] = scan
        self.by_report[scan.report_id] = scan

    def clear(self) -> None:
        self.scans.clear()
        self.by_report.clear()
        self.history.clear()
        for scan in sandbox_scans():
            self.add(scan)

    def overview(
        self, user: str, start: date, end: date, zone: tzinfo = UTC
    ) -> list[OverviewEntry]:
        """Rows of ``user`` whose date (in ``zone``) lies in ``[start, end]``, oldest first."""
        rows = [
            OverviewEntry(s.scan_id, s.scan_date, s.user, free_of_charge=False, api_scan=True)
            for s in self.scans.values()
            if s.billed and s.user == user
        ]
        rows.extend(entry for entry in self.history if entry.user == user)
        rows = [r for r in rows if start <= r.scan_date.astimezone(zone).date() <= end]
        rows.sort(key=lambda r: r.scan_date)
        return rows
