"""A fleet on one API key: workers, replicas and pods share callbacks and results through Redis.

Rate limits are shared by ``imagetwin_async.redis``; a ``Fleet`` shares the rest of what one
process would know:

- **Callbacks reach the waiter.** Whichever worker receives Imagetwin's callback (one shared
  token, from configuration) hands it to the fleet: a Redis *stream* entry that every worker
  reads at once, and a key kept ``callback_ttl`` seconds for a wait that starts later (on any
  worker). The worker waiting for that scan reads it now.
- **One read per finished scan.** A finished result (or the scan's failure) is stored
  ``result_ttl`` seconds and announced on the stream, so a wait for it anywhere costs no read.
- **One poll schedule.** One worker at a time, elected by a fenced Redis lease
  (``_fleet_schedule``), polls every scan any worker waits for, on its own ``PollScheduler``
  with one duration model; the others register what they wait for (with its age and features)
  and take its answers. When it dies, another wins the lease within about
  ``leader_lease * 4/3`` and adopts the register. The model is kept in Redis
  (``RedisModelStore``), so a restarted worker starts warm.

Why a stream rather than pub/sub: a worker whose connection to Redis blips, or that is busy for
a moment, reads the entries it missed from where it stopped (pub/sub would drop them and leave
that scan to the fallback poll); the stream is capped (``MAXLEN ~``), so it never grows.

When Redis cannot be reached, each worker goes on alone (its own scans back on its own schedule
once Redis has been gone for ``leader_lease``): reads go straight to the API (through
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

from . import _fleet_schedule as schedule
from ._client import ImagetwinClient
from ._convert import structure, unstructure
from ._durations import DurationModel, ScanFeatures
from ._errors import (
    ConfigurationError,
    ImagetwinError,
    ScanFailed,
    ScanNotFound,
    TransportError,
)
from ._fleet_schedule import ScanInfo
from ._limits import RateLimit
from ._models import ScanPending, ScanResult
from ._polling import PollFn
from .redis import RedisLimits, RedisModelStore, limiter_key, redis_limits

__all__ = ["Fleet", "FleetError", "FleetStats", "open_fleet"]

log: logging.Logger = logging.getLogger("imagetwin_async.fleet")

_REDIS_ERRORS: Final = (redis.exceptions.RedisError, OSError, TimeoutError)
_SOCKET_TIMEOUT: Final = 5.0
# How long one XREAD blocks: short enough to notice a closed fleet, long enough to cost nothing.
_BLOCK_MS: Final = 1000
_STREAM_MAXLEN: Final = 10_000
_ENDPOINT: Final = "GET /result/{scanId}"
_CHUNK: Final = 500
# Give up the read lease of each scan in KEYS that ARGV[1] still holds (on a callback or not).
_RELEASE: Final = """
local released = 0
for _, key in ipairs(KEYS) do
  local held = redis.call('GET', key)
  if held == ARGV[1] or held == 'cb:' .. ARGV[1] then
    released = released + redis.call('DEL', key)
  end
end
return released
"""
# A lease this close to its end (a fraction of it, by the local monotonic clock, counted from
# before the renewal was sent) is not used to read: the clocks of Redis and of this host may
# run a little apart, and a read must never start after another worker may lead.
_LEASE_MARGIN: Final = 0.2


class FleetError(ImagetwinError):
    """The fleet's Redis could not be reached for a question only it can answer (``peek``)."""


@attrs.define
class FleetStats:
    """What this worker did through the fleet (each worker counts its own).

    ``callbacks_shared``: callbacks this worker received and handed to the fleet.
    ``hints_delivered``: callbacks from other workers that hinted a scan waited for here.
    ``results_shared``: reads answered from the fleet's store or another worker's read (no API
    read). ``api_reads``: reads this worker made through the API. ``deferred``: polls left
    to the fleet's leader. ``elections``: terms this worker won as the fleet's scheduler
    (``leading``: it leads now; ``term``: the epoch of its lease, else 0). ``adopted``: scans
    of other workers its schedule took on. ``fenced``: reads it refused itself because its
    lease had lapsed (a paused leader waking up). ``fallbacks``: operations done alone because
    Redis failed.
    """

    callbacks_shared: int = 0
    hints_delivered: int = 0
    results_shared: int = 0
    api_reads: int = 0
    deferred: int = 0
    elections: int = 0
    leading: bool = False
    term: int = 0
    adopted: int = 0
    fenced: int = 0
    fallbacks: int = 0


class Fleet:
    """Shares callbacks, finished results and one poll schedule among the processes of one
    API key.

        >>> fleet = Fleet.from_url(os.environ["IMAGETWIN_REDIS_URL"], api_key)
        >>> async with fleet.attach(client):
        ...     result = await client.wait_for_result(scan_id)  # one read fleet-wide

    Use it as the ``CallbackReceiver``'s target (it has ``notify_finished``) so callbacks
    reach whichever worker waits. One worker at a time, elected by a Redis lease, is the
    fleet's *scheduler*: it polls every scan any worker waits for, on one schedule, with the
    duration model every worker feeds; the others register what they wait for and take its
    answers. ``leader_lease``: how long its lease lasts unrenewed (a dead leader is replaced
    within about ``leader_lease * 4 / 3`` s); ``waiter_ttl``: how long a dead worker's
    registered scans are still polled; ``result_ttl``: how long a finished result stays
    shared; ``callback_ttl``: how long a callback is kept for a wait that has not started
    yet; ``read_lease``: how long one worker may hold a scan's read before another may try.
    ``share_model``: keep the duration model in Redis (``RedisModelStore``), so a restarted
    worker starts warm.
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
        leader_lease: float = 5.0,
        waiter_ttl: float = 15.0,
        share_model: bool = True,
        owns_redis: bool = False,
    ) -> None:
        for name, value in (
            ("result_ttl", result_ttl),
            ("callback_ttl", callback_ttl),
            ("read_lease", read_lease),
            ("leader_lease", leader_lease),
            ("waiter_ttl", waiter_ttl),
        ):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigurationError(f"{name} must be a positive number, got {value!r}")
        self._redis = redis_client
        self._base = limiter_key(api_key, "fleet", prefix=prefix)
        self._stream = f"{self._base}:events"
        self.result_ttl = result_ttl
        self.callback_ttl = callback_ttl
        self.read_lease = read_lease
        self.leader_lease = leader_lease
        self.waiter_ttl = waiter_ttl
        self.model_store: RedisModelStore | None = (
            RedisModelStore(redis_client, api_key, prefix=prefix) if share_model else None
        )
        self._lead = redis_client.register_script(schedule.LEAD)
        self._register = redis_client.register_script(schedule.REGISTER)
        self._sync_script = redis_client.register_script(schedule.SYNC)
        self._gate = redis_client.register_script(schedule.GATE)
        self._watched: set[str] = set()  # scans this worker's scheduler watches
        self._local: set[str] = set()  # ...of which someone here waits for
        self._remote: dict[str, asyncio.Task[Any]] = {}  # ...that it polls for other workers
        self._callbacks: set[str] = set()  # local scans whose callback came: read them here
        self._token = ""  # the leader's token while this worker holds the lease
        self._valid_until = -math.inf  # ...and until when (monotonic) it may act on it
        self._offset = 0.0  # Redis time (s) minus the loop's monotonic time
        self._registered_at = -math.inf
        self._failing_since: float | None = None
        self._tick_lock = asyncio.Lock()
        self._heartbeat: asyncio.Task[None] | None = None
        self._stopping = False
        self._owns_redis = owns_redis
        self._me = secrets.token_hex(8)  # tells our own stream entries from the others'
        self._client: ImagetwinClient | None = None
        self._listener: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reads: dict[str, list[asyncio.Future[None]]] = {}  # another worker reads these
        self._in_reads: set[asyncio.Future[Any]] = set()  # reads under way through the fleet
        self._detach: list[Callable[[], None]] = []
        self._model: DurationModel | None = None
        self._quiet_observation = False
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

    @property
    def leading(self) -> bool:
        """Whether this worker is the fleet's scheduler now (its lease valid here)."""
        return bool(self._token) and self._loop_time() < self._valid_until

    # ---- wiring ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def attach(self, client: ImagetwinClient) -> AsyncIterator[Fleet]:
        """Share ``client``'s reads, callbacks and schedule with the fleet while the block runs.

        The duration model starts from the fleet's (``share_model``) if this client has
        learned nothing yet, and is saved there when the client closes.
        """
        if self._client is not None:
            raise ConfigurationError("a Fleet serves one client at a time")
        self._client = client
        self._detach = []
        scheduler = client.scheduler
        original = scheduler.wrap_poll(self._shared_read)

        def unwrap() -> None:
            scheduler.wrap_poll(lambda _: original)

        # The duration model learns from every worker's scans, not a quarter of them: each
        # observation made here is also sent to the others (and theirs come in on the stream).
        self._model = scheduler.model
        if self.model_store is not None and scheduler.model_store is None:
            # Saved every so often while attached, and on detach (not when the client closes:
            # this fleet's Redis pool may be closed by then).
            scheduler.model_store = self.model_store
            self._detach.append(lambda: setattr(scheduler, "model_store", None))
            with contextlib.suppress(*_REDIS_ERRORS):  # warm_start logs and ignores the rest
                await asyncio.wait_for(scheduler.warm_start(self.model_store), _SOCKET_TIMEOUT)

        def share(low: float, high: float, features: ScanFeatures | None) -> None:
            if not self._quiet_observation:
                self._spawn(self._share_observation(low, high, features))

        unshare_model = scheduler.add_observation_listener(share)
        self._detach += [unwrap, unshare_model, scheduler.add_watch_listener(self._on_watch)]
        last_id = await self._stream_tail()
        loop = asyncio.get_running_loop()
        self._stopping = False
        self._listener = loop.create_task(self._listen(last_id), name="imagetwin-fleet")
        await self._tick()  # a lone worker leads before its first wait
        self._heartbeat = loop.create_task(self._keep_lease(), name="imagetwin-fleet-lease")
        try:
            yield self
        finally:
            await self._stop()

    async def _stop(self) -> None:
        client = self._client
        if client is not None and client.scheduler.model_store is self.model_store:
            with contextlib.suppress(*_REDIS_ERRORS):
                await asyncio.wait_for(client.scheduler.save_model(), _SOCKET_TIMEOUT)
        for undo in self._detach:
            undo()
        self._detach = []
        self._stopping = True
        for futures in self._reads.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)
        # Reads under way finish (each Redis call is bounded by the socket time-out), and so
        # do the writes they leave behind: a task cut mid-command would leak its connection.
        if self._in_reads:
            await asyncio.wait(set(self._in_reads), timeout=2 * _SOCKET_TIMEOUT)
        remote = list(self._remote.values())
        self._remote.clear()
        stopped = [t for t in (self._heartbeat, *remote) if t is not None]
        for task in stopped:
            task.cancel()
        await asyncio.gather(*stopped, return_exceptions=True)
        await self._settle_tasks()
        if self._listener is not None:
            # Not cancelled: redis-py can leave a cancelled blocking XREAD waiting for good.
            # It sees the flag when its read returns (within _BLOCK_MS); bounded either way.
            _, late = await asyncio.wait({self._listener}, timeout=_BLOCK_MS / 1000 + 2.0)
            for task in late:
                task.cancel()
        await self._hand_over()
        self._listener = self._heartbeat = None
        self._token = ""
        self._valid_until = -math.inf
        self.stats.leading = False
        self.stats.term = 0
        self._watched.clear()
        self._local.clear()
        self._callbacks.clear()
        self._client = None

    async def _settle_tasks(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2 * _SOCKET_TIMEOUT)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _hand_over(self) -> None:
        """Give up the lease and this worker's registrations now, not when they lapse."""
        with contextlib.suppress(*_REDIS_ERRORS):
            async with self._redis.pipeline(transaction=False) as pipe:
                if self._token:
                    pipe.eval(_RELEASE, 1, self._key_of("leader"), self._token)
                local = sorted(self._local)
                for start in range(0, len(local), _CHUNK):
                    members = [f"{s} {self._me}" for s in local[start : start + _CHUNK]]
                    pipe.zrem(self._key_of("waiting"), *members)
                await pipe.execute()

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

    def _key_of(self, kind: str) -> str:
        return f"{self._base}:{kind}"

    def _spawn(self, coro: Any) -> None:
        if self._stopping and self._client is None:
            coro.close()  # detached: nothing more goes to Redis
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _loop_time(self) -> float:
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return math.inf

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
        A wait for it here reads it at once, not after the write to Redis.
        """
        self._on_callback(scan_id)
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

    def _on_callback(self, scan_id: str) -> bool:
        """A callback for ``scan_id`` reached this worker (over HTTP, the stream, or kept).

        Waited for here: read it now, ourselves (``GATE`` lets one worker fleet-wide). Polled
        here only for another worker: that waiter reads it; this schedule stays the safety net
        (a hint after ``leader_lease / 3``, answered from the store once the waiter shared it).
        """
        if self._client is None:
            return False
        if scan_id in self._remote and scan_id not in self._local:
            asyncio.get_running_loop().call_later(self.leader_lease / 3, self._safety_hint, scan_id)
            return False
        if scan_id in self._local:
            self._callbacks.add(scan_id)
        return self._client.notify_finished(scan_id)

    def _safety_hint(self, scan_id: str) -> None:
        if self._client is not None and scan_id in self._remote:
            self._client.scheduler.hint(scan_id)

    def _xadd(self, pipe: Any, kind: str, scan_id: str, done: bool = False) -> None:
        fields = {"k": kind, "s": scan_id, "p": self._me, "d": "1" if done else "0"}
        pipe.xadd(self._stream, fields, maxlen=_STREAM_MAXLEN, approximate=True)

    # ---- the register of waited-for scans ------------------------------------------------------

    def _on_watch(self, scan_id: str, watching: bool) -> None:
        if watching:
            self._watched.add(scan_id)
            if scan_id in self._remote:
                return  # this worker's schedule took it on for another worker
            # A wait starts here: another worker may have had this scan's callback (or its
            # result); and the fleet's scheduler must know it is waited for.
            self._local.add(scan_id)
            self._spawn(self._look_up(scan_id))
            self._spawn(self._register_scans([scan_id]))
        else:
            self._watched.discard(scan_id)
            self._remote.pop(scan_id, None)
            self._callbacks.discard(scan_id)
            if scan_id in self._local:
                self._local.discard(scan_id)
                self._spawn(self._unregister(scan_id))

    def _info(self, scan_id: str) -> tuple[str, str]:
        """(age in ms or -1, the register's info) of a scan this worker waits for."""
        watched = None if self._client is None else self._client.scheduler.watch_info(scan_id)
        if watched is None:
            return "-1", ScanInfo(None, False, None).rest()
        age, expect_callback, features = watched
        age_ms = "-1" if age is None else str(max(0, round(age * 1000)))
        return age_ms, ScanInfo(None, expect_callback, features).rest()

    async def _register_scans(self, scan_ids: list[str]) -> None:
        ttl_ms = round(self.waiter_ttl * 1000)
        for start in range(0, len(scan_ids), _CHUNK):
            args: list[Any] = [self._me, ttl_ms, _STREAM_MAXLEN]
            for scan_id in scan_ids[start : start + _CHUNK]:
                args += [scan_id, *self._info(scan_id)]
            try:
                await self._register(keys=[*self._schedule_keys(), self._stream], args=args)
            except _REDIS_ERRORS:
                self.stats.fallbacks += 1
                return

    def _schedule_keys(self) -> list[str]:
        return [self._key_of("waiting"), self._key_of("scans")]

    async def _unregister(self, scan_id: str) -> None:
        with contextlib.suppress(*_REDIS_ERRORS):
            await self._redis.zrem(self._key_of("waiting"), f"{scan_id} {self._me}")

    async def _look_up(self, scan_id: str) -> None:
        try:
            callback, result = await self._redis.mget(
                self._key("callback", scan_id), self._key("result", scan_id)
            )
        except _REDIS_ERRORS:
            self.stats.fallbacks += 1
            return
        if result is not None and self._client is not None:
            self._client.scheduler.hint(scan_id)  # stored: taken without a read
        elif callback is not None:
            self._on_callback(scan_id)

    # ---- the lease: one scheduler for the fleet ------------------------------------------------

    async def _keep_lease(self) -> None:
        while True:
            await asyncio.sleep(self.leader_lease / 3)
            try:
                await self._tick()
            except Exception:  # the heartbeat must outlive anything one tick meets
                log.exception("the fleet's lease heartbeat failed; trying again")

    async def _tick(self) -> None:
        """Renew (or win, or find taken) the lease; as leader, sync the register; renew this
        worker's registrations."""
        async with self._tick_lock:
            loop = asyncio.get_running_loop()
            sent = loop.time()
            try:
                status, token, now_ms = await self._lead(
                    keys=[self._key_of("leader"), self._key_of("epoch")],
                    args=[self._token, self._me, round(self.leader_lease * 1000)],
                )
            except _REDIS_ERRORS as exc:
                self._redis_failed(exc)
                return
            answered = loop.time()
            # Redis read its clock after we sent: measured from `sent`, our estimate of Redis
            # time never trails it (a trailing one made a scan registered a moment ago look
            # started in the future), and leads it by at most the round trip.
            self._offset = int(now_ms) / 1000.0 - sent
            self._failing_since = None
            if int(status):
                won = int(status) == 2
                self._token = _text(token)
                self._valid_until = sent + self.leader_lease * (1.0 - _LEASE_MARGIN)
                self.stats.leading = True
                self.stats.term = int(self._token.split(":", 1)[0])
                if won:
                    self.stats.elections += 1
                    log.info(
                        "this worker now schedules the fleet's polls (term %d)", self.stats.term
                    )
                    self._replan_local()
                await self._sync()
            elif self._token:
                self._lose_lease(f"term {self.stats.term} lapsed; now {_text(token)}")
            if answered - self._registered_at >= self.waiter_ttl / 3 and self._local:
                self._registered_at = answered
                await self._register_scans(sorted(self._local))

    def _redis_failed(self, exc: BaseException) -> None:
        self.stats.fallbacks += 1
        now = self._loop_time()
        if self._failing_since is None:
            self._failing_since = now
            log.warning("the fleet's Redis is unreachable (%s): this worker polls alone", exc)
        if self._token and now >= self._valid_until:
            self._lose_lease("Redis unreachable")
        if now - self._failing_since >= self.leader_lease:
            # No leader can reach our answers now: poll our own scans, each once at once and
            # then on this worker's schedule (each read, with Redis down, goes straight out).
            self._failing_since = math.inf
            self._replan_local()

    def _lose_lease(self, why: str) -> None:
        log.warning("this worker no longer schedules the fleet's polls: %s", why)
        self._token = ""
        self._valid_until = -math.inf
        self.stats.leading = False
        self.stats.term = 0
        for scan_id, task in list(self._remote.items()):
            self._drop_remote(scan_id, task)

    def _drop_remote(self, scan_id: str, task: asyncio.Task[Any]) -> None:
        self._remote.pop(scan_id, None)
        task.cancel()
        # The scheduler forgets it once the cancellation lands, unless someone here waits for
        # it too: then it is this worker's own (registered at the next renewal).
        self._spawn(self._after_drop(scan_id, task))

    async def _after_drop(self, scan_id: str, task: asyncio.Task[Any]) -> None:
        with contextlib.suppress(BaseException):
            await task
        if scan_id in self._watched and scan_id not in self._remote:
            self._local.add(scan_id)
            await self._register_scans([scan_id])

    def _replan_local(self) -> None:
        if self._client is None:
            return
        for scan_id in sorted(self._local):
            self._client.scheduler.replan(scan_id)

    async def _sync(self) -> None:
        """As leader: poll every scan someone waits for; stop polling those nobody does."""
        try:
            answer: Any = await self._sync_script(
                keys=[self._key_of("leader"), *self._schedule_keys()], args=[self._token]
            )
        except _REDIS_ERRORS as exc:
            self._redis_failed(exc)
            return
        if not int(answer[0]):
            self._lose_lease("the lease was taken while syncing")
            return
        now_ms = int(answer[1])
        live = {}
        for i in range(2, len(answer) - 1, 2):
            live[_text(answer[i])] = _text(answer[i + 1])
        for scan_id, task in list(self._remote.items()):
            if scan_id not in live:
                self._drop_remote(scan_id, task)
        for scan_id, text in live.items():
            self._adopt(scan_id, text, now_ms)

    def _adopt(self, scan_id: str, text: str, now_ms: float) -> None:
        """As leader: put another worker's scan on this worker's schedule."""
        if scan_id in self._watched or scan_id in self._remote or self._client is None:
            return
        info = ScanInfo.parse(text)
        if info is None:
            return
        scheduler = self._client.scheduler
        age = info.age(now_ms)
        if age is not None:
            scheduler.note_started_ago(
                scan_id, age, expect_callback=info.expect_callback, features=info.features
            )
        self.stats.adopted += 1
        self._remote[scan_id] = task = asyncio.get_running_loop().create_task(
            scheduler.wait(scan_id), name=f"imagetwin-fleet-{scan_id}"
        )
        task.add_done_callback(_retrieve)
        # Its callback may have come before this worker watched it (a hint for a scan not
        # watched here is dropped): read it at once then, not at max_poll_interval.
        self._spawn(self._look_up(scan_id))

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
            if self._on_callback(scan_id):
                self.stats.hints_delivered += 1
        elif kind == "w":
            if self.leading:  # a new wait somewhere: on the schedule now, not at the next sync
                self._adopt(scan_id, event.get("i", ""), (self._loop_time() + self._offset) * 1000)
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
            task = asyncio.current_task()
            if task is None or self._stopping:
                return await read(scan_id)
            self._in_reads.add(task)
            api_reads = self.stats.api_reads
            try:
                return await fleet_read(scan_id)
            finally:
                self._in_reads.discard(task)
                if self.stats.api_reads == api_reads and self._client is not None:
                    # Nothing went to the API: this worker's pacing is not spent on it.
                    self._client.scheduler.refund_read()

        async def fleet_read(scan_id: str) -> ScanResult | ScanPending:
            if self._token and not self.leading:
                await self._tick()  # our lease looks spent: renew it (or learn it is lost)
            if scan_id in self._remote and not self.leading:
                self.stats.deferred += 1  # another worker's scan: the new leader polls it
                raise _left_to_leader()
            # Its callback came: the waiter reads it itself (once; later reads are scheduled).
            on_callback = scan_id in self._callbacks and scan_id in self._local
            self._callbacks.discard(scan_id)
            try:
                answer = await self._ask_gate(scan_id, on_callback=on_callback)
                if int(answer[0]) == 4 and self.leading:
                    answer = await self._ask_gate(scan_id)  # it won the lease while it asked
            except _REDIS_ERRORS as exc:
                self.stats.fallbacks += 1
                self.stats.api_reads += 1
                log.debug("fleet unreachable (%s): reading %s alone", exc, scan_id)
                return await read(scan_id)
            kind = int(answer[0])
            if kind == 1:
                stored = _decode(answer[1])
                if stored is not None:
                    return self._shared(stored)
            elif kind == 3:
                other = await self._await_other_read(scan_id)
                if on_callback and isinstance(other, ScanPending) and self._client is not None:
                    # The callback says it ended, but the other read was answered before it did
                    # (a poll already on the wire): read again at once, not at the next poll.
                    self._callbacks.add(scan_id)
                    self._client.scheduler.hint(scan_id)
                return other
            elif kind == 4:
                self.stats.deferred += 1
                raise _left_to_leader()
            if self._token and not self.leading:
                # The lease lapsed while we asked (a paused process): another worker may lead
                # by now, so this read is not ours to make.
                self.stats.fenced += 1
                self._spawn(self._give_back(scan_id))
                raise _left_to_leader()
            return await self._read_and_share(read, scan_id)

        return shared

    async def _read_and_share(self, read: PollFn, scan_id: str) -> ScanResult | ScanPending:
        """Read through the API (the read lease is ours) and share what came back."""
        self.stats.api_reads += 1
        value: str | None = None
        try:
            result = await read(scan_id)
        except (ScanFailed, ScanNotFound) as exc:
            value = _encode_error(exc)
            raise
        else:
            if isinstance(result, ScanResult):
                value = json.dumps({"result": unstructure(result)})
            return result
        finally:
            # Shared once this worker's waiters have their answer: off the critical path.
            # (Also after a failed read: the others, woken, read next themselves.)
            self._spawn(self._share_read(scan_id, value))

    async def _ask_gate(self, scan_id: str, *, on_callback: bool = False) -> Any:
        """One round trip: the stored answer, or who reads (see ``_fleet_schedule.GATE``)."""
        age_ms, rest = self._info(scan_id)
        return await self._gate(
            keys=[
                self._key("result", scan_id),
                self._key("reading", scan_id),
                self._key_of("leader"),
                *self._schedule_keys(),
                self._stream,
            ],
            args=[
                self._token if self.leading else "",
                self._me,
                round(self.read_lease * 1000),
                "1" if scan_id in self._local else "0",
                round(self.waiter_ttl * 1000),
                _STREAM_MAXLEN,
                scan_id,
                age_ms,
                rest,
                "1" if on_callback else "0",
            ],
        )

    async def _give_back(self, scan_id: str) -> None:
        """Give up the scan's read lease unused, and say so on the stream: a worker waiting
        for this read's answer (``_await_other_read``) then asks again at once instead of
        waiting out the lease."""
        with contextlib.suppress(*_REDIS_ERRORS):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.eval(_RELEASE, 1, self._key("reading", scan_id), self._me)
                self._xadd(pipe, "rd", scan_id)
                await pipe.execute()

    async def _share_read(self, scan_id: str, value: str | None) -> None:
        """Store the answer, give up the read lease and announce the read, in one transaction:
        a worker that finds the lease still held (``_await_other_read``) is then sure to see
        the announcement after it began to listen for it."""
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                if value is not None:
                    pipe.set(self._key("result", scan_id), value, ex=round(self.result_ttl))
                pipe.eval(_RELEASE, 1, self._key("reading", scan_id), self._me)
                self._xadd(pipe, "rd", scan_id, done=value is not None)
                await pipe.execute()
        except _REDIS_ERRORS as exc:
            self.stats.fallbacks += 1
            log.debug("could not share the read of %s (%s)", scan_id, exc)
            await self._give_back(scan_id)

    async def _await_other_read(self, scan_id: str) -> ScanResult | ScanPending:
        """Another worker reads this scan now: take its answer instead of reading again."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reads.setdefault(scan_id, []).append(future)
        try:
            # The read may have ended (and been announced) between the gate's answer and now:
            # its announcement may have gone by before we listened. Its lease, given up in the
            # same transaction, tells.
            reading, stored_now = await self._redis.mget(
                self._key("reading", scan_id), self._key("result", scan_id)
            )
            if reading is not None and stored_now is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(future, self.read_lease)
                stored_now = await self._redis.get(self._key("result", scan_id))
            stored = _decode(stored_now)
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
        # The scheduler learns from this answer as if it had read it; the worker that did
        # read it already shared the tighter interval it saw: do not send this one.
        self._quiet_observation = True
        asyncio.get_running_loop().call_soon(self._end_quiet)
        return stored

    def _end_quiet(self) -> None:
        self._quiet_observation = False


def _left_to_leader() -> TransportError:
    """What a read left to the fleet's scheduler raises inside this worker's own scheduler: its
    "try again later" (a transient error, never seen by a waiter), which parks the scan for
    ``max_poll_interval`` until the scheduler's answer comes on the stream, this worker leads,
    or Redis fails."""
    return TransportError("left to the fleet's scheduler", endpoint=_ENDPOINT)


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # the waiters' outcome; the leader's own wait only kept it polled


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
