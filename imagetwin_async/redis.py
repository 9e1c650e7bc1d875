"""Rate limits shared through Redis: one API key's budget, many processes and hosts.

The budget belongs to the API key, not to a process: four workers each keeping 20 scans a
minute send 80. ``RedisLimiter`` keeps the ``WindowLimiter`` rule (a slot is taken before the
request is sent, stays taken while it is in flight, and frees ``per + margin`` after the
answer) in Redis, where every process that uses the same key sees the same slots:

    limits = redis_limits("redis://127.0.0.1:6379/0", api_key)
    async with limits, ImagetwinClient(api_key, scan_limit=limits.scan,
                                       result_limit=limits.result) as client:
        ...

Each operation is one Lua script (``_redis_scripts``), atomic in Redis and timed by Redis's
own clock. An in-flight slot carries a lease that the holding process renews while it lives;
a lease that runs out counts as an answer at its end, so a dead worker's slot comes back one
window later and never sooner than the server could still count its request. When Redis
cannot be reached, ``acquire`` raises ``RedisLimiterError``: nothing is sent unlimited.

Needs the ``redis`` extra (``pip install imagetwin-async[redis]``).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import math
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Coroutine, Iterator, Sequence
from types import TracebackType
from typing import Any, Final, Self, final

import attrs

from . import _redis_scripts as scripts
from ._backoff import Backoff
from ._errors import ConfigurationError, LimiterUnavailable, RateLimitBusy
from ._extras import missing_extra
from ._limit_rules import busy_error, log_pause, pause_after_429, why_wait
from ._limits import LimitState, RateLimit, Slot
from ._timings import DEFAULT_TIMINGS

try:
    import redis.asyncio
    import redis.exceptions
    from redis.commands.core import AsyncScript
except ModuleNotFoundError as _missing:  # exercised by the wheel smoke test
    raise missing_extra(_missing, "redis", "imagetwin_async.redis") from _missing

__all__ = [
    "RedisLimiter",
    "RedisLimiterError",
    "RedisLimits",
    "RedisModelStore",
    "limiter_key",
    "redis_limits",
]

log: logging.Logger = logging.getLogger("imagetwin_async.redis")

DEFAULT_LEASE: Final = 30.0
# A dead Redis must fail an acquire in seconds, not hang it: redis-py waits forever by default.
_DEFAULT_SOCKET_TIMEOUT: Final = 5.0
# Long enough that an acquire call stuck on the wire reaches Redis (or dies) before it lapses.
_VOID_MARKER_SECONDS: Final = 120.0
# Wake a hair after the time Redis named (read a round trip earlier), so a wake-up does not
# find the slot a sliver short of free and poll twice.
_WAKE_SLACK: Final = 0.0002
# Errors that mean "Redis did not do what we asked": connection, time-out, script errors.
_REDIS_ERRORS: Final = (redis.exceptions.RedisError, OSError)


class RedisLimiterError(LimiterUnavailable):
    """Redis, which holds the shared rate limit, could not be reached: nothing was sent.

    The limiter fails closed: without Redis no process can know what the others spent, so
    ``acquire`` raises this (with the Redis error as ``__cause__``) instead of sending
    unlimited. ``endpoint`` names the limiter; ``scan_may_have_started`` is always false.
    """


def limiter_key(api_key: str, group: str, *, prefix: str = "imagetwin") -> str:
    """The Redis key base of one API key's endpoint group: ``imagetwin:{3f2a...:scan}``.

    Only a SHA-256 prefix of the key is used, never the key itself. The braces are a Redis
    Cluster hash tag, keeping one limiter's keys on one node (its scripts need that).
    """
    if not api_key:
        raise ConfigurationError("limiter_key needs the API key whose budget is shared")
    digest = hashlib.sha256(api_key.encode()).hexdigest()[:16]
    return f"{prefix}:{{{digest}:{group}}}"


@attrs.frozen
class _Reply:
    """One script's answer, read from its array (see ``_redis_scripts``)."""

    status: int
    next_slot_in: float | None  # None: every slot waits for an answer
    poll_in: float
    available: int
    in_flight: int
    paused_for: float
    capacity: int
    occupied: int
    extra: tuple[str, ...]

    @classmethod
    def parse(cls, raw: Any) -> _Reply:
        values = list(raw)
        next_slot = float(values[1])
        return cls(
            status=int(values[0]),
            next_slot_in=None if next_slot < 0 else next_slot,
            poll_in=float(values[2]),
            available=int(values[3]),
            in_flight=int(values[4]),
            paused_for=float(values[5]),
            capacity=int(values[6]),
            occupied=int(values[7]),
            extra=tuple(v.decode() if isinstance(v, bytes) else str(v) for v in values[8:]),
        )


@final
class RedisLimiter:
    """A ``Limiter`` whose slots live in Redis, shared by every process using the same key.

        limiter = RedisLimiter.from_url("redis://127.0.0.1:6379/0", RateLimit(20, per=60.0),
                                        key=limiter_key(api_key, "scan"), name="POST /scan")
        client = ImagetwinClient(api_key, scan_limit=limiter)   # then: await limiter.aclose()

    Same rule as ``WindowLimiter``: at most ``limit.requests`` slots are taken at once, key-wide;
    a slot is taken before sending, stays taken while the request is in flight, and frees
    ``per + margin`` after the answer (timed by Redis's clock). Every process sharing a key
    must use the same ``RateLimit``.

    ``lease``: seconds an in-flight slot stays valid without renewal. This process renews its
    slots every ``lease / 3`` s; when it dies, its slots count as answered at lease end and
    free one ``per + margin`` later. It must outlast any stall of a live process (a frozen VM,
    a blocked event loop), not a request: a slow upload keeps renewing.

    Waiters in one process are served in order; across processes, whichever asks Redis first
    once a slot frees gets it (each waiter sleeps exactly until the time Redis named).
    ``snapshot()`` is synchronous, so it reports the state the last script call saw, with its
    times aged by the local clock; ``await refresh()`` asks Redis. ``in_flight`` counts the
    whole key, every process's requests.

    A 429 pauses every process sharing the key (Retry-After, else this process's back-off
    with full jitter) and halves the key-wide capacity until quiet windows pass.
    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        limit: RateLimit,
        *,
        key: str,
        name: str = "",
        lease: float = DEFAULT_LEASE,
        rng: random.Random | None = None,
        close_client: bool = False,
    ) -> None:
        if limit.strategy != "window":
            raise ConfigurationError(
                f"RedisLimiter keeps the 'window' strategy, not {limit.strategy!r}"
            )
        if not (isinstance(lease, int | float) and math.isfinite(lease) and lease > 0):
            raise ConfigurationError(f"lease must be a positive number of seconds, got {lease!r}")
        if not key:
            raise ConfigurationError("RedisLimiter needs a key (see limiter_key)")
        self.limit = limit
        self.key = key
        self.name: str = name or f"{limit.requests}/{limit.per:g}s"
        self.lease: float = float(lease)
        self._client = client
        self._close_client = close_client
        self._keys = [f"{key}:inflight", f"{key}:cooling", f"{key}:state", f"{key}:void"]
        self._hold = limit.per + limit.margin
        self._common = [
            limit.requests,
            repr(self._hold),
            repr(limit.per),
            repr(self.lease),
            repr(limit.max_pause),
        ]
        self._acquire_script = client.register_script(scripts.ACQUIRE)
        self._release_script = client.register_script(scripts.RELEASE)
        self._renew_script = client.register_script(scripts.RENEW)
        self._void_script = client.register_script(scripts.VOID)
        self._rate_limited_script = client.register_script(scripts.RATE_LIMITED)
        self._backoff = Backoff(limit.backoff_base, limit.backoff_cap, rng)
        # Tokens name the holder, so an operator reading the sorted set sees who holds what.
        self._token_prefix = f"{socket.gethostname()}:{os.getpid()}:"
        self._held: set[str] = set()
        # This process's waiters, first come first served, and the one task that asks Redis
        # for all of them at once (a burst of 20 costs one round trip, not 20 in a row).
        self._waiters: collections.deque[tuple[str, asyncio.Future[Slot]]] = collections.deque()
        self._pump: asyncio.Task[None] | None = None
        self._pump_sleeping = False  # between Redis calls: safe to cancel, nothing in hand
        # Our own 429s pause this process at once, before Redis hears of them. Local times are
        # time.monotonic(), the clock asyncio's loop sleeps on.
        self._paused_until = -math.inf
        self._tasks: set[asyncio.Task[object]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        # What the last script call saw, and when (time.monotonic()).
        self._state = LimitState(
            requests=limit.requests,
            per=limit.per,
            available=limit.requests,
            in_flight=0,
            next_slot_in=0.0,
            paused_for=0.0,
        )
        self._state_at = time.monotonic()

    @classmethod
    def from_url(
        cls,
        url: str,
        limit: RateLimit,
        *,
        key: str,
        name: str = "",
        lease: float = DEFAULT_LEASE,
        rng: random.Random | None = None,
        **redis_options: Any,
    ) -> RedisLimiter:
        """A limiter with its own Redis connection pool, closed by ``aclose()``.

        ``redis_options`` go to ``redis.asyncio.Redis.from_url``; socket time-outs default to
        5 s so an unreachable Redis fails an acquire instead of hanging it.
        """
        return cls(
            _connect(url, redis_options),
            limit,
            key=key,
            name=name,
            lease=lease,
            rng=rng,
            close_client=True,
        )

    # -- talking to Redis ------------------------------------------------------------------

    def _args(self, *extra: object) -> list[Any]:
        return [*self._common, *extra]

    async def _run(self, script: AsyncScript, keys: Sequence[str], *extra: object) -> _Reply:
        """Run one script, keep its view of the state, translate Redis failures."""
        try:
            raw = await script(keys=list(keys), args=self._args(*extra))
        except _REDIS_ERRORS as exc:
            raise RedisLimiterError(
                f"{self.name}: the shared rate limit in Redis is unreachable "
                f"({type(exc).__name__}: {exc}); nothing was sent",
                endpoint=self.name,
            ) from exc
        reply = _Reply.parse(raw)
        self._state = LimitState(
            requests=self.limit.requests,
            per=self.limit.per,
            available=reply.available,
            in_flight=reply.in_flight,
            next_slot_in=reply.next_slot_in,
            paused_for=reply.paused_for,
        )
        self._state_at = time.monotonic()
        return reply

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        # Slot.release(), on_rate_limited() and on_success() are synchronous by the protocol:
        # their Redis calls run as tasks, held here so they are not garbage-collected mid-way.
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quietly(self, what: str, call: Awaitable[_Reply]) -> _Reply | None:
        try:
            return await call
        except RedisLimiterError as exc:
            # Safe to drop: a slot we could not release frees on its lease.
            log.warning("%s: could not %s: %s", self.name, what, exc.__cause__ or exc)
            return None

    # -- slots -----------------------------------------------------------------------------

    def _new_token(self) -> str:
        return self._token_prefix + secrets.token_hex(8)

    def _void(self, tokens: Sequence[str]) -> None:
        """Give back slots nothing was sent with (and refuse them if a grant is still coming)."""
        marker = repr(max(_VOID_MARKER_SECONDS, 2 * self.lease))
        self._spawn(
            self._quietly(
                "give back unused slots", self._run(self._void_script, self._keys, marker, *tokens)
            )
        )

    def _granted(self, token: str) -> Slot:
        self._held.add(token)
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(self._renew_leases())
        return Slot(lambda: self._release(token))

    def _release(self, token: str) -> None:
        self._held.discard(token)
        answered = time.monotonic()
        try:
            self._spawn(self._record_answer(token, answered))
        except RuntimeError:  # no running loop (interpreter shutdown): the lease frees it
            log.warning("%s: slot released outside an event loop; it frees on its lease", self.name)

    async def _record_answer(self, token: str, answered: float) -> None:
        reply = await self._quietly(
            "record an answer",
            self._run(self._release_script, self._keys, token, repr(time.monotonic() - answered)),
        )
        if reply is not None and reply.status == 0:
            log.warning(
                "%s: a slot's lease ran out %.3g s before its answer came; the key's budget may "
                "have been exceeded (raise lease, or look for a blocked event loop)",
                self.name,
                self._hold,
            )

    async def _renew_leases(self) -> None:
        # Runs while this process holds slots; its silence is how others learn it died.
        while self._held:
            await asyncio.sleep(self.lease / 3)
            tokens = sorted(self._held)
            if not tokens:
                break
            reply = await self._quietly(
                "renew leases", self._run(self._renew_script, self._keys, *tokens)
            )
            lost = [t for t in (reply.extra if reply else ()) if t in self._held]
            if lost:
                log.warning(
                    "%s: %d slot lease(s) ran out before renewal and were freed; the key's "
                    "budget may be exceeded (raise lease, or look for a blocked event loop)",
                    self.name,
                    len(lost),
                )

    def _busy(self, message: str, retry_after: float | None) -> RateLimitBusy:
        return busy_error(self.name, message, retry_after)

    # -- the Limiter interface -------------------------------------------------------------

    def _live_waiters(self) -> int:
        return sum(1 for _, fut in self._waiters if not fut.done())

    async def acquire(self, *, block: bool = True) -> Slot:
        """Take a slot (key-wide), waiting for one unless ``block=False``.

        Raises ``RateLimitBusy`` (``block=False``, none free) or ``RedisLimiterError``.
        """
        if not block:
            return await self._acquire_now()
        token = self._new_token()
        fut: asyncio.Future[Slot] = asyncio.get_running_loop().create_future()
        self._waiters.append((token, fut))
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._serve_waiters())
        started = time.monotonic()
        try:
            slot = await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                # Granted and cancelled in the same tick: nothing was sent, give it back.
                # (Failed and cancelled in the same tick: the cancellation wins, as it should.)
                self._held.discard(token)
                fut.result()._forget()
                self._void([token])
            if self._pump is not None and self._pump_sleeping and not self._live_waiters():
                # Nobody waits any more: do not leave the pump sleeping out a pause for nobody
                # (flush and aclose would wait for it).
                self._pump.cancel()
            raise
        log.debug("%s: acquire waited %.3f s", self.name, time.monotonic() - started)
        return slot

    async def _acquire_now(self) -> Slot:
        ahead = self._live_waiters()
        if ahead:
            raise self._busy(f"{ahead} acquire(s) ahead in the queue", None)
        pause = self._paused_until - time.monotonic()
        if pause > 0:
            raise self._busy(f"paused after a 429 for {pause:.3f} s", pause)
        token = self._new_token()
        try:
            reply = await self._run(self._acquire_script, self._keys, "0", token)
        except (asyncio.CancelledError, RedisLimiterError):
            # The call may have reached Redis and taken a slot (a reply lost to a reset or a
            # time-out): give it back, or it would block the whole key until its lease ends.
            self._void([token])
            raise
        if reply.status:
            return self._granted(token)
        raise self._busy(self._why(reply), reply.next_slot_in)

    def _hand_out(self, waiting: list[tuple[str, asyncio.Future[Slot]]], reply: _Reply) -> set[str]:
        """Give the granted slots to their waiters; return the granted tokens."""
        granted = set(reply.extra)
        unused = []
        for token, fut in waiting:
            if token not in granted:
                continue
            if fut.done():  # cancelled while we asked: nothing will be sent
                unused.append(token)
            else:
                fut.set_result(self._granted(token))
        if unused:
            self._void(unused)
        self._waiters = collections.deque(
            (t, f) for t, f in self._waiters if t not in granted and not f.done()
        )
        return granted

    async def _serve_waiters(self) -> None:
        """Ask Redis for slots for every waiting task, in order, until none waits."""
        batch: list[str] = []
        try:
            while True:
                while self._waiters and self._waiters[0][1].done():
                    self._waiters.popleft()  # cancelled
                if not self._waiters:
                    return
                pause = self._paused_until - time.monotonic()
                if pause > 0:
                    await self._pump_sleep(pause)
                    continue
                waiting = [(t, f) for t, f in self._waiters if not f.done()]
                batch = [t for t, _ in waiting[: self.limit.requests]]
                reply = await self._run(self._acquire_script, self._keys, "0", *batch)
                batch = []
                granted = self._hand_out(waiting, reply)
                if self._waiters and not granted:
                    log.debug(
                        "%s: %d acquire(s) wait %.3f s: %s",
                        self.name,
                        len(self._waiters),
                        reply.poll_in,
                        self._why(reply),
                    )
                    await self._pump_sleep(reply.poll_in + _WAKE_SLACK)
        except asyncio.CancelledError:
            if batch:
                self._void(batch)  # our call may have taken slots for them
            raise
        except Exception as exc:
            if batch:
                self._void(batch)  # likewise when the reply was lost, not only on cancel
            # Fail closed: every waiter learns Redis is gone; none is let through.
            self._fail_waiters(exc)

    async def _pump_sleep(self, seconds: float) -> None:
        self._pump_sleeping = True
        try:
            await asyncio.sleep(seconds)
        finally:
            self._pump_sleeping = False

    def _fail_waiters(self, exc: Exception) -> None:
        for _, fut in self._waiters:
            if not fut.done():
                error = RedisLimiterError(str(exc), endpoint=self.name)
                error.__cause__ = exc.__cause__ if isinstance(exc, RedisLimiterError) else exc
                fut.set_exception(error)
        self._waiters.clear()

    def _why(self, reply: _Reply) -> str:
        return why_wait(
            paused_for=reply.paused_for,
            ahead=0,
            in_flight=reply.in_flight,
            capacity=reply.capacity,
            size=self.limit.requests,
            per=self.limit.per,
            scope=" (key-wide)",
        )

    def on_rate_limited(self, retry_after: float | None) -> float:
        """Pause this process now and, through Redis, every process sharing the key (never
        longer than ``limit.max_pause``, whatever Retry-After says)."""
        pause = pause_after_429(self._backoff, retry_after, max_pause=self.limit.max_pause)
        now = time.monotonic()
        self._paused_until = max(self._paused_until, now + pause)
        log_pause(
            log, self.name, retry_after, self._backoff, pause, scope="every acquire on the key"
        )
        self._spawn(self._share_pause(pause))
        return max(0.0, self._paused_until - now)

    async def _share_pause(self, pause: float) -> None:
        await self._quietly(
            "share a 429 pause",
            self._run(self._rate_limited_script, self._keys, repr(pause)),
        )

    def on_success(self) -> None:
        """A non-429 answer ends this process's back-off streak."""
        self._backoff.reset()

    def snapshot(self) -> LimitState:
        """The state the last script call saw, its times aged by the local clock.

        Synchronous (the ``Limiter`` protocol), so it cannot ask Redis: use ``refresh()``
        for a fresh reading. ``available`` is 0 while this process has waiters or is paused.
        """
        age = time.monotonic() - self._state_at
        state = self._state
        local_pause = self._paused_until - time.monotonic()
        paused_for = max(local_pause, state.paused_for - age, 0.0)
        next_slot = None if state.next_slot_in is None else max(0.0, state.next_slot_in - age)
        if next_slot is not None:
            next_slot = max(next_slot, paused_for)
        return attrs.evolve(
            state,
            available=0 if self._live_waiters() or paused_for > 0 else state.available,
            next_slot_in=next_slot,
            paused_for=paused_for,
        )

    async def refresh(self) -> LimitState:
        """Read the key-wide state from Redis (taking nothing) and return ``snapshot()``.

        Pending writes of this limiter (releases, pauses) land first, so it reflects them; it
        never waits for a slot or a pause, only for those writes and one round trip.
        """
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self._run(self._acquire_script, self._keys, "1")
        return self.snapshot()

    # -- life cycle ------------------------------------------------------------------------

    async def flush(self) -> None:
        """Wait for pending background writes (releases, shared pauses, slots given back) to
        reach Redis, including a last acquire call for waiters that were cancelled meanwhile."""
        while True:
            pending: list[asyncio.Future[Any]] = list(self._tasks)
            if self._pump is not None and not self._pump.done() and not self._live_waiters():
                pending.append(self._pump)
            if not pending:
                return
            await asyncio.gather(*pending, return_exceptions=True)

    async def aclose(self) -> None:
        """Flush pending writes, stop renewing leases, and close the Redis connection if this
        limiter opened it (``from_url``). Slots still held free on their lease."""
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        self._fail_waiters(RedisLimiterError(f"{self.name}: the limiter was closed"))
        await self.flush()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
        if self._close_client:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<RedisLimiter {self.name!r} key={self.key!r} held={len(self._held)}>"


@final
class RedisLimits:
    """The scan and result limiters of one API key, sharing one Redis connection pool.

        limits = redis_limits("redis://127.0.0.1:6379/0", api_key)
        async with limits:                            # closes the pool on exit
            client = ImagetwinClient(api_key, scan_limit=limits.scan, result_limit=limits.result)

    Unpacks as ``scan, result = limits``; ``aclose()`` closes both and the pool (if owned).
    """

    def __init__(
        self, scan: RedisLimiter, result: RedisLimiter, client: redis.asyncio.Redis, *, owned: bool
    ) -> None:
        self.scan = scan
        self.result = result
        self._client = client
        self._owned = owned

    def __iter__(self) -> Iterator[RedisLimiter]:
        return iter((self.scan, self.result))

    async def aclose(self) -> None:
        """Flush both limiters and close the connection pool if ``redis_limits`` opened it."""
        await self.scan.aclose()
        await self.result.aclose()
        if self._owned:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<RedisLimits scan={self.scan.key!r} result={self.result.key!r}>"


def redis_limits(
    redis_url: str | redis.asyncio.Redis,
    api_key: str | None = None,
    *,
    scan_limit: RateLimit = DEFAULT_TIMINGS.scan_limit,
    result_limit: RateLimit = DEFAULT_TIMINGS.result_limit,
    prefix: str = "imagetwin",
    lease: float = DEFAULT_LEASE,
    **redis_options: Any,
) -> RedisLimits:
    """Shared scan and result limiters for ``api_key`` (default: ``IMAGETWIN_API_KEY``).

        scan, result = redis_limits("redis://redis:6379/0", api_key)
        client = ImagetwinClient(api_key, scan_limit=scan, result_limit=result)

    ``redis_url`` is a URL (the pool is opened here and closed by ``RedisLimits.aclose``) or
    a ``redis.asyncio.Redis`` you own and close. The keys are ``limiter_key(api_key, "scan")``
    and ``limiter_key(api_key, "result")`` under ``prefix``.
    """
    key = api_key if api_key is not None else os.environ.get("IMAGETWIN_API_KEY")
    if not key:
        raise ConfigurationError(
            "redis_limits needs the API key whose budget is shared: pass api_key or set "
            "IMAGETWIN_API_KEY"
        )
    owned = isinstance(redis_url, str)
    client = _connect(redis_url, redis_options) if isinstance(redis_url, str) else redis_url
    scan_key = limiter_key(key, "scan", prefix=prefix)
    result_key = limiter_key(key, "result", prefix=prefix)
    scan = RedisLimiter(client, scan_limit, key=scan_key, name="POST /scan", lease=lease)
    result = RedisLimiter(client, result_limit, key=result_key, name="GET /result", lease=lease)
    return RedisLimits(scan, result, client, owned=owned)


def _connect(url: str, options: dict[str, Any]) -> redis.asyncio.Redis:
    options.setdefault("socket_timeout", _DEFAULT_SOCKET_TIMEOUT)
    options.setdefault("socket_connect_timeout", _DEFAULT_SOCKET_TIMEOUT)
    return redis.asyncio.Redis.from_url(url, **options)


# A duration-model state is a few KB; a value far larger under our key is not ours to parse.
_MAX_MODEL_STATE: Final = 1 << 20


class RedisModelStore:
    """What the poll scheduler learned about scan durations, shared by a fleet through Redis.

        store = RedisModelStore(redis.asyncio.Redis.from_url(url), api_key)
        client = ImagetwinClient(api_key, model_store=store)

    One value per API key (``imagetwin:{<sha256 prefix>:durations}``, never the key itself),
    expiring after ``ttl`` seconds unused; the last process to save wins. Each process still
    learns on its own and saves what it saw when its scheduler closes (and every so often).
    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        api_key: str,
        *,
        prefix: str = "imagetwin",
        ttl: float | None = 30 * 86400.0,
    ) -> None:
        self._redis = client
        self.key: str = limiter_key(api_key, "durations", prefix=prefix)
        self.ttl = ttl

    def __repr__(self) -> str:
        return f"RedisModelStore(key={self.key!r})"

    async def load(self) -> str | None:
        value = await self._redis.get(self.key)
        if value is None:
            return None
        data = value if isinstance(value, bytes) else str(value).encode()
        if len(data) > _MAX_MODEL_STATE:
            log.warning("ignoring the duration model in Redis: larger than 1 MiB")
            return None
        return data.decode("utf-8", errors="replace")

    async def save(self, state: str) -> None:
        expire = None if self.ttl is None else max(1, math.ceil(self.ttl))
        await self._redis.set(self.key, state, ex=expire)
