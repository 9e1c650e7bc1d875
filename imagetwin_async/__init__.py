"""imagetwin_async: an asyncio SDK for the Imagetwin image-integrity API.

    >>> from imagetwin_async import ImagetwinClient
    >>> async with ImagetwinClient() as client:          # key from IMAGETWIN_API_KEY
    ...     outcomes = await client.submit_and_wait(["a.pdf", "b.docx"])

This module only re-exports what users use; the implementation lives in the private modules,
and what advanced code may need is importable from there (``imagetwin_async._polling``'s
``PollScheduler`` and ``DurationModel``, ``_limits.Slot`` for a custom ``Limiter``, ...).
"""

from __future__ import annotations

from importlib import metadata as _metadata

from ._batch import AmbiguousPolicy, BatchProgress
from ._callbacks import CallbackReceiver, CallbackStats
from ._client import DEFAULT_BASE_URL, ImagetwinClient
from ._errors import (
    AmbiguousSubmission,
    APIError,
    AuthenticationError,
    BadRequest,
    ClientClosed,
    ConfigurationError,
    ImagetwinError,
    InvalidArgument,
    InvalidUpload,
    LimiterUnavailable,
    PollTimeout,
    RateLimitBusy,
    RateLimited,
    ResponseFormatError,
    ResponseTooLarge,
    ScanCancelled,
    ScanFailed,
    ScanNotFound,
    ServerError,
    ServiceUnavailable,
    TransportError,
    UploadChanged,
)
from ._journal import (
    Journal,
    JournalEntry,
    JournalError,
    JournalInFlight,
    JournalLocked,
    JournalScanIds,
    SQLiteJournal,
)
from ._limits import Limiter, LimitState, RateLimit
from ._models import (
    CallbackNotice,
    ScanFailure,
    ScanOutcome,
    ScanOverview,
    ScanPending,
    ScanResult,
    ScanStarted,
    ScanSuccess,
    ScanSummary,
)
from ._modelstore import FileModelStore, JournalModelStore, ModelStore
from ._polling import SchedulerStats
from ._timings import Timings
from ._uploads import FileContent, NamedFile, Uploadable

try:
    __version__ = _metadata.version("imagetwin-async")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "DEFAULT_BASE_URL",
    "APIError",
    "AmbiguousPolicy",
    "AmbiguousSubmission",
    "AuthenticationError",
    "BadRequest",
    "BatchProgress",
    "CallbackNotice",
    "CallbackReceiver",
    "CallbackStats",
    "ClientClosed",
    "ConfigurationError",
    "FileContent",
    "FileModelStore",
    "ImagetwinClient",
    "ImagetwinError",
    "InvalidArgument",
    "InvalidUpload",
    "Journal",
    "JournalEntry",
    "JournalError",
    "JournalInFlight",
    "JournalLocked",
    "JournalModelStore",
    "JournalScanIds",
    "LimitState",
    "Limiter",
    "LimiterUnavailable",
    "ModelStore",
    "NamedFile",
    "PollTimeout",
    "RateLimit",
    "RateLimitBusy",
    "RateLimited",
    "ResponseFormatError",
    "ResponseTooLarge",
    "SQLiteJournal",
    "ScanCancelled",
    "ScanFailed",
    "ScanFailure",
    "ScanNotFound",
    "ScanOutcome",
    "ScanOverview",
    "ScanPending",
    "ScanResult",
    "ScanStarted",
    "ScanSuccess",
    "ScanSummary",
    "SchedulerStats",
    "ServerError",
    "ServiceUnavailable",
    "Timings",
    "TransportError",
    "UploadChanged",
    "Uploadable",
    "__version__",
]
