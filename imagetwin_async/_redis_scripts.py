"""The Lua that makes ``RedisLimiter`` atomic: one script per operation, a shared prelude.

Every script runs inside Redis, so a read-count-grant sequence can never interleave with
another process's, and every time stamp comes from the Redis server's ``TIME``: one clock for
all hosts, however far their own clocks have drifted.

KEYS (one hash tag, so a Redis Cluster keeps them on one node):
  1 ``<base>:inflight``  sorted set, token -> lease end (in-flight slots)
  2 ``<base>:cooling``   sorted set, token -> free time (answered, or lease ran out)
  3 ``<base>:state``     hash: paused_until, quiet_since, floor, halved_at
  4 ``<base>:void``      sorted set, token -> until when acquires with it are refused
ARGV (common): 1 requests N, 2 hold (per + margin), 3 per, 4 lease, 5 the longest pause any
reader keeps (``RateLimit.max_pause``); then per-script values.

A slot is occupied from its grant until its free time; at most N are occupied at any moment.
Every reply is ``report()``: {status, next_slot_in, poll_in, available, in_flight, paused_for,
capacity, occupied}; floats go back as strings because Redis truncates Lua numbers to integers.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ACQUIRE", "RATE_LIMITED", "RELEASE", "RENEW", "VOID"]

_PRELUDE: Final = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = tonumber(ARGV[1])
local hold = tonumber(ARGV[2])
local per = tonumber(ARGV[3])
local lease = tonumber(ARGV[4])
local max_pause = tonumber(ARGV[5])

-- Scores are written with explicit precision: Lua's default number format keeps 14 digits,
-- which would round a Unix time to 0.1 ms.
local function fmt(x) return string.format('%.6f', x) end

-- A lease that ran out means the holder stopped renewing it: it died, or lost Redis. Treat the
-- request as answered at the lease end: it frees one hold later, like any answered request.
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', fmt(now), 'WITHSCORES')
for i = 1, #expired, 2 do
  redis.call('ZADD', KEYS[2], fmt(tonumber(expired[i + 1]) + hold), expired[i])
end
if #expired > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now)) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', fmt(now))
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', fmt(now))

local st = redis.call('HMGET', KEYS[3], 'paused_until', 'quiet_since', 'floor', 'halved_at')
local paused_until = tonumber(st[1]) or 0
if paused_until > now + max_pause then
  -- Whoever wrote it (an older client, another SDK, a lying Retry-After): cut it to max_pause
  -- once, for every reader, so it ends instead of sliding ahead with each read.
  paused_until = now + max_pause
  redis.call('HSET', KEYS[3], 'paused_until', fmt(paused_until))
end
local quiet_since = tonumber(st[2])
local floor_cap = tonumber(st[3]) or n
local halved_at = tonumber(st[4])
local step = math.max(1, math.ceil(n / 4))

-- The adaptive capacity of _backoff.AdaptiveCapacity, shared: halved by a 429, a quarter of N
-- back for every quiet window since.
local function capacity(at)
  if not quiet_since then return n end
  local quiet = math.max(0, math.floor((at - quiet_since) / per))
  return math.min(n, floor_cap + step * quiet)
end

local function next_increase(at)
  if not quiet_since or capacity(at) >= n then return nil end
  return quiet_since + (math.max(0, math.floor((at - quiet_since) / per)) + 1) * per
end

-- Keys outlive every slot they hold (and the capacity cut, which is gone after four windows),
-- so an abandoned limiter leaves nothing behind and a live one never loses state.
local function touch()
  local ttl = lease + hold + 4 * per + math.max(0, paused_until - now)
  local ms = math.ceil(ttl * 1000)
  redis.call('PEXPIRE', KEYS[1], ms)
  redis.call('PEXPIRE', KEYS[2], ms)
  redis.call('PEXPIRE', KEYS[3], ms)
end

local function report(status)
  local cap = capacity(now)
  local in_flight = redis.call('ZCARD', KEYS[1])
  local cooling = redis.call('ZCARD', KEYS[2])
  local occupied = in_flight + cooling
  local paused_for = math.max(0, paused_until - now)
  local available = 0
  if paused_for <= 0 then available = math.max(0, cap - occupied) end
  -- next_slot_in: when a new acquire gets a slot, -1 if answers must come first.
  -- poll_in: when asking again can first succeed (an in-flight slot frees one hold after its
  -- answer at the earliest, so "now + hold" is a true lower bound, not a guess).
  local need = occupied - cap + 1
  local next_slot = 0
  local poll = 0
  if need > 0 then
    if need <= cooling then
      local kth = redis.call('ZRANGE', KEYS[2], need - 1, need - 1, 'WITHSCORES')
      next_slot = tonumber(kth[2]) - now
      poll = next_slot
    else
      next_slot = -1
      poll = hold
    end
    local grow = next_increase(now)
    if grow and grow - now < poll then
      poll = grow - now
      if next_slot < 0 or grow - now < next_slot then next_slot = grow - now end
    end
  end
  if paused_for > 0 then
    poll = math.max(poll, paused_for)
    if next_slot >= 0 then next_slot = math.max(next_slot, paused_for) end
  end
  return {status, fmt(next_slot), fmt(poll), available, in_flight, fmt(paused_for), cap, occupied}
end
"""

# ARGV 6 "1" to only look, 7.. tokens of this process's waiters, first come first. Grants as
# many as are free, in order; status: how many, their tokens follow the report.
ACQUIRE: Final = (
    _PRELUDE
    + r"""
local granted = {}
if ARGV[6] ~= '1' and paused_until <= now then
  local free = capacity(now) - redis.call('ZCARD', KEYS[1]) - redis.call('ZCARD', KEYS[2])
  for i = 7, #ARGV do
    if free <= 0 then break end
    -- A voided token belongs to an acquire that was cancelled: never grant it late.
    if not redis.call('ZSCORE', KEYS[4], ARGV[i]) then
      redis.call('ZADD', KEYS[1], fmt(now + lease), ARGV[i])
      table.insert(granted, ARGV[i])
      free = free - 1
    end
  end
  if #granted > 0 then touch() end
end
local reply = report(#granted)
for _, token in ipairs(granted) do table.insert(reply, token) end
return reply
"""
)

# ARGV 6 token, 7 seconds since the answer, by the holder's clock when it sent this call (a
# busy process may run the call late; the answer time must not move later, or a slot idles).
# It is never earlier than the truth: this script runs after the call was sent. Status: 1
# released, 2 released after its lease ran out (the later answer wins), 0 lost (it had already
# freed on its lease).
RELEASE: Final = (
    _PRELUDE
    + r"""
local answered = now - math.min(math.max(tonumber(ARGV[7]), 0), lease)
local status = 0
if redis.call('ZSCORE', KEYS[1], ARGV[6]) then
  redis.call('ZREM', KEYS[1], ARGV[6])
  redis.call('ZADD', KEYS[2], fmt(answered + hold), ARGV[6])
  status = 1
elseif redis.call('ZSCORE', KEYS[2], ARGV[6]) then
  redis.call('ZADD', KEYS[2], 'GT', fmt(answered + hold), ARGV[6])
  status = 2
end
touch()
return report(status)
"""
)

# ARGV 6.. tokens held by a live process. A token whose lease ran out but that has not freed
# yet is revived: it stayed occupied all along, so nobody can have been granted its place.
# Status: the number of tokens lost (already freed on their lease); they follow the report.
RENEW: Final = (
    _PRELUDE
    + r"""
local lost = {}
for i = 6, #ARGV do
  local token = ARGV[i]
  if redis.call('ZSCORE', KEYS[1], token) then
    redis.call('ZADD', KEYS[1], 'XX', fmt(now + lease), token)
  elseif redis.call('ZSCORE', KEYS[2], token) then
    redis.call('ZREM', KEYS[2], token)
    redis.call('ZADD', KEYS[1], fmt(now + lease), token)
  else
    table.insert(lost, token)
  end
end
touch()
local reply = report(#lost)
for _, token in ipairs(lost) do table.insert(reply, token) end
return reply
"""
)

# ARGV 6 marker lifetime (s), 7.. tokens of acquires that were cancelled or granted to a waiter
# that was gone: nothing was sent with them, so their slots are free at once, and the marker
# refuses them should an acquire call still on the wire reach Redis only now.
VOID: Final = (
    _PRELUDE
    + r"""
local removed = 0
for i = 7, #ARGV do
  redis.call('ZADD', KEYS[4], fmt(now + tonumber(ARGV[6])), ARGV[i])
  removed = removed + redis.call('ZREM', KEYS[1], ARGV[i]) + redis.call('ZREM', KEYS[2], ARGV[i])
end
redis.call('PEXPIRE', KEYS[4], math.ceil(tonumber(ARGV[6]) * 1000))
return report(removed)
"""
)

# ARGV 6 pause in seconds (this process's back-off or the server's Retry-After).
RATE_LIMITED: Final = (
    _PRELUDE
    + r"""
paused_until = math.max(paused_until, now + math.min(tonumber(ARGV[6]), max_pause))
local current = capacity(now)
if halved_at and now - halved_at < per then
  -- The same overload answering several requests, maybe in several processes: one signal.
  floor_cap = current
else
  floor_cap = math.max(1, math.floor(current / 2))
  halved_at = now
end
quiet_since = now
redis.call('HSET', KEYS[3], 'paused_until', fmt(paused_until), 'quiet_since', fmt(quiet_since),
  'floor', floor_cap, 'halved_at', fmt(halved_at))
touch()
return report(1)
"""
)
