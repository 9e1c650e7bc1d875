"""The exception tree. Every error the SDK raises is an ``ImagetwinError``::

    ImagetwinError
    ├── ConfigurationError (ValueError)      no API key, bad base URL, bad client option
    ├── ClientClosed (RuntimeError)           a view (``with_options``) used after it, or the
    │                                         client it was made from, was closed
    ├── InvalidArgument (ValueError)          a call the API would reject; nothing was sent
    │   └── InvalidUpload                     a file or option the scan endpoint would reject
    │       └── UploadChanged                 a file changed while it was being sent
    ├── ResponseFormatError                   a response we could not read (carries .path)
    │   └── ResponseTooLarge                  an answer longer than the client reads
    ├── JournalError                          a batch journal that cannot be used (``_journal``)
    │   └── JournalLocked                     another process runs a batch on it right now
    ├── TransportError                        the network failed (carries .scan_may_have_started)
    │   ├── AmbiguousSubmission               a scan POST went out and no answer came back:
    │   │                                     the scan may exist and be billed; never retried
    │   └── LimiterUnavailable                the shared rate-limit store is unreachable:
    │       └── RedisLimiterError             nothing was sent (``imagetwin_async.redis``)
    ├── FleetError                            the fleet's Redis is unreachable for a question
    │                                         only it can answer (``imagetwin_async.fleet``)
    ├── PollTimeout (TimeoutError)            waited longer than the caller allowed
    ├── ScanCancelled                         a batch item that was cancelled before it finished
    └── APIError                              the server answered with an error status
        ├── BadRequest                400
        ├── AuthenticationError       401
        ├── ScanNotFound              404
        ├── RateLimited               429 once retries are spent (carries .retry_after)
        │   └── RateLimitBusy               block=False and no slot free now: nothing was sent
        ├── ScanFailed                500 from the result endpoint: the scan itself failed
        └── ServerError               any other 5xx
            └── ServiceUnavailable    503 / 504 once retries are spent

Errors carry data (``status``, ``endpoint``, ``server_message``, ``retry_after``), never the
API key: the session layer redacts it from anything the server echoes back.

This module imports nothing of ours, so every other module can import it; the three errors
defined elsewhere live next to what raises them.
"""

from __future__ import annotations

import datetime as dt

__all__ = [
    "APIError",
    "AmbiguousSubmission",
    "AuthenticationError",
    "BadRequest",
    "ClientClosed",
    "ConfigurationError",
    "ImagetwinError",
    "InvalidArgument",
    "InvalidUpload",
    "LimiterUnavailable",
    "PollTimeout",
    "RateLimitBusy",
    "RateLimited",
    "ResponseFormatError",
    "ResponseTooLarge",
    "ScanCancelled",
    "ScanFailed",
    "ScanNotFound",
    "ServerError",
    "ServiceUnavailable",
    "TransportError",
    "UploadChanged",
]


class ImagetwinError(Exception):
    """Base of every error raised by imagetwin_async."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigurationError(ImagetwinError, ValueError):
    """The client was set up wrongly (no API key, a malformed base URL, a bad option)."""


class ClientClosed(ImagetwinError, RuntimeError):
    """A client view (``ImagetwinClient.with_options``) was used after it was closed, or after
    the client it was made from was closed (which ends every view of it); nothing was sent.

    Make a new view from the open client. The client itself may be used again after
    ``close`` (it reopens what it needs); its views may not.
    """


class InvalidArgument(ImagetwinError, ValueError):
    """An argument the API would reject (a malformed scan id, dates in the wrong order).

    Raised before anything is sent.
    """


class InvalidUpload(InvalidArgument):
    """An upload the API would reject; raised before any byte is sent.

    ``source`` names the offending file (its name, never its content).
    """

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(message)
        self.source = source


class UploadChanged(InvalidUpload):
    """A file changed (size or modification time) between its checks and the end of its
    upload. The request was cut off before its body was complete, so no scan started from
    it; scan the file again once nothing writes it."""


class ResponseFormatError(ImagetwinError):
    """The server's answer could not be read as the reference describes.

    ``path`` points at the bad field (``$.alterationCount``) where one is known.
    """

    def __init__(
        self, message: str, *, endpoint: str | None = None, path: str | None = None
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.path = path


class ResponseTooLarge(ResponseFormatError):
    """An answer longer than any the reference describes (a lying server, a decompression bomb):
    reading stopped at the cap, nothing more was kept in memory."""


class TransportError(ImagetwinError):
    """The request failed on the network: no HTTP answer was read.

    ``scan_may_have_started`` is true when the request was a scan POST that may have reached
    the server; such a request is never retried automatically.
    """

    def __init__(
        self, message: str, *, endpoint: str | None = None, scan_may_have_started: bool = False
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.scan_may_have_started = scan_may_have_started


class AmbiguousSubmission(TransportError):
    """A scan POST may have started a (billed) scan, but no scan id came back.

    Nothing retries it for you: look the scan up with ``scan_overview`` or resubmit knowingly.
    With a journal, ``submit_and_wait`` reports the item with this error until told otherwise,
    with the scans it may have started (``candidates``, ids from scan-overview) and the time
    its POST may have registered in (``window``, the service's clock, UTC): settle it by hand
    with ``imagetwin journal settle``.
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str | None = None,
        candidates: tuple[str, ...] = (),
        window: tuple[dt.datetime, dt.datetime] | None = None,
    ) -> None:
        super().__init__(message, endpoint=endpoint, scan_may_have_started=True)
        self.candidates = candidates
        self.window = window


class LimiterUnavailable(TransportError):
    """The store a shared rate limit lives in could not be reached: nothing was sent.

    The session retries it with back-off for the client's ``limiter_outage_timeout``, then
    raises it; ``redis.RedisLimiterError`` is the Redis-backed limiter's kind.
    """


class PollTimeout(ImagetwinError, TimeoutError):
    """The scan did not finish within the caller's ``timeout``; it may still finish later."""

    def __init__(self, message: str, *, scan_id: str | None = None) -> None:
        super().__init__(message)
        self.scan_id = scan_id


class ScanCancelled(ImagetwinError):
    """A batch item was cancelled (time-out of the batch, or the caller cancelled it)."""


class APIError(ImagetwinError):
    """The server answered with an error status.

    ``status`` is the HTTP status, ``endpoint`` the method and path (``POST /scan``),
    ``server_message`` what the server said (redacted of the key), ``retry_after`` seconds.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        endpoint: str,
        server_message: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.endpoint = endpoint
        self.server_message = server_message
        self.retry_after = retry_after


class BadRequest(APIError):
    """400: the payload is invalid or the request limitations are exceeded."""


class AuthenticationError(APIError):
    """401: the API key is missing, wrong or revoked (generating a new key revokes the old)."""


class ScanNotFound(APIError):
    """404: no result for this scan id (unknown, or older than 90 days)."""


class RateLimited(APIError):
    """429 after the client's retries were spent; ``retry_after`` says when to come back."""


class RateLimitBusy(RateLimited):
    """``block=False`` was asked and no request slot is free: nothing was sent.

    ``retry_after`` is the time until the next slot frees (None while every slot waits for an
    answer still in flight). ``status`` is 429 so a web handler can pass it straight on.
    """


class ScanFailed(APIError):
    """500 from the result endpoint: the scan itself failed on the server."""


class ServerError(APIError):
    """A 5xx answer other than a failed scan."""


class ServiceUnavailable(ServerError):
    """503 or 504 (maintenance, overload) after the client's retries were spent."""
