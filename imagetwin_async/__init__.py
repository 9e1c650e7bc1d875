"""imagetwin_async: an asyncio SDK for the Imagetwin image-integrity API.

    >>> from imagetwin_async import ImagetwinClient
    >>> async with ImagetwinClient() as client:          # key from IMAGETWIN_API_KEY
    ...     outcomes = await client.submit_and_wait(["a.pdf", "b.docx"])

This module only re-exports; the implementation lives in the private modules.
"""

from __future__ import annotations

from importlib import metadata as _metadata

from ._batch import BatchProgress
from ._callbacks import CallbackReceiver, CallbackStats
from ._client import DEFAULT_BASE_URL, ImagetwinClient
from ._errors import (
    AmbiguousSubmission,
    APIError,
    AuthenticationError,
    BadRequest,
    ConfigurationError,
    ImagetwinError,
    InvalidArgument,
    InvalidUpload,
    PollTimeout,
    RateLimitBusy,
    RateLimited,
    ResponseFormatError,
    ScanCancelled,
    ScanFailed,
    ScanNotFound,
    ServerError,
    ServiceUnavailable,
    TransportError,
)
from ._journal import Journal, JournalEntry, JournalError, JournalLocked, SQLiteJournal
from ._limits import Limiter, LimitState, RateLimit, Slot
from ._models import (
    CallbackNotice,
    ScanOutcome,
    ScanOverview,
    ScanPending,
    ScanResult,
    ScanStarted,
    ScanSummary,
)
from ._polling import DurationModel, PollScheduler
from ._timings import Timings
from ._uploads import FileContent, Upload, prepare_upload

try:
    __version__ = _metadata.version("imagetwin-async")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "DEFAULT_BASE_URL",
    "APIError",
    "AmbiguousSubmission",
    "AuthenticationError",
    "BadRequest",
    "BatchProgress",
    "CallbackNotice",
    "CallbackReceiver",
    "CallbackStats",
    "ConfigurationError",
    "DurationModel",
    "FileContent",
    "ImagetwinClient",
    "ImagetwinError",
    "InvalidArgument",
    "InvalidUpload",
    "Journal",
    "JournalEntry",
    "JournalError",
    "JournalLocked",
    "LimitState",
    "Limiter",
    "PollScheduler",
    "PollTimeout",
    "RateLimit",
    "RateLimitBusy",
    "RateLimited",
    "ResponseFormatError",
    "SQLiteJournal",
    "ScanCancelled",
    "ScanFailed",
    "ScanNotFound",
    "ScanOutcome",
    "ScanOverview",
    "ScanPending",
    "ScanResult",
    "ScanStarted",
    "ScanSummary",
    "ServerError",
    "ServiceUnavailable",
    "Slot",
    "Timings",
    "TransportError",
    "Upload",
    "__version__",
    "prepare_upload",
]
