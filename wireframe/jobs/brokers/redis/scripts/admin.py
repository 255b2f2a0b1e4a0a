"""The Lua scripts of administration: counts per queue, requeueing dead letters, purging.

They work on the keys of :mod:`.queues`; purging the replies of dead channels is
``PURGE_CHANNELS`` in :mod:`.channels`.
"""

from __future__ import annotations

from wireframe.jobs.brokers.redis.scripts import PRELUDE

__all__ = [
    "PURGE",
    "REQUEUE_DEAD",
    "STATS",
]

#: KEYS: queues. ARGV: prefix, group, released consumer, then queue names (none =
#: all known).
#: Returns a flat list: queue, queued, running, done, dead per queue.
STATS = (
    PRELUDE
    + r"""
local names = {}
if #ARGV > 3 then
  for k = 4, #ARGV do names[#names + 1] = ARGV[k] end
else
  names = redis.call('SMEMBERS', KEYS[1])
end
local out = {}
for _, q in ipairs(names) do
  local base = ARGV[1] .. 'q:' .. q .. ':'
  local ready = base .. 'ready'
  local running = 0
  if redis.call('EXISTS', ready) == 1 then
    local ok, s = pcall(redis.call, 'XPENDING', ready, ARGV[2])
    if ok then
      running = s[1]
      -- entries handed back to the placeholder consumer are claimable: queued
      for _, c in ipairs(s[4] or {}) do
        if c[1] == ARGV[3] then running = running - tonumber(c[2]) end
      end
    end
  end
  local queued = redis.call('XLEN', ready) - running + redis.call('ZCARD', base .. 'delayed')
  local done = tonumber(redis.call('GET', base .. 'done') or '0')
  for _, v in ipairs({q, queued, running, done, redis.call('XLEN', base .. 'dead')}) do
    out[#out + 1] = v
  end
end
return out
"""
)

#: KEYS: queues, ready, dead. ARGV: group, queue. Returns the number requeued.
REQUEUE_DEAD = (
    PRELUDE
    + r"""
ensure_queue(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
local entries = redis.call('XRANGE', KEYS[3], '-', '+')
for _, e in ipairs(entries) do
  local f = fields_of(e[2])
  redis.call('XADD', KEYS[2], '*', 'i', f['i'] or '', 'b', f['b'] or '', 'r', f['r'] or '',
             'n', 0)
end
redis.call('DEL', KEYS[3])
return #entries
"""
)

#: KEYS: dead, done. Returns the number of finished records deleted.
PURGE = r"""
local n = redis.call('XLEN', KEYS[1]) + tonumber(redis.call('GET', KEYS[2]) or '0')
redis.call('DEL', KEYS[1], KEYS[2])
return n
"""
