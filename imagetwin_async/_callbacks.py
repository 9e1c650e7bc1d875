"""The callback receiver: Imagetwin's "scan finished" POSTs, turned into polls that happen now.

A scan started with ``callback_url=`` is polled only every ``max_poll_interval``: the server
POSTs ``{"scanId": ..., "status": "finished" | "failed"}`` to that URL when the scan ends, and
the receiver hands the scan id to ``ImagetwinClient.notify_finished``, which makes its next
read immediate. The callback is unsigned, so it is a hint and nothing more:

- the URL ends in a per-receiver secret token (``secrets.token_urlsafe``, compared in constant
  time); a wrong token gets 404 before the body is read;
- the body is read only up to ``max_body`` bytes (413 beyond) and must be a JSON object with a
  scan id and a known status (400 otherwise);
- the status in the body is never used: the result comes from the API's own answer, so a
  forged callback can never mark a scan done, and costs at most one result read per scan
  every ``rehint_after`` seconds (a duplicate within that time is counted and ignored);
- a well-formed callback gets 204 whether or not anyone waits for that scan, so the answer
  does not reveal which scan ids this service knows.

``CallbackReceiver.check``, ``.read_body`` and ``.receive`` are the framework-free core::

    status = receiver.check(token, content_length)   # 404 / 413 at once, or None
    if status is None:
        status = receiver.receive(await receiver.read_body(body_chunks))

``add_routes`` / ``routes`` wire it into aiohttp, ``imagetwin_async.fastapi.callback_router``
into FastAPI.

There is deliberately no client-wide default callback URL: it is a per-scan option, and a
default would also slow the polling of scans whose process cannot receive callbacks.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterable, Callable
from typing import Final, Protocol, runtime_checkable
from urllib.parse import urlsplit

import attrs
from aiohttp import web

from . import _spec
from ._errors import ConfigurationError
from ._models import CallbackNotice
from ._timings import DEFAULT_TIMINGS, Timings

__all__ = [
    "DEFAULT_MAX_BODY",
    "CallbackReceiver",
    "CallbackStats",
    "CallbackTarget",
    "parse_callback",
    "read_limited",
]

logger = logging.getLogger("imagetwin_async.callbacks")

DEFAULT_MAX_BODY: Final = 4096
"""The real body is about 100 bytes; anything much bigger is not from Imagetwin."""

# token_urlsafe's alphabet; 22 characters carry 128 bits.
_TOKEN: Final = re.compile(r"[A-Za-z0-9_-]{22,256}")
_STATUSES: Final = frozenset({"finished", "failed"})
_MAX_REMEMBERED: Final = 10_000  # bounds the duplicate filter's memory under a flood


class CallbackTarget(Protocol):
    """What the receiver feeds: ``ImagetwinClient``, or a stand-in in tests."""

    def notify_finished(self, scan_id: str) -> bool: ...


@runtime_checkable
class _Timed(Protocol):
    """A target that says how it polls (``ImagetwinClient.timings``)."""

    @property
    def timings(self) -> Timings: ...


@attrs.define
class CallbackStats:
    """Counters for dashboards: what came in, and what was done with it.

    ``accepted``: hinted a scan someone waits for (one read follows). ``duplicate``: that scan
    was hinted less than ``rehint_after`` ago, ignored. ``unknown_scan``: well-formed, but
    nobody here waits for that scan (another replica's, finished, or forged), ignored.
    ``wrong_token`` (404), ``too_large`` (413), ``bad_body`` (400): refused.
    """

    accepted: int = 0
    duplicate: int = 0
    unknown_scan: int = 0
    wrong_token: int = 0
    too_large: int = 0
    bad_body: int = 0

    @property
    def rejected(self) -> int:
        """Requests answered with an error status."""
        return self.wrong_token + self.too_large + self.bad_body


def parse_callback(body: bytes) -> CallbackNotice:
    """The callback in ``body``, or ``ValueError`` saying what is wrong with it.

    >>> parse_callback(b'{"scanId": "d904c907", "status": "finished"}')
    CallbackNotice(scan_id='d904c907', status='finished')

    Unknown keys are allowed (the API grows); ``scanId`` must look like a scan id and
    ``status`` be ``finished`` or ``failed``.
    """
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ValueError("the body is not JSON") from exc
    fields = data if isinstance(data, dict) else {}
    scan_id, status = fields.get("scanId"), fields.get("status")
    if not isinstance(scan_id, str) or not _spec.SCAN_ID_PATTERN.fullmatch(scan_id):
        raise ValueError("not a JSON object with a scan id under scanId")
    if status == "finished":
        return CallbackNotice(scan_id, "finished")
    if status == "failed":
        return CallbackNotice(scan_id, "failed")
    raise ValueError(f"status must be one of {sorted(_STATUSES)}")


async def read_limited(chunks: AsyncIterable[bytes], limit: int) -> bytes:
    """Read a streamed body, stopping after ``limit + 1`` bytes.

    A result longer than ``limit`` means "too large" (``receive`` answers 413); the rest of the
    stream is never read, so a huge body costs no memory.
    """
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk[: limit + 1 - len(buffer)]
        if len(buffer) > limit:
            break
    return bytes(buffer)


class CallbackReceiver:
    """Receives Imagetwin's callbacks and makes the client poll those scans now.

    >>> receiver = CallbackReceiver(client, "https://my.service/imagetwin/callbacks")
    >>> receiver.add_routes(app)                  # aiohttp; FastAPI: callback_router(receiver)
    >>> await client.scan("paper.pdf", callback_url=receiver.callback_url)

    ``public_url`` is where Imagetwin can reach the route from outside; ``callback_url`` adds
    the secret token to it. Without ``token`` a fresh one is drawn, so callbacks for scans
    started before a restart get 404 and those scans fall back to polling; pass a fixed
    token (from a secret store) to keep them, or to share one URL among several replicas.
    The token is not shown by ``repr``. Use it from the client's event loop.
    """

    def __init__(
        self,
        client: CallbackTarget,
        public_url: str,
        *,
        token: str | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        rehint_after: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        parts = urlsplit(public_url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ConfigurationError(f"public_url must be an absolute http(s) URL: {public_url!r}")
        if parts.query or parts.fragment:
            raise ConfigurationError("public_url must not have a query or a fragment")
        if token is None:
            token = secrets.token_urlsafe(32)
        elif not _TOKEN.fullmatch(token):
            raise ConfigurationError(
                "token must be 22 to 256 URL-safe characters (A-Z a-z 0-9 _ -), such as"
                " secrets.token_urlsafe(32) makes"
            )
        if max_body < 64:
            raise ConfigurationError(f"max_body must be at least 64 bytes, got {max_body!r}")
        if rehint_after is None:
            # A duplicate within the fallback poll interval gains nothing: the poll comes anyway.
            timings = client.timings if isinstance(client, _Timed) else DEFAULT_TIMINGS
            rehint_after = timings.max_poll_interval
        self.client = client
        self.public_url: str = public_url.rstrip("/")
        self.path: str = parts.path.rstrip("/")
        """The route's path without the token (``/imagetwin/callbacks``), from ``public_url``."""
        self.max_body = max_body
        self.rehint_after = rehint_after
        self.stats: CallbackStats = CallbackStats()
        self._token = token
        self._token_bytes = token.encode()
        self._clock = clock
        self._hinted: OrderedDict[str, float] = OrderedDict()  # scan id -> when, oldest first

    def __repr__(self) -> str:
        return f"<CallbackReceiver public_url={self.public_url!r} token='***'>"

    @property
    def token(self) -> str:
        """The secret last segment of ``callback_url``."""
        return self._token

    @property
    def callback_url(self) -> str:
        """What to pass as ``callback_url=`` to ``scan`` and ``submit_and_wait``."""
        return f"{self.public_url}/{self._token}"

    # ---- the framework-free core ----------------------------------------------------------

    def check(self, token: str, content_length: int | None) -> int | None:
        """Before reading the body: the status to answer now (404, 413), or None to go on."""
        if not hmac.compare_digest(token.encode(errors="replace"), self._token_bytes):
            self.stats.wrong_token += 1
            logger.debug("callback with a wrong token refused")
            return 404
        if content_length is not None and content_length > self.max_body:
            self.stats.too_large += 1
            logger.debug("callback of %d bytes refused", content_length)
            return 413
        return None

    async def read_body(self, chunks: AsyncIterable[bytes]) -> bytes:
        """Read a streamed body after ``check``, at most ``max_body + 1`` bytes of it."""
        return await read_limited(chunks, self.max_body)

    def receive(self, body: bytes) -> int:
        """Handle a body read with ``read_body`` after ``check``; returns the status to send.

        204 for every well-formed callback, 413 / 400 for the others.
        """
        if len(body) > self.max_body:
            self.stats.too_large += 1
            return 413
        try:
            notice = parse_callback(body)
        except ValueError as exc:
            self.stats.bad_body += 1
            logger.debug("malformed callback refused: %s", exc)
            return 400
        self._hint(notice)
        return 204

    def _hint(self, notice: CallbackNotice) -> None:
        now = self._clock()
        while self._hinted:  # forget hints older than the window (the dict is in time order)
            oldest, when = next(iter(self._hinted.items()))
            if now - when < self.rehint_after and len(self._hinted) < _MAX_REMEMBERED:
                break
            del self._hinted[oldest]
        if notice.scan_id in self._hinted:
            self.stats.duplicate += 1
            logger.debug("duplicate callback for scan %s ignored", notice.scan_id)
            return
        # notice.status is deliberately unused: the result read decides how the scan ended.
        if self.client.notify_finished(notice.scan_id):
            self._hinted[notice.scan_id] = now
            self.stats.accepted += 1
            logger.debug("callback for scan %s: reading its result now", notice.scan_id)
        else:
            self.stats.unknown_scan += 1
            logger.debug("callback for scan %s, which nobody here waits for", notice.scan_id)

    # ---- aiohttp ------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        """The aiohttp handler; the route must have a ``{token}`` path segment."""
        status = self.check(request.match_info.get("token", ""), request.content_length)
        if status is None:
            body = await self.read_body(request.content.iter_any())
            status = self.receive(body)
        return web.Response(status=status)

    def routes(self, path: str | None = None) -> web.RouteTableDef:
        """A route table with ``POST {path}/{token}``; ``path`` defaults to ``self.path``.

        >>> app.add_routes(receiver.routes())
        """
        table = web.RouteTableDef()
        table.post(f"{self.path if path is None else path.rstrip('/')}/{{token}}")(self.handle)
        return table

    def add_routes(self, app: web.Application, path: str | None = None) -> None:
        """Add ``POST {path}/{token}`` to an aiohttp app (``path`` as in ``routes``)."""
        app.add_routes(self.routes(path))
