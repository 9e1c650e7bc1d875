"""The fleet's one poll schedule, in Redis: the leader's lease, the register of waited-for
scans, and the gate every read passes through. Pure data and Lua; ``fleet`` runs them.

- **The lease** (``LEAD``): ``…:leader`` holds ``<epoch>:<worker>`` for ``lease`` ms. A worker
  that holds it extends it (check-and-extend: only if the value is still its own token); a
  worker that finds none takes it with a new epoch (``INCR …:epoch``), so two terms never
  share a token. Every answer carries Redis's ``TIME``: workers never compare their own wall
  clocks, only local monotonic durations and Redis's time.
- **The register**: each worker that waits for a scan keeps ``"<scan> <worker>"`` in the
  sorted set ``…:waiting``, scored with the Redis time at which it lapses unless renewed
  (``waiter_ttl``); what it knows of the scan (start in Redis time, callback expected, pages,
  images, bytes) goes in the hash ``…:scans``. A worker that dies stops renewing: its entries
  lapse and the leader stops polling the scans nobody else waits for.
- **The gate** (``GATE``), one round trip before each read: a stored result answers at once;
  the leader (its token still in ``…:leader``: a zombie whose lease lapsed is refused here)
  takes the scan's read lease and reads; any other worker, while a leader lives, (re)registers
  the scan and leaves the read to it; with no leader at all, a worker reads its own scans.
  When a callback comes for a scan, the worker waiting for it reads it at once under the read
  lease (marked ``cb:``, which the leader waits out rather than reads over): one read, and no
  hop through the leader on the callback path.
"""

from __future__ import annotations

import math
from typing import Final

import attrs

from ._durations import ScanFeatures

__all__ = ["GATE", "LEAD", "REGISTER", "SYNC", "Gate", "ScanInfo"]

# How far ahead of a worker's estimate of Redis time a registered start may lie and still be a
# fresh scan (the estimate lags by a round trip or a busy loop at most); further is damage.
_FUTURE_START: Final = 60.0

# Registers ARGV[i] (scan), ARGV[i+1] (age in ms, -1: start unknown), ARGV[i+2] (the rest of
# its info) for worker W; `now` is Redis's time in ms. Announces new or better info on the
# stream (the leader adopts the scan at once instead of at its next sync).
_REGISTER_ONE: Final = """
local function register(now, scan, age, rest, worker, ttl, stream, maxlen)
  redis.call('ZADD', KEYS_LIVE, now + ttl, scan .. ' ' .. worker)
  local started = '-'
  if age >= 0 then started = string.format('%d', now - age) end
  local old = redis.call('HGET', KEYS_INFO, scan)
  if (not old) or (string.sub(old, 1, 1) == '-' and age >= 0) then
    local info = started .. '|' .. rest
    redis.call('HSET', KEYS_INFO, scan, info)
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'k', 'w', 's', scan, 'p', worker,
               'i', info)
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: leader, epoch. ARGV: the token held ('' if none), worker id, lease ms.
# -> {1 kept | 2 newly taken | 0 another's, token, Redis time in ms}
LEAD: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local holder = redis.call('GET', KEYS[1])
if holder and holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {1, holder, now}
end
if not holder then
  local token = redis.call('INCR', KEYS[2]) .. ':' .. ARGV[2]
  redis.call('SET', KEYS[1], token, 'PX', ARGV[3])
  return {2, token, now}
end
return {0, holder, now}
"""

# KEYS: waiting (zset), scans (hash), stream. ARGV: worker, ttl ms, maxlen, then triplets.
REGISTER: Final = (
    "local KEYS_LIVE, KEYS_INFO = KEYS[1], KEYS[2]\n"
    + _REGISTER_ONE
    + """
for i = 4, #ARGV, 3 do
  register(now, ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[1], tonumber(ARGV[2]),
           KEYS[3], ARGV[3])
end
return now
"""
)

# KEYS: leader, waiting, scans. ARGV: token. Fenced: only the leader sweeps.
# -> {0} (not the leader) | {1, now, scan, info, scan, info, ...} (every scan someone waits for)
SYNC: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local live = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  live[string.match(member, '^(%S+)')] = true
end
local out = {1, now}
local fields = redis.call('HGETALL', KEYS[3])
for i = 1, #fields, 2 do
  if live[fields[i]] then
    out[#out + 1] = fields[i]
    out[#out + 1] = fields[i + 1]
  else
    redis.call('HDEL', KEYS[3], fields[i])
  end
end
return out
"""

# KEYS: result, reading, leader, waiting, scans, stream.
# ARGV: token ('' if this worker does not lead), worker, read lease ms, register (1/0),
#       waiter ttl ms, maxlen, scan, age ms, rest, on a callback (1/0: the waiter reads).
# -> {1, stored} | {2} read it (the read lease is ours) | {3} another worker reads it now
#    | {4} the leader polls it (registered for it). The leader always reads (2), unless a waiter
#    reads it on its callback (3); without a leader, one worker at a time (3: wait for its
#    answer). On a callback, the waiter reads it (2) unless someone else reads it now (3).
GATE: Final = (
    "local KEYS_LIVE, KEYS_INFO = KEYS[4], KEYS[5]\n"
    + _REGISTER_ONE
    + """
local stored = redis.call('GET', KEYS[1])
if stored then return {1, stored} end
local holder = redis.call('GET', KEYS[3])
if ARGV[10] == '1' and not (holder and holder == ARGV[1]) then
  -- A callback came for a scan this worker waits for: it reads the scan itself, at once,
  -- under the read lease (marked 'cb:', which the leader leaves alone): one read fleet-wide.
  if ARGV[4] == '1' then
    register(now, ARGV[7], tonumber(ARGV[8]), ARGV[9], ARGV[2], tonumber(ARGV[5]), KEYS[6],
             ARGV[6])
  end
  if redis.call('SET', KEYS[2], 'cb:' .. ARGV[2], 'NX', 'PX', ARGV[3]) then return {2} end
  return {3}
end
if holder and holder ~= ARGV[1] then
  if ARGV[4] == '1' then
    register(now, ARGV[7], tonumber(ARGV[8]), ARGV[9], ARGV[2], tonumber(ARGV[5]), KEYS[6],
             ARGV[6])
  end
  return {4}
end
if holder then
  -- The leader reads, whoever held the read lease: a dead or paused leader's lease (taken
  -- for a read it may never finish) must not hold up the next one for read_lease seconds.
  -- A waiter reading on its callback is left to finish (its answer comes on the stream).
  local reading = redis.call('GET', KEYS[2])
  if reading and string.sub(reading, 1, 3) == 'cb:' then return {3} end
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  return {2}
end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return {2} end
return {3}
"""
)


@attrs.frozen
class Gate:
    """What ``GATE`` said: ``kind`` 1 stored, 2 read, 3 another reads, 4 left to the leader."""

    kind: int
    stored: bytes | str | None = None


@attrs.frozen
class ScanInfo:
    """What a worker knows of a scan it waits for, as kept in the register.

    ``started``: Redis time in ms (None: the worker did not see it start); the rest is what the
    duration model uses.
    """

    started: int | None
    expect_callback: bool
    features: ScanFeatures | None

    def rest(self) -> str:
        """The register's text after the start: ``cb|pages|images|size`` (empty if unknown)."""
        f = self.features
        if f is None:
            return f"{int(self.expect_callback)}|||"
        pages = "" if f.pages is None else str(f.pages)
        return f"{int(self.expect_callback)}|{pages}|{f.images}|{f.size}"

    @classmethod
    def parse(cls, text: str) -> ScanInfo | None:
        """The info another worker registered, or None if malformed (Redis is ours, but a
        wrong start must not make a scan look a day old)."""
        parts = text.split("|")
        if len(parts) != 5:
            return None
        started_text, callback, pages_text, images_text, size_text = parts
        try:
            started = None if started_text == "-" else int(started_text)
            features = None
            if images_text:
                pages = int(pages_text) if pages_text else None
                images, size = int(images_text), int(size_text)
                if min(images, size, pages or 0) < 0 or max(images, pages or 0) > 10_000:
                    return None
                if size > 2**40:
                    return None
                features = ScanFeatures(pages, images, size)
        except ValueError:
            return None
        if started is not None and not 0 < started < 2**53:
            return None
        return cls(started, callback == "1", features)

    def age(self, redis_now_ms: float) -> float | None:
        """Seconds since the scan started, at Redis time ``redis_now_ms`` (None: unknown)."""
        if self.started is None:
            return None
        age = (redis_now_ms - self.started) / 1000.0
        if not (math.isfinite(age) and -_FUTURE_START <= age < 1e7):
            return None
        # A start a moment ahead of `redis_now_ms` is a scan registered just now, seen by a
        # worker whose estimate of Redis time lags a little: it has just started, not "start
        # unknown" (which would read it at once).
        return max(age, 0.0)
