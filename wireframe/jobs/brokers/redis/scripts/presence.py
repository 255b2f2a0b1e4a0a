"""The Redis broker's records of who is alive: run channels and workers, as Lua scripts.

Keys (``P`` is the broker's key prefix):

* ``P channels`` - ZSET of run channel names scored by the time (ms of Redis
  ``TIME``) until which each is live. Closing a channel scores it now, so a
  channel is dead when its score has passed, however its run ended; a name
  that is not there is unmanaged (or its record was lost with Redis's data).
  Records dead for longer than the retention are dropped by the next open.
* ``P workers`` - HASH of worker id -> ``cmsgpack([seen_ms, expires_ms, info])``
  where ``info`` is the worker's own msgpack ``[queue, concurrency, host, pid,
  started_at, running]``; expired entries are dropped when read.

The job scripts (``scripts``) read ``P channels`` to settle the jobs of
dead channels at consume and to drop replies to them at complete.
"""

from __future__ import annotations

from wireframe.jobs.brokers.redis.scripts import PRELUDE

__all__ = [
    "CLOSE_CHANNEL",
    "DELETE_CHANNEL",
    "HEARTBEAT",
    "KEEP_CHANNEL",
    "OPEN_CHANNEL",
    "PURGE_CHANNELS",
    "WORKERS",
]

#: KEYS: channels. ARGV: name, ttl_ms, retention_ms, prefix. Records the channel
#: live for ttl_ms and forgets (with their replies) up to 100 channels dead for
#: longer than the retention.
OPEN_CHANNEL = (
    PRELUDE
    + r"""
local now = now_ms()
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]),
                       'LIMIT', 0, 100)
for _, c in ipairs(old) do redis.call('DEL', ARGV[4] .. 'c:' .. c) end
if #old > 0 then redis.call('ZREM', KEYS[1], unpack(old)) end
return 1
"""
)

#: KEYS: channels. ARGV: name, ttl_ms. Returns 'ok', 'missing' (no record) or
#: 'expired N' (dead for N ms).
KEEP_CHANNEL = (
    PRELUDE
    + r"""
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 'missing' end
local now = now_ms()
if tonumber(score) <= now then return 'expired ' .. (now - tonumber(score)) end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
return 'ok'
"""
)

#: KEYS: channels, then the channel's reply list and inboxes (deleted). ARGV:
#: name. Makes the channel dead from now on (sooner if it already was).
CLOSE_CHANNEL = (
    PRELUDE
    + r"""
for k = 2, #KEYS do redis.call('DEL', KEYS[k]) end
local now = now_ms()
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not score) or tonumber(score) > now then redis.call('ZADD', KEYS[1], now, ARGV[1]) end
return 1
"""
)

#: KEYS: channels, then the channel's reply list and inboxes (deleted). ARGV:
#: name. Forgets the channel's record: it is an unmanaged mailbox again.
DELETE_CHANNEL = r"""
for k = 2, #KEYS do redis.call('DEL', KEYS[k]) end
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""

#: KEYS: channels, then receivers' inbox lists found by a scan. ARGV: prefix,
#: retention_ms, then the channel of each inbox. Deletes the replies of dead
#: channels and the inboxes of dead channels (returns how many replies) and the
#: records of channels dead for longer than the retention.
PURGE_CHANNELS = (
    PRELUDE
    + r"""
local now = now_ms()
local n = 0
for _, c in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  local key = ARGV[1] .. 'c:' .. c
  n = n + redis.call('LLEN', key)
  redis.call('DEL', key)
end
for k = 2, #KEYS do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[k + 1])
  if score and tonumber(score) <= now then
    n = n + redis.call('LLEN', KEYS[k])
    redis.call('DEL', KEYS[k])
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return n
"""
)

#: KEYS: workers. ARGV: id, ttl_ms (0: remove), info.
HEARTBEAT = (
    PRELUDE
    + r"""
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  local now = now_ms()
  redis.call('HSET', KEYS[1], ARGV[1], cmsgpack.pack({now, now + ttl, ARGV[3]}))
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 1
"""
)

#: KEYS: workers. Returns id, entry, id, entry... of the live workers; drops
#: expired or unreadable entries.
WORKERS = (
    PRELUDE
    + r"""
local now = now_ms()
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for k = 1, #all, 2 do
  local ok, v = pcall(cmsgpack.unpack, all[k + 1])
  if ok and type(v) == 'table' and tonumber(v[2]) and tonumber(v[2]) > now then
    out[#out + 1] = all[k]
    out[#out + 1] = all[k + 1]
  else
    redis.call('HDEL', KEYS[1], all[k])
  end
end
return out
"""
)
