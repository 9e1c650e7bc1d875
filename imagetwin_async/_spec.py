"""What the vendor's reference (v1.5) fixes: upload limits, file types, rates, scan ids.

One place for the numbers, so the client's checks and the emulator's enforcement cannot drift
apart. Sizes are in bytes. The reference says "under 30 MB / 20 MB" without saying which MB:
the default reading is the stricter decimal one (10**6 bytes), so nothing is uploaded that a
server may refuse after the whole upload; ``"MiB"`` (2**20 bytes) is the explicit other one.
"""

from __future__ import annotations

import re
from typing import Final, Literal

MB: Final = 1000 * 1000
MIB: Final = 1024 * 1024

SizeUnit = Literal["MB", "MiB"]
"""How to read the reference's "MB": ``"MB"`` (10**6 bytes, default, stricter) or ``"MiB"``."""

DOCUMENT_EXTENSIONS: Final = frozenset({".pdf", ".docx"})
IMAGE_EXTENSIONS: Final = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".jfif", ".bmp", ".tif", ".tiff", ".svg", ".webp"}
)
# The deprecated scanImages endpoint predates .webp support.
LEGACY_IMAGE_EXTENSIONS: Final = IMAGE_EXTENSIONS - {".webp"}

MAX_DOCUMENT_BYTES: Final = 30 * MB  # "under 30 MB": a document must be strictly smaller
MAX_DOCUMENT_PAGES: Final = 50  # "fewer than 50 pages": 50 is already too many
MAX_IMAGE_BYTES: Final = 20 * MB  # "under 20 MB each"


def size_limits(unit: SizeUnit = "MB") -> tuple[int, int]:
    """(document, image) byte limits, both exclusive, for a reading of "MB"."""
    if unit not in ("MB", "MiB"):
        raise ValueError(f"size unit must be 'MB' or 'MiB', got {unit!r}")
    factor = MB if unit == "MB" else MIB
    return 30 * factor, 20 * factor


MAX_IMAGES: Final = 25  # "up to 25 images": 25 is allowed

MIN_SCORE_RANGE: Final = (0.0, 0.9)
DEFAULT_MIN_SCORE: Final = 0.33

SCAN_RATE: Final = (20, 60.0)  # 20 scan POSTs a minute per key
RESULT_RATE: Final = (60, 60.0)  # 60 result GETs a minute per key

# Scan ids as the reference shows them: a 64-digit hex digest from the scan, result and callback
# examples; UUIDs in the scan-overview example. An id is joined onto URLs and file names, so
# nothing else is accepted from a server (or sent): no separators, dots or control characters.
# The one pattern for the client's checks, the callback receiver and upload validation.
_HEX: Final = r"[0-9a-fA-F]{64}"
_UUID: Final = r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}"
SCAN_ID_PATTERN: Final = re.compile(rf"{_HEX}|{_UUID}")
# What a scan POST's answer (and a callback) carries in the reference's examples.
HEX_SCAN_ID_PATTERN: Final = re.compile(_HEX)

# Answers are read up to these sizes (after decompression); a longer one is a lying server.
MAX_ANSWER_BYTES: Final = 1024 * 1024  # scan and result answers, errors: a few hundred bytes
MAX_OVERVIEW_BYTES: Final = 64 * 1024 * 1024  # a year of scans as JSON is a few MB
MAX_REPORT_BYTES: Final = 512 * 1024 * 1024  # "up to 1000 findings": far below this

SANDBOX_FINISHED_ID: Final = "d904c90756d6653f27ce9fc27847a5bf61e35b4cb288d0a301e879cbef3e4579"
SANDBOX_RUNNING_ID: Final = "bbe5489089af902791419a29f3fac98606c43359afc623f852c5e00e10afd0d9"
SANDBOX_FAILED_ID: Final = "21e16e8c71c015715dae4a64b6c12fc5f267b776ebafa27f175e27b48da788fd"
