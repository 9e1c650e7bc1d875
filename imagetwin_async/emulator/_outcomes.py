"""How a scan ends: content-derived findings, scripted outcomes, processing-time draws."""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ._records import UploadedFile

__all__ = [
    "Findings",
    "FixedTime",
    "LogNormalTime",
    "Outcome",
    "ProcessingTime",
    "Scripts",
    "derive_findings",
]


@dataclass(frozen=True, slots=True)
class Findings:
    """The counts a finished scan reports (the result's numbers, snake_case)."""

    alteration_count: int = 0
    local_duplicate_count: int = 0
    extern_duplicate_count: int = 0
    ai_image_count: int = 0
    highest_score: float = 0.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """A scripted end for a scan.

    >>> Outcome.finished(local_duplicate_count=2, highest_score=0.97)  # doctest: +ELLIPSIS
    Outcome(kind='finished', ...)
    >>> Outcome.failed(processing_time=5.0).kind
    'failed'
    """

    kind: Literal["finished", "failed", "never"]
    findings: Findings | None = None
    processing_time: float | None = None  # emulated seconds; None: draw from the distribution

    @classmethod
    def finished(
        cls,
        *,
        alteration_count: int = 0,
        local_duplicate_count: int = 0,
        extern_duplicate_count: int = 0,
        ai_image_count: int = 0,
        highest_score: float | None = None,
        processing_time: float | None = None,
    ) -> Outcome:
        """Finish with these counts; ``highest_score`` defaults to 0 (nothing) or 0.9."""
        counts = (alteration_count, local_duplicate_count, extern_duplicate_count, ai_image_count)
        if highest_score is None:
            highest_score = 0.9 if any(counts) else 0.0
        return cls("finished", Findings(*counts, highest_score), processing_time)

    @classmethod
    def failed(cls, *, processing_time: float | None = None) -> Outcome:
        """Fail: the result endpoint answers 500 once the processing time is over."""
        return cls("failed", None, processing_time)

    @classmethod
    def never(cls) -> Outcome:
        """Never finish: the result endpoint answers 202 until ``finish_scan`` or reset."""
        return cls("never", None, math.inf)


@dataclass(frozen=True, slots=True)
class FixedTime:
    """Every scan takes ``seconds`` emulated seconds."""

    seconds: float

    def draw(self, rng: random.Random, files: Sequence[UploadedFile] = ()) -> float:
        return self.seconds


@dataclass(frozen=True, slots=True)
class LogNormalTime:
    """Log-normal processing times: half the scans take less than ``median`` seconds.

        LogNormalTime(60.0, 0.5)                                   # every scan alike
        LogNormalTime(30.0, 0.3, page_exponent=0.7, size_exponent=0.2)

    With exponents the median is that of a one-page (or one-image), 1 MiB upload and grows
    as ``pages ** page_exponent * MiB ** size_exponent`` (pages of a document, else the image
    count): for measuring a poller that conditions on what it uploads.
    """

    median: float
    sigma: float
    page_exponent: float = 0.0
    size_exponent: float = 0.0

    def draw(self, rng: random.Random, files: Sequence[UploadedFile] = ()) -> float:
        median = self.median
        if files and (self.page_exponent or self.size_exponent):
            pages = sum(f.pages or 0 for f in files if f.is_document)
            units = pages or sum(1 for f in files if not f.is_document) or 1
            mib = max(sum(f.size for f in files), 1) / 2**20
            median *= units**self.page_exponent * mib**self.size_exponent
        return rng.lognormvariate(math.log(median), self.sigma)


ProcessingTime = FixedTime | LogNormalTime


@dataclass(slots=True)
class _Script:
    outcome: Outcome
    file_name: str | None
    sha256: str | None
    remaining: float  # math.inf: every matching scan

    def matches(self, files: Sequence[UploadedFile]) -> bool:
        return any(
            (self.file_name is None or f.name == self.file_name)
            and (self.sha256 is None or f.sha256 == self.sha256)
            for f in files
        )


class Scripts:
    """Scripted outcomes. Ones aimed at a file name or hash win over the next-N queue."""

    def __init__(self) -> None:
        self._matched: list[_Script] = []
        self._queue: list[_Script] = []

    def add(
        self,
        outcome: Outcome,
        *,
        file_name: str | None = None,
        sha256: str | None = None,
        times: int | None = None,
    ) -> None:
        if times is not None and times < 1:
            raise ValueError(f"times must be at least 1, got {times}")
        if file_name is None and sha256 is None:
            self._queue.append(_Script(outcome, None, None, 1 if times is None else times))
        else:
            remaining = math.inf if times is None else times
            self._matched.append(
                _Script(outcome, file_name, sha256.lower() if sha256 else None, remaining)
            )

    def take(self, files: Sequence[UploadedFile]) -> Outcome | None:
        """The outcome scripted for a new scan of ``files``, consuming one use of it."""
        for scripts in (self._matched, self._queue):
            for index, script in enumerate(scripts):
                if script.matches(files):
                    script.remaining -= 1
                    if script.remaining <= 0:
                        del scripts[index]
                    return script.outcome
        return None

    def clear(self) -> None:
        self._matched.clear()
        self._queue.clear()


# Finding kinds a content hash can draw; duplicates are the commonest in practice.
_KINDS = ("local", "local", "extern", "extern", "alteration", "ai")


def derive_findings(
    files: Sequence[UploadedFile], min_score: float, exclude_identical_paper: bool
) -> Findings:
    """A deterministic result for this content: same files, same minScore, same numbers.

    The hash draws up to seven findings with confidence scores; those under ``min_score``
    are left out, as the service does, so raising minScore never adds findings. With
    ``exclude_identical_paper`` the external duplicates drawn as "identical paper" go.
    """
    digest = hashlib.sha256("".join(f.sha256 for f in files).encode()).digest()
    counts = {"alteration": 0, "local": 0, "extern": 0, "ai": 0}
    highest = 0.0
    for i in range(digest[0] % 8):
        kind_byte, score_byte = digest[1 + 2 * i], digest[2 + 2 * i]
        kind = _KINDS[kind_byte % len(_KINDS)]
        score = round(0.2 + 0.79 * score_byte / 255, 2)
        identical_paper = kind == "extern" and kind_byte & 0x80
        if score < min_score or (exclude_identical_paper and identical_paper):
            continue
        counts[kind] += 1
        highest = max(highest, score)
    return Findings(counts["alteration"], counts["local"], counts["extern"], counts["ai"], highest)
