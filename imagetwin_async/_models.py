"""The values the API hands back, as frozen attrs classes with snake_case fields.

The camelCase names of the wire format live only in ``_convert``.
"""

from __future__ import annotations

import datetime as dt
from typing import Generic, Literal, TypeAlias

import attrs
from typing_extensions import TypeVar

from ._errors import ImagetwinError

# A batch item's type; covariant because outcomes are frozen (a list of ScanOutcome[str] is
# a list of ScanOutcome[object]); bare ``ScanOutcome`` means ``ScanOutcome[object]``.
S_co = TypeVar("S_co", covariant=True, default=object)

__all__ = [
    "CallbackNotice",
    "Outcome",
    "ScanFailure",
    "ScanOutcome",
    "ScanOverview",
    "ScanPending",
    "ScanResult",
    "ScanStarted",
    "ScanSuccess",
    "ScanSummary",
]


@attrs.frozen
class ScanStarted:
    """The server accepted a scan: keep ``scan_id`` to fetch the result.

    >>> started = await client.scan("paper.pdf")
    >>> started.scan_id
    'd904c907...'
    """

    scan_id: str
    message: str = ""


@attrs.frozen
class ScanResult:
    """The findings of a finished scan (``GET /result/{scanId}`` answered 200).

    ``ai_image_count`` and ``highest_score`` came with later API versions: they are ``None``
    when the server did not send them (results of older scans).

    >>> result = await client.wait_for_result(scan_id)
    >>> result.local_duplicate_count, result.highest_score
    (2, 0.99)
    """

    scan_id: str
    alteration_count: int
    local_duplicate_count: int
    extern_duplicate_count: int
    pdf_report: str
    result_url: str
    min_score: float
    ai_image_count: int | None = None
    highest_score: float | None = None

    @property
    def finding_count(self) -> int:
        """All findings above ``min_score``: alterations, duplicates and AI-generated images."""
        return (
            self.alteration_count
            + self.local_duplicate_count
            + self.extern_duplicate_count
            + (self.ai_image_count or 0)
        )

    @property
    def clean(self) -> bool:
        """True when the scan found nothing above ``min_score``."""
        return self.finding_count == 0


@attrs.frozen
class ScanPending:
    """The scan is still running (the result endpoint answered 202). Not an error.

    >>> answer = await client.get_result(scan_id)
    >>> if isinstance(answer, ScanPending): ...
    """

    scan_id: str

    @property
    def done(self) -> Literal[False]:
        return False


@attrs.frozen
class ScanSummary:
    """One scan in a ``scan_overview``; ``scan_date`` is timezone-aware UTC."""

    scan_id: str
    scan_date: dt.datetime
    user: str | None = None
    free_of_charge: bool = False
    api_scan: bool = False


@attrs.frozen
class ScanOverview:
    """The scans performed between two dates (both included), from ``scan_overview``.

    >>> overview = await client.scan_overview(date(2025, 4, 1), date(2025, 4, 30))
    >>> [s.scan_id for s in overview.scans if s.api_scan]
    """

    start_date: dt.date
    end_date: dt.date
    scans: tuple[ScanSummary, ...] = ()


@attrs.frozen
class CallbackNotice:
    """The body of the server's callback POST. Unsigned: a hint to poll, never a result."""

    scan_id: str
    status: Literal["finished", "failed"]


@attrs.frozen
class ScanOutcome(Generic[S_co]):
    """What became of one batch item: a result, or the error that stopped it.

    ``scan_id`` is None when the server never accepted the item (an invalid upload, a refused
    request); ``source`` is the item exactly as it was passed in (typed as the batch's items).
    ``note`` says where a resumed item's outcome came from ("from the journal", "adopted from
    scan-overview"). Batches hand back its two kinds, ``ScanSuccess`` (``ok`` is
    ``Literal[True]``, ``result`` set) and ``ScanFailure`` (``ok`` is ``Literal[False]``,
    ``error`` set), so a type checker narrows ``result`` and ``error`` after
    ``match outcome: case ScanSuccess(): ...``, ``if outcome.ok is True:``,
    ``if outcome.result is not None:`` or ``isinstance(outcome, ScanSuccess)`` (mypy and
    pyright), and after a bare ``if outcome.ok:`` (mypy only: pyright narrows a union on a
    literal field only through ``==``, ``is`` and their negations, by design).

    >>> for outcome in await client.submit_and_wait(["a.pdf", "b.pdf"]):
    ...     match outcome:
    ...         case ScanSuccess(result=result):
    ...             print(outcome.source, result.finding_count)
    ...         case ScanFailure(error=error):
    ...             print(outcome.source, error)
    """

    source: S_co
    scan_id: str | None = None
    result: ScanResult | None = None
    error: ImagetwinError | None = None
    note: str | None = None

    @property
    def ok(self) -> bool:
        """True when the scan finished and its result is here."""
        return self.result is not None and self.error is None


@attrs.frozen
class ScanSuccess(ScanOutcome[S_co]):
    """A batch item whose scan finished: ``result`` is its ``ScanResult``.

    >>> ScanSuccess("a.pdf", scan_id, result=result).ok
    True
    """

    result: ScanResult = attrs.field(kw_only=True)
    error: None = attrs.field(default=None, kw_only=True)

    @property
    def ok(self) -> Literal[True]:
        """Always True: the result is here."""
        return True


@attrs.frozen
class ScanFailure(ScanOutcome[S_co]):
    """A batch item that ended without a result: ``error`` says why (``scan_id`` may be set).

    >>> ScanFailure("a.pdf", None, error=InvalidUpload("a.pdf: not found")).ok
    False
    """

    error: ImagetwinError = attrs.field(kw_only=True)
    result: None = attrs.field(default=None, kw_only=True)

    @property
    def ok(self) -> Literal[False]:
        """Always False: see ``error``."""
        return False


# What a batch hands back for an item whose type is ``S_co``.
Outcome: TypeAlias = ScanSuccess[S_co] | ScanFailure[S_co]
