"""The aiohttp layer: send what the core built, retry what is safe, translate failures.

This is the one place where aiohttp and asyncio exceptions become ours (``raise ... from``),
where the API key is attached (only to requests for the API's own origin), and where the rate
limiters are consulted: a slot is held for each attempt from send to answer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import itertools
import logging
import math
import os
import random
import re
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Final

import aiohttp
import attrs
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from . import _telemetry as telemetry
from ._backoff import full_jitter_ceiling
from ._errors import (
    ClientClosed,
    ConfigurationError,
    InvalidArgument,
    LimiterUnavailable,
    ResponseTooLarge,
    TransportError,
    UploadChanged,
)
from ._limits import Limiter
from ._multipart import form_data
from ._protocol import (
    Delivery,
    EndpointGroup,
    Request,
    RetryDecision,
    ambiguous_error,
    failure_decision,
    oversized_answer,
    parse_retry_after,
    report_link_refusal,
    retry_decision,
)
from ._servicetime import ServiceClock
from ._uploads import Upload

__all__ = [
    "VIEW_OUTLIVED",
    "ApiKey",
    "BeforeSend",
    "RawResponse",
    "RetryPolicy",
    "SharedSession",
    "Transport",
]

logger = logging.getLogger("imagetwin_async")

# Runs once a rate-limit slot is held, right before each attempt goes out. The layer that
# starts the request passes it down (a batch records its intent to send in its journal there);
# this layer knows nothing of what it does.
BeforeSend = Callable[[], Awaitable[None]]

_REDACTED = "[redacted]"
_CHUNK = 256 * 1024
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*")
_ANSWER_LOG = 128  # > any per-window request budget the API has (60 reads a minute)


class ApiKey:
    """The API key, kept out of every repr, str and log line.

    >>> key = ApiKey("sk-123")
    >>> key.redact(b'{"echo": "sk\\u002d123"}')
    b'{"echo": "[redacted]"}'
    """

    __slots__ = ("_lowered", "_pattern", "_value")

    def __init__(self, value: str) -> None:
        if (
            not isinstance(value, str)
            or not value.strip()
            or not all(" " <= c <= "~" for c in value.strip())
        ):
            raise ConfigurationError("the API key is empty or malformed")
        self._value = value.strip()
        self._pattern = _escaped_forms(self._value)
        self._lowered = self._value.lower().encode()

    def reveal(self) -> str:
        return self._value

    def redact(self, data: bytes) -> bytes:
        """``data`` with every occurrence of the key blanked (servers may echo headers).

        Also every escaped spelling a decoder would turn back into the key: JSON's ``\\/``
        and ``\\uXXXX``, percent-encoding and HTML character references, mixed freely.
        """
        if not self.may_be_in(data):
            return data
        return self._pattern.sub(_REDACTED.encode(), data)

    def may_be_in(self, data: bytes) -> bool:
        """False only if ``data`` cannot hold the key in any spelling ``redact`` knows.

        Every escaped spelling has a backslash, a percent sign or an ampersand in it; without
        any of those the key can only be there as it is (in any letter case, as the pattern
        matches). Three byte searches and a lower-casing cost a fraction of the pattern.
        """
        return b"\\" in data or b"%" in data or b"&" in data or self._lowered in data.lower()

    def redact_text(self, text: str) -> str:
        """``redact`` for text (an exception's message, a log line)."""
        return self.redact(text.encode("utf-8", "surrogateescape")).decode(
            "utf-8", "surrogateescape"
        )

    def appears_in(self, text: str) -> bool:
        data = text.encode("utf-8", "surrogateescape")
        return self.may_be_in(data) and self._pattern.search(data) is not None

    def __repr__(self) -> str:
        return "ApiKey('***')"

    __str__ = __repr__


def _escaped_forms(key: str) -> re.Pattern[bytes]:
    """One pattern matching ``key`` with each character written plainly or escaped."""
    parts = []
    for char in key:
        code = ord(char)
        forms = [
            re.escape(char.encode()),
            rb"\\u0*" + f"{code:x}".encode(),  # JSON, JavaScript
            b"%" + f"{code:02x}".encode(),  # a URL
            b"&#0*" + str(code).encode() + b";",  # HTML
            b"&#x0*" + f"{code:x}".encode() + b";",
        ]
        if char in '/\\"':
            forms.append(rb"\\" + re.escape(char.encode()))
        parts.append(b"(?:" + b"|".join(forms) + b")")
    return re.compile(b"".join(parts), re.IGNORECASE)


@attrs.frozen
class RetryPolicy:
    """How often and how patiently to retry what is safe to retry.

    Back-off is exponential with full jitter: attempt ``n`` waits a uniform random time in
    ``[0, min(cap, base * 2**n)]`` (or the server's Retry-After when it sends one).

    ``max_retry_after``: the longest Retry-After honoured (seconds); an answer asking for more
    is handed to the caller at once (``RateLimited`` / ``ServiceUnavailable`` carrying the
    server's value) instead of freezing the endpoint. ``limiter_outage_timeout``: how long a
    limiter that cannot be reached (Redis down: nothing was sent) is retried with back-off
    before its ``LimiterUnavailable`` is raised.
    """

    max_retries: int = attrs.field(default=5)
    backoff_base: float = attrs.field(default=0.5)
    backoff_cap: float = attrs.field(default=30.0)
    max_retry_after: float = attrs.field(default=300.0, kw_only=True)
    limiter_outage_timeout: float = attrs.field(default=30.0, kw_only=True)

    @max_retries.validator
    def _check_retries(self, _: object, value: int) -> None:
        if not isinstance(value, int) or value < 0:
            raise ConfigurationError(f"max_retries must be a whole number >= 0, got {value!r}")

    @backoff_base.validator
    @backoff_cap.validator
    @max_retry_after.validator
    def _check_backoff(self, attribute: attrs.Attribute[float], value: float) -> None:
        if not _finite_number(value) or not value > 0:
            raise ConfigurationError(f"{attribute.name} must be a number > 0, got {value!r}")

    @limiter_outage_timeout.validator
    def _check_outage(self, attribute: attrs.Attribute[float], value: float) -> None:
        if not _finite_number(value) or value < 0:
            raise ConfigurationError(f"{attribute.name} must be a number >= 0, got {value!r}")

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(
            0.0, full_jitter_ceiling(self.backoff_base, self.backoff_cap, attempt + 1)
        )


@attrs.frozen
class RawResponse:
    """What came back: status, headers and the whole body (API answers are small JSON)."""

    status: int
    headers: Mapping[str, str]
    body: bytes


VIEW_OUTLIVED: Final = (
    "the client this view was made from (with_options) was closed, which ends its views; "
    "make a new one from the open client"
)


class SharedSession:
    """The aiohttp session of one client and all its views (``Transport.derive``).

    Made on first use, unless the caller passed one in (then it is only ever used, never
    closed). ``close`` closes the session made here and advances ``generation``, which ends
    every view made before it; the owner itself may be used again (a new session is made).
    """

    __slots__ = ("_owned", "_session", "_timeout", "generation")

    def __init__(
        self, session: aiohttp.ClientSession | None, timeout: aiohttp.ClientTimeout
    ) -> None:
        self._session = session
        self._owned = session is None
        self._timeout = timeout
        self.generation = 0

    def get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._owned:
                raise ConfigurationError("the aiohttp session passed to the client is closed")
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        self.generation += 1
        if self._owned and self._session is not None:
            session, self._session = self._session, None
            await session.close()


class Transport:
    """Sends ``Request``s to one API base URL with one key, through per-group limiters.

    Owns the aiohttp session unless the caller passed one in (then it is left open); its
    views (``derive``) share it.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: ApiKey,
        limiters: Mapping[EndpointGroup, Limiter],
        retry: RetryPolicy,
        timeout: aiohttp.ClientTimeout,
        session: aiohttp.ClientSession | None = None,
        rng: random.Random | None = None,
        user_agent: str | None = None,
    ) -> None:
        url = URL(base_url)
        if url.user is not None or url.password is not None:
            # aiohttp would refuse them beside our Authorization header on every request, and
            # they would show wherever the base URL is shown: say so once, naming neither.
            raise ConfigurationError(
                "base_url must not carry credentials (user:password@): the API key is the "
                f"only credential sent; got a URL for host {url.host!r}"
            )
        if not url.is_absolute() or url.scheme not in ("http", "https") or not url.host:
            raise ConfigurationError(f"base_url must be an absolute http(s) URL: {base_url!r}")
        self.base_url = url if url.path.endswith("/") else url.with_path(url.path + "/")
        self._key = api_key
        self._limiters = limiters
        self._retry = retry
        self._timeout = timeout
        self._sessions = SharedSession(session, timeout)
        # None for the transport that owns the session; a view's (``derive``): the
        # ``SharedSession.generation`` it was made in, so it fails once that session closes.
        self._generation: int | None = None
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        # Every answer's Date header dates the service's clock (journals keep service time).
        self.service_clock = ServiceClock()
        # Recent answer times (monotonic) per group: a journal keeps them so that a run resumed
        # after a crash knows how much of the rate budget its predecessor spent.
        self.answer_times: dict[str, collections.deque[float]] = collections.defaultdict(
            lambda: collections.deque(maxlen=_ANSWER_LOG)
        )
        self._user_agent = user_agent
        # Built once: every API request carries the same headers (aiohttp merges them into a
        # fresh multidict per request, so this read-only one is never changed).
        self._api_headers = _ApiHeaders(
            CIMultiDict(
                {
                    "Authorization": f"Bearer {api_key.reveal()}",
                    "Accept": "application/json",
                    **({"User-Agent": user_agent} if user_agent else {}),
                }
            )
        )
        self._base = str(self.base_url)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self.outlived:
            raise ClientClosed(VIEW_OUTLIVED)
        return self._sessions.get()

    @property
    def outlived(self) -> bool:
        """Whether this is a view whose session was closed since it was made."""
        return self._generation is not None and self._generation != self._sessions.generation

    def derive(
        self, *, retry: RetryPolicy | None = None, timeout: aiohttp.ClientTimeout | None = None
    ) -> Transport:
        """A view of this transport with other retries or time-outs: the same session,
        limiters, service clock and answer log (nothing is duplicated, so the rate budget stays
        one). Closing a view closes nothing; once the owner closes, the view raises
        ``ClientClosed``."""
        view = copy.copy(self)
        view._retry = retry if retry is not None else self._retry
        view._timeout = timeout if timeout is not None else self._timeout
        if view._generation is None:
            view._generation = self._sessions.generation
        return view

    async def close(self) -> None:
        if self._generation is None:  # a view's close leaves the owner's session alone
            await self._sessions.close()

    def url_for(self, request: Request) -> URL:
        # ``base_url`` ends with "/": resolving a plain relative path (the core's are words
        # and slashes) against it is appending it; anything else is joined by the rules.
        if _PLAIN_PATH.fullmatch(request.path):
            return URL(self._base + request.path)
        return self.base_url.join(URL(request.path))

    async def send(
        self,
        request: Request,
        *,
        upload: Upload | None = None,
        block: bool = True,
        before_send: BeforeSend | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> RawResponse:
        """``_send`` inside a trace span and metrics (see ``_telemetry``; no-op without it)."""
        with telemetry.api_call(request.method, request.endpoint, request.path) as call:
            return await self._send(
                request,
                upload=upload,
                block=block,
                before_send=before_send,
                timeout=timeout,
                call=call,
            )

    async def _send(
        self,
        request: Request,
        *,
        upload: Upload | None,
        block: bool,
        before_send: BeforeSend | None,
        timeout: aiohttp.ClientTimeout | None,
        call: telemetry.CallTrace,
    ) -> RawResponse:
        """Send ``request``, retrying only what provably had no effect.

        The final answer is returned whatever its status (the core reads it into a value or
        an error). Raises ``TransportError`` when no answer could be had, ``AmbiguousSubmission``
        when a scan POST may have started a scan without our hearing back, and ``RateLimitBusy``
        at once when ``block`` is false and no slot is free. ``before_send`` runs once a slot
        is held, right before each attempt goes out (the journal records its intent there).
        """
        limiter = self._limiters.get(request.group)
        outage_began: float | None = None
        outage_retries = 0
        for attempt in itertools.count():
            # Our errors are raised outside the except blocks, chained to a scrubbed failure:
            # an aiohttp error can hold the request's headers (the key) in its request_info,
            # and an exception raised inside ``except`` would carry it as __context__.
            failure: BaseException | None = None
            delivery = Delivery.NOT_SENT
            changed: UploadChanged | None = None
            try:
                response = await self._attempt(
                    request,
                    upload,
                    limiter,
                    attempt=attempt,
                    block=block,
                    before_send=before_send,
                    timeout=timeout or self._timeout,
                    call=call,
                )
            except LimiterUnavailable as exc:
                # Nothing was sent: wait the outage out, within its budget, then give up.
                now = time.monotonic()
                outage_began = now if outage_began is None else outage_began
                left = self._retry.limiter_outage_timeout - (now - outage_began)
                if left <= 0:
                    raise
                pause = min(self._retry.delay(outage_retries, self._rng), left)
                outage_retries += 1
                self._log_retry(request, attempt, f"limiter unavailable ({exc})", pause)
                await asyncio.sleep(pause)
                continue
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure, why = self._scrub(exc), self._key.redact_text(_describe(exc))
                delivery = (
                    Delivery.NOT_SENT if isinstance(exc, _NOT_CONNECTED) else Delivery.MAYBE_SENT
                )
                changed = _upload_changed(exc)
            if changed is not None:
                # The body was cut off before its end: nothing can have started a scan.
                raise changed
            if failure is None:
                delay = self._retry_delay(request, response, limiter, attempt, block=block)
                if delay is None:
                    return response
                self._log_retry(request, attempt, f"HTTP {response.status}", delay)
                await asyncio.sleep(delay)
                continue
            if failure_decision(delivery, request=request) is RetryDecision.AMBIGUOUS:
                raise ambiguous_error(request, why) from failure
            if attempt >= self._retry.max_retries:
                raise TransportError(
                    f"{request.endpoint}: {why} (gave up after {attempt + 1} attempts)",
                    endpoint=request.endpoint,
                ) from failure
            delay = self._retry.delay(attempt, self._rng)
            self._log_retry(request, attempt, why, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # itertools.count() never ends

    def _scrub(self, exc: BaseException) -> BaseException:
        """``exc`` to chain onto our error, or a stand-in when its chain could hold the key.

        aiohttp's response errors keep ``request_info`` (with our Authorization header) and
        a server can put anything in a status line aiohttp quotes: such an error is replaced
        by ``NetworkFailure`` with its description, redacted, and nothing chained behind it.
        """
        seen: set[int] = set()
        stack: list[BaseException] = [exc]
        while stack:
            current = stack.pop()
            if id(current) in seen:
                continue
            seen.add(id(current))
            if hasattr(current, "request_info") or self._key.appears_in(
                f"{current!r} {current.args!r}"
            ):
                return NetworkFailure(self._key.redact_text(_describe(exc)))
            stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        return exc

    def _retry_delay(
        self,
        request: Request,
        response: RawResponse,
        limiter: Limiter | None,
        attempt: int,
        *,
        block: bool,
    ) -> float | None:
        """Seconds to wait before sending again, or None: hand this answer to the caller."""
        decision = (
            retry_decision(response.status, response.headers, request=request)
            if response.status >= 300
            else RetryDecision.RAISE
        )
        if decision is RetryDecision.AMBIGUOUS:
            raise ambiguous_error(request, f"the gateway answered {response.status}")
        if decision is RetryDecision.RAISE:
            if limiter is not None:
                limiter.on_success()  # a success, or an error answer but not a rate-limit one
            return None
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if self._beyond_cap(request, retry_after):
            return None
        if decision is RetryDecision.RETRY_RATE_LIMITED and limiter is not None:
            # The limiter pauses the whole endpoint, so the next acquire waits out the pause
            # for every caller, this one included.
            limiter.on_rate_limited(retry_after)
            if not block or attempt >= self._retry.max_retries:
                return None
            return 0.0
        if attempt >= self._retry.max_retries:
            return None
        return retry_after if retry_after is not None else self._retry.delay(attempt, self._rng)

    def _beyond_cap(self, request: Request, retry_after: float | None) -> bool:
        """Whether Retry-After asks for more than we honour: then the caller gets the error
        now, carrying the server's value, and nothing is paused (a day, a date in 2100 would
        freeze the endpoint)."""
        if retry_after is None or retry_after <= self._retry.max_retry_after:
            return False
        logger.debug(
            "%s /%s: Retry-After %.0f s is beyond max_retry_after (%g s); not waiting",
            request.method,
            request.path,
            retry_after,
            self._retry.max_retry_after,
        )
        return True

    async def _attempt(
        self,
        request: Request,
        upload: Upload | None,
        limiter: Limiter | None,
        *,
        attempt: int,
        block: bool,
        before_send: BeforeSend | None = None,
        timeout: aiohttp.ClientTimeout,
        call: telemetry.CallTrace,
    ) -> RawResponse:
        if request.file_field is not None and upload is None:
            raise InvalidArgument(f"{request.endpoint} needs files to upload")
        asked = time.monotonic()
        slot = await limiter.acquire(block=block) if limiter is not None else None
        sent = time.monotonic()
        call.waited(sent - asked)
        try:
            if before_send is not None:
                await before_send()
            data: aiohttp.FormData | None = None
            if upload is not None and request.file_field is not None:
                # A FormData is spent once sent: build it afresh from the sources every attempt.
                data = form_data(
                    upload, field_name=request.file_field, extra_fields=request.form_fields
                )
            async with self.session.request(
                request.method,
                self.url_for(request),
                params=request.params or None,
                data=data,
                headers=self._api_headers,
                # Per request, so a session the caller passed in keeps our time-outs too.
                timeout=timeout,
                # A redirect could carry the key to another host; the API does not redirect.
                allow_redirects=False,
            ) as response:
                call.answered(response.status)
                body, complete = await _read_capped(response, request.max_body)
                # Any answer may echo the request's headers back (an error page, a redirect, a
                # misbehaving proxy): no body or header leaves here with the key in it.
                headers = self._scrubbed_headers(response)
                body = self._key.redact(body)
        finally:
            if slot is not None:
                slot.release()
        received = time.monotonic()
        self.service_clock.observe(sent, received, headers.get("Date"))
        self.answer_times[request.group].append(received)
        if logger.isEnabledFor(logging.DEBUG):  # not even the fields, unless someone listens
            logger.debug(
                "%s /%s -> %d (attempt %d, waited %.3fs for a slot, answered in %.3fs)",
                request.method,
                request.path,
                response.status,
                attempt + 1,
                sent - asked,
                received - sent,
                # The same facts as fields, for JSON log formatters (never the key).
                extra={
                    "method": request.method,
                    "path": f"/{request.path}",
                    "status": response.status,
                    "attempt": attempt + 1,
                    "wait": sent - asked,
                },
            )
        if not complete and (error := oversized_answer(request, response.status)) is not None:
            raise error
        return RawResponse(response.status, headers, body)

    def _scrubbed_headers(self, response: aiohttp.ClientResponse) -> Mapping[str, str]:
        """The answer's headers, with the key blanked wherever a value could hold it.

        aiohttp's own (read-only) headers when no raw value can (the usual case: no copy),
        else a copy with each value redacted. The raw bytes decide: decoding them adds no
        backslash, percent sign, ampersand or ASCII letter that was not there.
        """
        raw = b"\n".join([value for _, value in response.raw_headers])
        if not self._key.may_be_in(raw):
            return response.headers
        return CIMultiDictProxy(
            CIMultiDict(
                (name, self._key.redact_text(value)) for name, value in response.headers.items()
            )
        )

    async def download(
        self,
        url: str,
        path: Path,
        *,
        max_bytes: int,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> Path:
        """Stream ``url`` to ``path`` (atomically: a temp file renamed into place).

        No API key is sent: report links are public and may live on another host. More than
        ``max_bytes`` (decompressed) raises ``ResponseTooLarge`` and leaves nothing behind.
        ``timeout``: this download's (default: the transport's).
        """
        if (why := report_link_refusal(url, api_url=str(self.base_url))) is not None:
            raise InvalidArgument(why)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                async with await self._open_report(URL(url), timeout) as response:
                    if response.status != 200:
                        raise TransportError(
                            f"GET {response.url.with_query(None)}: HTTP {response.status}",
                            endpoint="GET report",
                        )
                    declared = response.content_length
                    if declared is not None and declared > max_bytes:
                        raise _report_too_large(max_bytes)
                    written = 0
                    async for chunk in response.content.iter_chunked(_CHUNK):
                        written += len(chunk)
                        if written > max_bytes:
                            raise _report_too_large(max_bytes)
                        await asyncio.to_thread(out.write, chunk)
            await asyncio.to_thread(os.replace, tmp_name, path)
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure, why = self._scrub(exc), self._key.redact_text(_describe(exc))
        else:
            return path
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)  # the rename consumed it on success
        raise TransportError(f"download failed: {why}", endpoint="GET report") from failure

    async def _open_report(
        self, target: URL, timeout: aiohttp.ClientTimeout | None
    ) -> aiohttp.ClientResponse:
        """GET a report, following redirects ourselves: each hop is the server's word, and is
        held to ``report_link_refusal`` as the link itself was."""
        headers = {"User-Agent": self._user_agent} if self._user_agent else None
        for _ in range(_MAX_REPORT_REDIRECTS + 1):
            response = await self.session.get(
                target, headers=headers, timeout=timeout or self._timeout, allow_redirects=False
            )
            location = response.headers.get("Location")
            if response.status not in (301, 302, 303, 307, 308) or not location:
                return response
            response.release()
            target = target.join(URL(location))
            if (why := report_link_refusal(str(target), api_url=str(self.base_url))) is not None:
                raise TransportError(f"GET report: redirected: {why}", endpoint="GET report")
        raise TransportError(
            f"GET report: more than {_MAX_REPORT_REDIRECTS} redirects", endpoint="GET report"
        )

    def _log_retry(self, request: Request, attempt: int, why: str, delay: float) -> None:
        telemetry.note_retry(request.method, request.endpoint, why)
        logger.debug(
            "%s /%s: %s; retry %d/%d in %.3fs",
            request.method,
            request.path,
            why,
            attempt + 1,
            self._retry.max_retries,
            delay,
            extra={
                "method": request.method,
                "path": f"/{request.path}",
                "attempt": attempt + 1,
                "retry_in": delay,
                "reason": why,
            },
        )


_MAX_REPORT_REDIRECTS = 5  # as browsers allow a few; a loop ends here

# aiohttp's failures that mean no connection was made (``Delivery.NOT_SENT``); what that
# allows is ``_protocol.failure_decision``'s to say.
_NOT_CONNECTED = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)


def _upload_changed(exc: BaseException) -> UploadChanged | None:
    """The ``UploadChanged`` aiohttp wrapped when our payload refused to finish, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, UploadChanged):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class _ApiHeaders(CIMultiDictProxy[str]):
    """The headers of every API request, read-only; the key stays out of its repr.

    A multidict proxy, so aiohttp takes it without converting it first.
    """

    def __repr__(self) -> str:
        return f"<_ApiHeaders {', '.join(self.keys())} (values hidden)>"

    __str__ = __repr__


class NetworkFailure(Exception):
    """Stands in for an aiohttp error that held the request (its headers carry the key)."""


def _report_too_large(max_bytes: int) -> ResponseTooLarge:
    return ResponseTooLarge(
        f"GET report: the report is larger than {max_bytes} bytes; nothing was kept",
        endpoint="GET report",
    )


async def _read_capped(response: aiohttp.ClientResponse, cap: int) -> tuple[bytes, bool]:
    """Up to ``cap`` bytes of the (decompressed) body, and whether that was all of it.

    Never holds more than ``cap`` plus one chunk: aiohttp decompresses as we read, so a
    gzip bomb is cut at the cap too. A declared length past the cap reads nothing.
    """
    declared = response.content_length
    if declared is not None and declared > cap:
        return b"", False
    chunks: list[bytes] = []
    size = 0
    while size <= cap:
        chunk = await response.content.read(min(_CHUNK, cap + 1 - size))
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
        if size <= cap and response.content.at_eof():  # all in: no read just to hear so
            return b"".join(chunks), True
    return b"".join(chunks)[:cap], False


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return (
            f"could not connect to {exc.host}:{exc.port} ({exc.os_error.strerror or exc.os_error})"
        )
    if isinstance(exc, TimeoutError):
        return "timed out waiting for the server"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
