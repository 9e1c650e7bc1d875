"""A fleet on one API key: workers, replicas and pods share callbacks and results through Redis.

Rate limits are shared by ``imagetwin_async.redis``; a ``Fleet`` shares the rest of what one
process would know:

- **Callbacks reach the waiter.** Whichever worker receives Imagetwin's callback (one shared
  token, from configuration) hands it to the fleet: a Redis *stream* entry that every worker
  reads at once, and a key kept ``callback_ttl`` seconds for a wait that starts later (on any
  worker). The worker waiting for that scan reads it now.
- **One read per finished scan.** Reads go through a per-scan lease (a ``redis-py`` lock): one
  worker reads, the others wait for its answer on the stream. A finished result (or the scan's
  failure) is stored ``result_ttl`` seconds, so a wait for it anywhere costs no read at all.

Why a stream rather than pub/sub: a worker whose connection to Redis blips, or that is busy for
a moment, reads the entries it missed from where it stopped (pub/sub would drop them and leave
that scan to the fallback poll); the stream is capped (``MAXLEN ~``), so it never grows.

When Redis cannot be reached, each worker goes on alone: reads go straight to the API (through
its own limiter, which, if shared through the same Redis, refuses to send: ``RedisLimiterError``),
callbacks hint only the worker that received them, and nothing waits on Redis longer than its
socket time-out. Nothing here sends a scan, so nothing here can pay for one twice.

    >>> fleet = Fleet.from_url("redis://redis:6379/0", api_key)
    >>> async with ImagetwinClient(api_key) as client, fleet.attach(client):
    ...     receiver = CallbackReceiver(fleet, public_url, token=shared_token)

``imagetwin_async.fastapi.imagetwin_lifespan(redis_url=...)`` sets all of it up in one place.
Needs the ``redis`` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any, Final, Literal

import attrs
import redis.asyncio
import redis.exceptions

from ._client import ImagetwinClient
from ._convert import structure, unstructure
from ._durations import DurationModel, ScanFeatures
from ._errors import ConfigurationError, ImagetwinError, ScanFailed, ScanNotFound
from ._limits import RateLimit
from ._models import ScanPending, ScanResult
from ._polling import PollFn
from .redis import RedisLimits, limiter_key, redis_limits

__all__ = ["Fleet", "FleetError", "FleetStats", "open_fleet"]

log: logging.Logger = logging.getLogger("imagetwin_async.fleet")

_REDIS_ERRORS: Final = (redis.exceptions.RedisError, OSError, TimeoutError)
_SOCKET_TIMEOUT: Final = 5.0
# How long one XREAD blocks: short enough to notice a closed fleet, long enough to cost nothing.
_BLOCK_MS: Final = 1000
_STREAM_MAXLEN: Final = 10_000
_ENDPOINT: Final = "GET /result/{scanId}"
_CLAIM_CHUNK: Final = 500
# Claim (or keep) the reader role of each scan in KEYS for ARGV[1], for ARGV[2] ms.
# Per key: 2 = newly ours, 1 = still ours, 0 = another live worker's.
_CLAIM: Final = """
local out = {}
for i, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if not holder then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    out[i] = 2
  elseif holder == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""
# Give up the reader role of each scan in KEYS that ARGV[1] still holds.
_RELEASE: Final = """
local released = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then released = released + redis.call('DEL', key) end
end
return released
"""


class FleetError(ImagetwinError):
    """The fleet's Redis could not be reached for a question only it can answer (``peek``)."""


@attrs.define
class FleetStats:
    """What this worker did through the fleet (each worker counts its own).

    ``callbacks_shared``: callbacks this worker received and handed to the fleet.
    ``hints_delivered``: callbacks from other workers that hinted a scan waited for here.
    ``results_shared``: reads answered from the fleet's store or another worker's read (no API
    read). ``api_reads``: reads this worker made through the lease. ``deferred``: polls left
    to the scan's reader (another live worker waiting for it). ``takeovers``: scans whose
    reader died and this worker took over. ``fallbacks``: operations done alone because Redis
    failed.
    """

    callbacks_shared: int = 0
    hints_delivered: int = 0
    results_shared: int = 0
    api_reads: int = 0
    deferred: int = 0
    takeovers: int = 0
    fallbacks: int = 0


class Fleet:
    """Shares callbacks and finished results among the processes of one API key.

        >>> fleet = Fleet.from_url(os.environ["IMAGETWIN_REDIS_URL"], api_key)
        >>> async with fleet.attach(client):
        ...     result = await client.wait_for_result(scan_id)  # one read fleet-wide

    Use it as the ``CallbackReceiver``'s target (it has ``notify_finished``) so callbacks
    reach whichever worker waits. ``result_ttl``: how long a finished result stays shared;
    ``callback_ttl``: how long a callback is kept for a wait that has not started yet;
    ``read_lease``: how long one worker may hold a scan's read before another may try;
    ``reader_ttl``: a scan waited for by several
    workers is polled by one of them, its *reader*; when the reader dies the others take over
    within this many seconds.
    """

    def __init__(
        self,
        redis_client: redis.asyncio.Redis,
        api_key: str,
        *,
        prefix: str = "imagetwin",
        result_ttl: float = 3600.0,
        callback_ttl: float = 900.0,
        read_lease: float = 30.0,
        reader_ttl: float = 10.0,
        owns_redis: bool = False,
    ) -> None:
        for name, value in (
            ("result_ttl", result_ttl),
            ("callback_ttl", callback_ttl),
            ("read_lease", read_lease),
            ("reader_ttl", reader_ttl),
        ):
            if not value > 0:
                raise ConfigurationError(f"{name} must be > 0, got {value!r}")
        self._redis = redis_client
        self._base = limiter_key(api_key, "fleet", prefix=prefix)
        self._stream = f"{self._base}:events"
        self.result_ttl = result_ttl
        self.callback_ttl = callback_ttl
        self.read_lease = read_lease
        self.reader_ttl = reader_ttl
        self._claim = redis_client.register_script(_CLAIM)
        self._release = redis_client.register_script(_RELEASE)
        self._watched: set[str] = set()  # scans someone here waits for
        self._reader_of: set[str] = set()  # ...of which this worker is the fleet's reader
        self._heartbeat: asyncio.Task[None] | None = None
        self._stopping = False
        self._owns_redis = owns_redis
        self._me = secrets.token_hex(8)  # tells our own stream entries from the others'
        self._client: ImagetwinClient | None = None
        self._listener: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reads: dict[str, list[asyncio.Future[None]]] = {}  # another worker reads these
        self._detach: list[Callable[[], None]] = []
        self._model: DurationModel | None = None
        self.stats: FleetStats = FleetStats()

    @classmethod
    def from_url(cls, url: str, api_key: str, **options: Any) -> Fleet:
        """A fleet on its own connection pool to ``url`` (closed with the fleet)."""
        redis_options = {
            "socket_timeout": _SOCKET_TIMEOUT,
            "socket_connect_timeout": _SOCKET_TIMEOUT,
            **options.pop("redis_options", {}),
        }
        client = redis.asyncio.Redis.from_url(url, **redis_options)
        return cls(client, api_key, owns_redis=True, **options)

    def __repr__(self) -> str:
        return f"<Fleet {self._base!r}>"

    # ---- wiring ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def attach(self, client: ImagetwinClient) -> AsyncIterator[Fleet]:
        """Share ``client``'s reads and callbacks with the fleet while the block runs."""
        if self._client is not None:
            raise ConfigurationError("a Fleet serves one client at a time")
        self._client = client
        scheduler = client.scheduler
        original = scheduler.wrap_poll(self._shared_read)

        def unwrap() -> None:
            scheduler.wrap_poll(lambda _: original)

        # The duration model learns from every worker's scans, not a quarter of them: each
        # observation made here is also sent to the others (and theirs come in on the stream).
        self._model = scheduler.model

        def share(low: float, high: float, features: ScanFeatures | None) -> None:
            self._spawn(self._share_observation(low, high, features))

        unshare_model = scheduler.add_observation_listener(share)
        self._detach = [unwrap, unshare_model, scheduler.add_watch_listener(self._on_watch)]
        last_id = await self._stream_tail()
        loop = asyncio.get_running_loop()
        self._stopping = False
        self._listener = loop.create_task(self._listen(last_id), name="imagetwin-fleet")
        self._heartbeat = loop.create_task(self._keep_readers(), name="imagetwin-fleet-readers")
        try:
            yield self
        finally:
            await self._stop()

    async def _stop(self) -> None:
        for undo in self._detach:
            undo()
        self._detach = []
        self._stopping = True
        tasks = [t for t in (self._heartbeat, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._listener is not None:
            # Not cancelled: redis-py can leave a cancelled blocking XREAD waiting for good.
            # It sees the flag when its read returns (within _BLOCK_MS); bounded either way.
            _, late = await asyncio.wait({self._listener}, timeout=_BLOCK_MS / 1000 + 2.0)
            for task in late:
                task.cancel()
        held = sorted(self._reader_of)
        for start in range(0, len(held), _CLAIM_CHUNK):  # to the others now, not after reader_ttl
            with contextlib.suppress(*_REDIS_ERRORS):
                chunk = held[start : start + _CLAIM_CHUNK]
                await self._release(keys=[self._key("reader", s) for s in chunk], args=[self._me])
        self._listener = self._heartbeat = None
        self._watched.clear()
        self._reader_of.clear()
        self._client = None

    async def aclose(self) -> None:
        """Close the Redis pool if the fleet opened it (``from_url``)."""
        await self._stop()
        if self._owns_redis:
            await self._redis.aclose()

    async def __aenter__(self) -> Fleet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _key(self, kind: str, scan_id: str) -> str:
        return f"{self._base}:{kind}:{scan_id}"

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- what any worker may ask ---------------------------------------------------------------

    async def announce(self, scan_id: str) -> None:
        """Record that ``scan_id`` was started by this fleet (for ``peek`` on any worker)."""
        try:
            await self._redis.set(self._key("started", scan_id), "1", ex=round(self.result_ttl))
        except _REDIS_ERRORS as exc:
            raise FleetError(f"the fleet's Redis could not be reached: {exc}") from None

    async def peek(self, scan_id: str) -> ScanResult | ImagetwinError | Literal["running"] | None:
        """What the fleet knows of ``scan_id`` without a read: its result (or failure) if a
        worker read it, "running" if it was ``announce``d, None if unknown here."""
        try:
            stored, started = await self._redis.mget(
                self._key("result", scan_id), self._key("started", scan_id)
            )
        except _REDIS_ERRORS as exc:
            raise FleetError(f"the fleet's Redis could not be reached: {exc}") from None
        found = _decode(stored)
        if found is not None:
            return found
        return "running" if started is not None else None

    # ---- callbacks ---------------------------------------------------------------------------

    def notify_finished(self, scan_id: str) -> bool:
        """A callback for ``scan_id`` arrived here: hint this worker and hand it to the fleet.

        Always True (someone in the fleet may wait), so the receiver's duplicate filter works.
        """
        self._spawn(self._share_callback(scan_id))
        return True

    async def _share_callback(self, scan_id: str) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._key("callback", scan_id), "1", ex=round(self.callback_ttl))
                self._xadd(pipe, "cb", scan_id)
                await pipe.execute()
            self.stats.callbacks_shared += 1
        except _REDIS_ERRORS as exc:
            self.stats.fallbacks += 1
            log.warning("could not share a callback with the fleet (%s): this worker only", exc)
        if self._client is not None:
            self._client.notify_finished(scan_id)

    def _xadd(self, pipe: Any, kind: str, scan_id: str, done: bool = False) -> None:
        fields = {"k": kind, "s": scan_id, "p": self._me, "d": "1" if done else "0"}
        pipe.xadd(self._stream, fields, maxlen=_STREAM_MAXLEN, approximate=True)

    def _on_watch(self, scan_id: str, watching: bool) -> None:
        if watching:
            # A wait starts: another worker may have had this scan's callback (or its result),
            # and may already be its reader.
            self._watched.add(scan_id)
            self._spawn(self._look_up(scan_id))
            self._spawn(self._claim_readers([scan_id], takeover=False))
        else:
            self._watched.discard(scan_id)
            if scan_id in self._reader_of:
                self._reader_of.discard(scan_id)
                self._spawn(self._give_up(scan_id))

    async def _give_up(self, scan_id: str) -> None:
        with contextlib.suppress(*_REDIS_ERRORS):
            await self._release(keys=[self._key("reader", scan_id)], args=[self._me])

    async def _claim_readers(self, scan_ids: list[str], *, takeover: bool) -> None:
        ttl_ms = round(self.reader_ttl * 1000)
        for start in range(0, len(scan_ids), _CLAIM_CHUNK):
            chunk = scan_ids[start : start + _CLAIM_CHUNK]
            try:
                answers: Any = await self._claim(
                    keys=[self._key("reader", s) for s in chunk], args=[self._me, ttl_ms]
                )
            except _REDIS_ERRORS:
                self.stats.fallbacks += 1
                return
            for scan_id, answer in zip(chunk, answers, strict=True):
                if int(answer) == 0 or scan_id not in self._watched:
                    self._reader_of.discard(scan_id)
                    continue
                newly = scan_id not in self._reader_of
                self._reader_of.add(scan_id)
                if takeover and newly and int(answer) == 2 and self._client is not None:
                    # Its reader died (or stopped waiting): read it now, not at our next poll.
                    self.stats.takeovers += 1
                    self._client.scheduler.hint(scan_id)

    async def _keep_readers(self) -> None:
        while True:
            await asyncio.sleep(self.reader_ttl / 3)
            await self._claim_readers(sorted(self._watched), takeover=True)

    async def _look_up(self, scan_id: str) -> None:
        try:
            callback, result = await self._redis.mget(
                self._key("callback", scan_id), self._key("result", scan_id)
            )
        except _REDIS_ERRORS:
            self.stats.fallbacks += 1
            return
        if (callback is not None or result is not None) and self._client is not None:
            self._client.scheduler.hint(scan_id)

    # ---- the stream --------------------------------------------------------------------------

    async def _stream_tail(self) -> str:
        try:
            entries: Any = await self._redis.xrevrange(self._stream, count=1)
        except _REDIS_ERRORS:
            self.stats.fallbacks += 1
            return "$"
        return _text(entries[0][0]) if entries else "0-0"

    async def _listen(self, last_id: str) -> None:
        pause = 0.1
        while not self._stopping:
            try:
                batches: Any = await self._redis.xread({self._stream: last_id}, block=_BLOCK_MS)
                pause = 0.1
            except _REDIS_ERRORS as exc:
                self.stats.fallbacks += 1
                log.warning("fleet stream unreadable (%s); retrying in %.1f s", exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
                continue
            for _stream, entries in batches or ():
                if self._stopping:
                    return
                for entry_id, fields in entries:
                    last_id = _text(entry_id)
                    self._on_event({_text(k): _text(v) for k, v in fields.items()})

    async def _share_observation(
        self, low: float, high: float | None, features: ScanFeatures | None = None
    ) -> None:
        fields: Any = {"k": "ob", "p": self._me, "lo": repr(low)}
        fields["hi"] = "" if high is None else repr(high)
        if features is not None:
            fields["fp"] = "" if features.pages is None else str(features.pages)
            fields["fi"], fields["fs"] = str(features.images), str(features.size)
        try:
            await self._redis.xadd(self._stream, fields, maxlen=_STREAM_MAXLEN, approximate=True)
        except _REDIS_ERRORS:
            self.stats.fallbacks += 1

    def _on_event(self, event: dict[str, str]) -> None:
        scan_id, kind = event.get("s", ""), event.get("k")
        if event.get("p") == self._me or self._client is None:
            return
        if kind == "ob":
            self._learn(event.get("lo", ""), event.get("hi", ""), _features(event))
            return
        if not scan_id:
            return
        if kind == "cb":
            if self._client.notify_finished(scan_id):
                self.stats.hints_delivered += 1
        elif kind == "rd":
            for future in self._reads.pop(scan_id, ()):
                if not future.done():
                    future.set_result(None)
            if event.get("d") == "1":
                # Finished: a wait for it here takes the stored result now, without a read.
                self._client.scheduler.hint(scan_id)

    def _learn(self, low_text: str, high_text: str, features: ScanFeatures | None) -> None:
        """Another worker saw a scan take between low and high seconds: learn it here too."""
        low, high = _duration(low_text), _duration(high_text) if high_text else None
        if low is None or self._model is None or (high is not None and high < low):
            return  # a malformed entry teaches nothing
        self._model.observe(low, high, features)

    # ---- shared reads ------------------------------------------------------------------------

    def _shared_read(self, read: PollFn) -> PollFn:
        async def shared(scan_id: str) -> ScanResult | ScanPending:
            try:
                raw, reader = await self._redis.mget(
                    self._key("result", scan_id), self._key("reader", scan_id)
                )
                stored = _decode(raw)
                if stored is not None:
                    return self._shared(stored)
                if reader is None:  # nobody polls it for the fleet yet: try to be the one
                    await self._claim_readers([scan_id], takeover=False)
                elif _text(reader) == self._me:
                    self._reader_of.add(scan_id)
                if scan_id not in self._reader_of:
                    # Another live worker polls this scan for the fleet; its answer reaches us
                    # on the stream (a hint), so this poll costs no read.
                    self.stats.deferred += 1
                    return ScanPending(scan_id)
                lease = self._redis.lock(
                    self._key("reading", scan_id), timeout=self.read_lease, blocking=False
                )
                taken = await lease.acquire()
            except _REDIS_ERRORS as exc:
                self.stats.fallbacks += 1
                log.debug("fleet unreachable (%s): reading %s alone", exc, scan_id)
                return await read(scan_id)
            if not taken:
                return await self._await_other_read(scan_id)
            self.stats.api_reads += 1
            value: str | None = None
            try:
                answer = await read(scan_id)
            except (ScanFailed, ScanNotFound) as exc:
                value = _encode_error(exc)
                raise
            else:
                if isinstance(answer, ScanResult):
                    value = json.dumps({"result": unstructure(answer)})
                return answer
            finally:
                # Shared once this worker's waiters have their answer: off the critical path.
                # (Also after a failed read: the others, woken, read next themselves.)
                self._spawn(self._share_read(lease, scan_id, value))

        return shared

    async def _share_read(self, lease: Any, scan_id: str, value: str | None) -> None:
        await self._store(scan_id, value, done=value is not None)
        with contextlib.suppress(*_REDIS_ERRORS, redis.exceptions.LockError):
            await lease.release()

    async def _store(self, scan_id: str, value: str | None, *, done: bool) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                if value is not None:
                    pipe.set(self._key("result", scan_id), value, ex=round(self.result_ttl))
                self._xadd(pipe, "rd", scan_id, done=done)
                await pipe.execute()
        except _REDIS_ERRORS as exc:
            self.stats.fallbacks += 1
            log.debug("could not share the read of %s (%s)", scan_id, exc)

    async def _await_other_read(self, scan_id: str) -> ScanResult | ScanPending:
        """Another worker reads this scan now: take its answer instead of reading again."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reads.setdefault(scan_id, []).append(future)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(future, self.read_lease)
            stored = _decode(await self._redis.get(self._key("result", scan_id)))
        except _REDIS_ERRORS:
            self.stats.fallbacks += 1
            stored = None
        finally:
            waiting = self._reads.get(scan_id, [])
            if future in waiting:
                waiting.remove(future)
                if not waiting:
                    del self._reads[scan_id]
        if stored is None:
            # Still running when the other worker read it (or it died reading): as if we had
            # read it and found it running; the schedule decides when to try again.
            return ScanPending(scan_id)
        return self._shared(stored)

    def _shared(self, stored: ScanResult | ImagetwinError) -> ScanResult:
        self.stats.results_shared += 1
        if isinstance(stored, ImagetwinError):
            raise stored
        return stored


def _duration(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and 0.0 <= value < 1e7 else None


def _features(event: dict[str, str]) -> ScanFeatures | None:
    """The scan's features another worker shared, or None if absent or malformed."""
    if "fi" not in event:
        return None
    try:
        pages = int(event["fp"]) if event.get("fp") else None
        images, size = int(event["fi"]), int(event.get("fs", "0"))
    except ValueError:
        return None
    if min(images, size, pages or 0) < 0 or max(images, pages or 0) > 10_000 or size > 2**40:
        return None
    return ScanFeatures(pages, images, size)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _encode_error(exc: ScanFailed | ScanNotFound) -> str:
    return json.dumps(
        {
            "error": type(exc).__name__,
            "message": exc.message,
            "status": exc.status,
            "server_message": exc.server_message,
        }
    )


def _decode(stored: bytes | str | None) -> ScanResult | ImagetwinError | None:
    """A stored answer: the result, or the scan's failure as the API said it; None if absent.

    A damaged entry counts as absent (the scan is read again): Redis is ours, but a wrong
    answer must never come out of it.
    """
    if stored is None:
        return None
    try:
        data = json.loads(stored)
        if "result" in data:
            return structure(data["result"], ScanResult)
        kind = ScanNotFound if data["error"] == "ScanNotFound" else ScanFailed
        return kind(
            str(data["message"]),
            status=int(data["status"]),
            endpoint=_ENDPOINT,
            server_message=data.get("server_message"),
        )
    except (ValueError, KeyError, TypeError, ImagetwinError):
        log.warning("a damaged result in the fleet's store was ignored")
        return None


@contextlib.asynccontextmanager
async def open_fleet(
    redis_url: str,
    api_key: str,
    *,
    scan_limit: RateLimit = RateLimit(20, per=60.0),  # noqa: B008 - frozen value
    result_limit: RateLimit = RateLimit(60, per=60.0),  # noqa: B008 - frozen value
    **fleet_options: Any,
) -> AsyncIterator[tuple[RedisLimits, Fleet]]:
    """One Redis pool for a worker: the key's shared rate limits and its ``Fleet``.

        >>> async with open_fleet(redis_url, api_key) as (limits, fleet):
        ...     client = ImagetwinClient(api_key, scan_limit=limits.scan,
        ...                              result_limit=limits.result)
        ...     async with client, fleet.attach(client):
        ...         ...

    Connections time out after 5 s, so a dead Redis fails a call (``RedisLimiterError`` for a
    request; the fleet falls back to this worker alone) instead of hanging it.
    """
    pool = redis.asyncio.Redis.from_url(
        redis_url, socket_timeout=_SOCKET_TIMEOUT, socket_connect_timeout=_SOCKET_TIMEOUT
    )
    try:
        limits = redis_limits(pool, api_key, scan_limit=scan_limit, result_limit=result_limit)
        fleet = Fleet(pool, api_key, **fleet_options)
        async with limits:
            try:
                yield limits, fleet
            finally:
                await fleet.aclose()
    finally:
        await pool.aclose()
