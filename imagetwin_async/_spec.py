"""What the vendor's reference (v1.5) fixes: upload limits, file types, rates, scan ids.

One place for the numbers, so the client's checks and the emulator's enforcement cannot drift
apart. Sizes are in bytes; the reference says "MB", which we read as MiB (2**20 bytes).
"""

from __future__ import annotations

import re
from typing import Final

MIB: Final = 1024 * 1024

DOCUMENT_EXTENSIONS: Final = frozenset({".pdf", ".docx"})
IMAGE_EXTENSIONS: Final = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".jfif", ".bmp", ".tif", ".tiff", ".svg", ".webp"}
)
# The deprecated scanImages endpoint predates .webp support.
LEGACY_IMAGE_EXTENSIONS: Final = IMAGE_EXTENSIONS - {".webp"}

MAX_DOCUMENT_BYTES: Final = 30 * MIB  # "under 30 MB": a document must be strictly smaller
MAX_DOCUMENT_PAGES: Final = 50  # "fewer than 50 pages": 50 is already too many
MAX_IMAGE_BYTES: Final = 20 * MIB  # "under 20 MB each"
MAX_IMAGES: Final = 25  # "up to 25 images": 25 is allowed

MIN_SCORE_RANGE: Final = (0.0, 0.9)
DEFAULT_MIN_SCORE: Final = 0.33

SCAN_RATE: Final = (20, 60.0)  # 20 scan POSTs a minute per key
RESULT_RATE: Final = (60, 60.0)  # 60 result GETs a minute per key

# Scan ids are hex digests or UUIDs; anything else would change a URL's path when we read it.
# The one pattern for the client's checks, the callback receiver and upload validation.
SCAN_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")

SANDBOX_FINISHED_ID: Final = "d904c90756d6653f27ce9fc27847a5bf61e35b4cb288d0a301e879cbef3e4579"
SANDBOX_RUNNING_ID: Final = "bbe5489089af902791419a29f3fac98606c43359afc623f852c5e00e10afd0d9"
SANDBOX_FAILED_ID: Final = "21e16e8c71c015715dae4a64b6c12fc5f267b776ebafa27f175e27b48da788fd"
