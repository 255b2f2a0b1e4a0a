"""The Lua scripts of administration: counts per queue, requeueing dead letters, purging.

They work on the keys of :mod:`.queues` (the streams of every priority level) and
:mod:`.jobs`; purging the replies of dead channels is ``PURGE_CHANNELS`` in
:mod:`.channels`, purging finished job records ``PURGE_JOBS`` in :mod:`.jobs`.
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
#: Returns a flat list: queue, queued, running, done, dead, scheduled, held per queue
#: (the streams of every priority level counted; queued counts the scheduled and the
#: held: those waiting for their limits).
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
  local scheduled, held, running = redis.call('ZCARD', base .. 'delayed'), 0, 0
  for _, name in ipairs(redis.call('SMEMBERS', base .. 'limits')) do
    held = held + redis.call('ZCARD', base .. 'wait:' .. name)
  end
  local queued = scheduled + held
  for _, level in ipairs(levels_of(base .. 'ready')) do
    local ready = stream_of(base .. 'ready', level)
    if redis.call('EXISTS', ready) == 1 then
      local leased = 0
      local ok, s = pcall(redis.call, 'XPENDING', ready, ARGV[2])
      if ok then
        leased = s[1]
        -- entries handed back to the placeholder consumer are claimable: queued
        for _, c in ipairs(s[4] or {}) do
          if c[1] == ARGV[3] then leased = leased - tonumber(c[2]) end
        end
      end
      running = running + leased
      queued = queued + redis.call('XLEN', ready) - leased
    end
  end
  local done = tonumber(redis.call('GET', base .. 'done') or '0')
  local dead = redis.call('XLEN', base .. 'dead')
  for _, v in ipairs({q, queued, running, done, dead, scheduled, held}) do
    out[#out + 1] = v
  end
end
return out
"""
)

#: KEYS: queues, ready, dead. ARGV: group, queue, prefix, and optionally a message id
#: (then only that message's dead letters). Puts each dead letter back
#: on the stream of its priority with a fresh count (one of a defined limit may wait
#: for it); a tracked job's record (if it still says dead) is live again. Returns the
#: number requeued.
REQUEUE_DEAD = (
    PRELUDE
    + r"""
local prefix = ARGV[3]
ensure_queue(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
local now = now_ms()
local seen = {}

-- a dead tracked job's record made live (queued) again; false if it does not say dead
local function revive(id)
  local job = prefix .. 'job:' .. id
  local ok, r = pcall(redis.call, 'HMGET', job, 's', 'k')
  if not (ok and r[1] == 'dead') then return false end
  redis.call('HSET', job, 's', 'queued', 'v', now)
  redis.call('HDEL', job, 'res', 'err', 'f', 'x')
  redis.call('PERSIST', job)
  redis.call('DEL', prefix .. 'jobdone:' .. id)
  if r[2] then redis.call('SET', prefix .. 'key:' .. r[2], id, 'NX') end
  return true
end

local entries = redis.call('XRANGE', KEYS[3], '-', '+')
local only = ARGV[4]
local added = {}
local count = 0
for _, e in ipairs(entries) do
  local f = fields_of(e[2])
  if only == nil or f['i'] == only then
    count = count + 1
    local level = string.match(f['p'] or '', '^%-?%d+$') and tonumber(f['p']) or 0
    if math.abs(level) >= 2147483648 then level = 0 end
    local id, name = f['i'] or '', f['l'] or ''
    local tracked = f['j'] == '1' and revive(id)
    local sid
    if name ~= '' then
      -- to its stream, or it waits for its limit
      sid = limit_enqueue(prefix, ARGV[1], ARGV[2], name, level,
                          {i = id, b = f['b'] or '', r = f['r'] or '', j = tracked and '1' or nil},
                          0, now, seen, added)
    else
      local stream = level_stream(KEYS[1], KEYS[2], ARGV[1], ARGV[2], level, seen)
      local more = {}
      if tracked then more = {'j', '1'} end
      sid = redis.call('XADD', stream, '*', 'i', id, 'b', f['b'] or '', 'r', f['r'] or '',
                       'n', 0, unpack(more))
    end
    if tracked and sid then redis.call('HSET', prefix .. 'job:' .. id, 'sid', sid) end
    if only ~= nil then redis.call('XDEL', KEYS[3], e[1]) end
  end
end
if only == nil then redis.call('DEL', KEYS[3]) end
for _, name in ipairs(added) do limit_added(prefix, ARGV[1], name, now, seen) end
return count
"""
)

#: KEYS: dead, done, ready. Deletes the dead letters and the done counter, and the
#: streams of priority levels no longer in use (empty: nothing queued or leased).
#: Returns the number of finished messages deleted.
PURGE = (
    PRELUDE
    + r"""
local n = redis.call('XLEN', KEYS[1]) + tonumber(redis.call('GET', KEYS[2]) or '0')
redis.call('DEL', KEYS[1], KEYS[2])
for _, level in ipairs(levels_of(KEYS[3])) do
  local stream = stream_of(KEYS[3], level)
  if level ~= 0 and redis.call('XLEN', stream) == 0 then
    redis.call('DEL', stream, born_key(stream))
    redis.call('ZREM', queue_base(KEYS[3]) .. 'levels', level)
  end
end
return n
"""
)
