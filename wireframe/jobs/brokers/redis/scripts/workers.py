"""The Lua scripts of worker records: a heartbeat, and the list of live workers.

Key (``P`` is the broker's key prefix): ``P workers`` - HASH of worker id ->
``cmsgpack([seen_ms, expires_ms, info])`` where ``info`` is the worker's own msgpack
``[queue, concurrency, host, pid, started_at, running]``; expired entries are
dropped when read.
"""

from __future__ import annotations

from wireframe.jobs.brokers.redis.scripts import PRELUDE

__all__ = [
    "HEARTBEAT",
    "WORKERS",
]

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
