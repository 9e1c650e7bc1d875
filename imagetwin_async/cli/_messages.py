"""Error messages for people: what went wrong in one line, and what to do about it.

The SDK's messages already name the file, the limit or the endpoint; here they get the advice
a shell user needs (which variable to set, that ``--emulator`` exists, that an ambiguous scan
may be billed). No traceback for anything the user can fix.
"""

from __future__ import annotations

import attrs

from .._client import API_KEY_ENV
from .._errors import (
    AmbiguousSubmission,
    AuthenticationError,
    ImagetwinError,
    InvalidUpload,
    RateLimited,
    ScanFailed,
    ScanNotFound,
    ServiceUnavailable,
    TransportError,
)
from ._connect import BASE_URL_ENV

__all__ = ["Message", "describe", "hint_for", "missing_key", "short_error"]


@attrs.frozen
class Message:
    """One red error line and, optionally, one plain line of advice."""

    error: str
    hint: str | None = None


def missing_key() -> Message:
    return Message(
        "no API key: pass --api-key KEY or set "
        f"{API_KEY_ENV} (generate one at https://app.imagetwin.ai/account)",
        "To try imagetwin without a key, add --emulator: imagetwin scan --emulator --samples",
    )


def describe(exc: ImagetwinError, *, target: str) -> Message:
    """The message for an error that stopped a whole command."""
    if isinstance(exc, AuthenticationError):
        return Message(f"the API key was refused (401) by {target}", hint_for(exc))
    if isinstance(exc, AmbiguousSubmission):
        return Message(str(exc), hint_for(exc))
    if isinstance(exc, TransportError):
        return Message(f"could not reach {target}: {exc}", hint_for(exc))
    return Message(str(exc), hint_for(exc))


def hint_for(exc: ImagetwinError) -> str | None:
    """Advice for an error, or None when its message says it all."""
    if isinstance(exc, AuthenticationError):
        return (
            f"Check --api-key / {API_KEY_ENV}: generating a new key at "
            "app.imagetwin.ai/account revokes the old one."
        )
    if isinstance(exc, AmbiguousSubmission):
        return (
            "A scan may have started (and be billed) without its id reaching us: "
            "look for it with `imagetwin overview` before submitting that file again."
        )
    if isinstance(exc, TransportError):
        return f"Check the network connection and --base-url / {BASE_URL_ENV}."
    if isinstance(exc, RateLimited):
        return "Another program may be using the same API key; try again in a minute."
    if isinstance(exc, ServiceUnavailable):
        return "Imagetwin is unavailable or under maintenance; try again later."
    return None


def short_error(exc: ImagetwinError) -> str:
    """A table cell's worth: the kind of error and the SDK's message, without the endpoint."""
    if isinstance(exc, InvalidUpload):
        return f"rejected before upload: {exc}"
    if isinstance(exc, ScanFailed):
        return "scan failed on the server (500)"
    if isinstance(exc, ScanNotFound):
        return "no such scan (404)"
    if isinstance(exc, AuthenticationError):
        return "API key refused (401)"
    text = str(exc)
    # "POST /scan: could not connect ..." -> the endpoint is noise in a table of documents.
    head, sep, tail = text.partition(": ")
    if sep and head.split(" ", 1)[0] in {"GET", "POST"}:
        text = tail
    return f"{type(exc).__name__}: {text}"
