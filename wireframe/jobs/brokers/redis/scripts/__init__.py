"""The Redis broker's Lua scripts: every step that must be atomic runs as one script.

Redis runs a script without interleaving other commands, so "check the lease, then
acknowledge, delete and post the reply" is one indivisible step, and a batch of
messages is one round trip. The scripts of each role live in a module of their own,
with the keys they work on: :mod:`.queues` (a queue's streams and delayed set),
:mod:`.leases` (the ends of a lease), :mod:`.channels` (replies and run channel
records), :mod:`.workers` and :mod:`.admin`. Each takes its keys and arguments in the
order documented above it, and most start with :data:`PRELUDE`, the helpers they
share: the Redis clock, (re)creating a queue's stream and group, what makes a stream
entry malformed, burying a message in the dead-letter stream, the lease check.
"""

from __future__ import annotations

__all__ = ["PRELUDE"]

#: Helpers every script starts with.
PRELUDE = r"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function fields_of(flat)
  local f = {}
  if not flat then return f end
  for k = 1, #flat, 2 do f[flat[k]] = flat[k + 1] end
  return f
end

-- the key holding when the stream of `ready` (a '...:ready' key) was last created
local function born_key(ready)
  return string.sub(ready, 1, -6) .. 'born'
end

local function has_group(ready, group)
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', ready)) do
    for k = 1, #g, 2 do
      if g[k] == 'name' and g[k + 1] == group then return true end
    end
  end
  return false
end

-- create the stream and its group if missing (Redis may have lost them)
local function ensure_queue(queues, ready, group, queue)
  if redis.call('EXISTS', ready) == 0 then
    redis.call('XGROUP', 'CREATE', ready, group, '0', 'MKSTREAM')
    redis.call('SET', born_key(ready), now_ms())
  elseif not has_group(ready, group) then
    redis.call('XGROUP', 'CREATE', ready, group, '0')
    redis.call('SET', born_key(ready), now_ms())
  end
  if redis.call('SISMEMBER', queues, queue) == 0 then redis.call('SADD', queues, queue) end
end

-- what is wrong with a stream entry's fields, or nil when nothing is
local NAMES = {i = 'message id', b = 'body', r = 'reply_to'}
local function malformed(f)
  local missing = {}
  for _, name in ipairs({'i', 'b', 'r'}) do
    if f[name] == nil then missing[#missing + 1] = "'" .. name .. "' (" .. NAMES[name] .. ')' end
  end
  if #missing == 1 then return 'missing field ' .. missing[1] end
  if #missing > 1 then return 'missing fields ' .. table.concat(missing, ', ') end
  local n = f['n']
  if n ~= nil and not string.match(n, '^%d+$') then
    return "field 'n' (delivery count) is " .. string.format('%q', string.sub(n, 1, 40)) ..
           ', not a whole number'
  end
  return nil
end

-- deliveries recorded in an entry's `n` field (0 when absent or unreadable)
local function base_count(f)
  return tonumber(f['n'] or '0') or 0
end

-- add a message to the dead-letter stream and post a dead reply (fields may be missing)
local function entomb(dead, prefix, f, total, reason)
  local id, reply_to = f['i'] or '', f['r'] or ''
  redis.call('XADD', dead, '*', 'i', id, 'b', f['b'] or '', 'r', reply_to, 'why', reason,
             'n', total, 't', now_ms())
  if reply_to ~= '' then
    redis.call('LPUSH', prefix .. 'c:' .. reply_to, cmsgpack.pack({id, 1, reason}))
  end
end

-- move a stream entry to the dead-letter stream and post a dead reply
local function bury(ready, dead, group, prefix, sid, f, total, reason)
  redis.call('XACK', ready, group, sid)
  redis.call('XDEL', ready, sid)
  entomb(dead, prefix, f, total, reason)
end

local function bury_malformed(ready, dead, group, prefix, sid, f, count, why)
  bury(ready, dead, group, prefix, sid, f, base_count(f) + count - 1,
       'malformed stream entry ' .. sid .. ': ' .. why)
end

local function too_many(made, maxd)
  return 'delivered ' .. made .. ' times without completing (max_deliveries=' .. maxd .. ')'
end

local LOST_STREAM = "Redis no longer has this queue's stream or consumer group: " ..
  'it restarted without its data or the keys were deleted, and the message with them'
local LOST_ENTRY = 'Redis no longer has this message: the stream or group was created ' ..
  'anew after it was delivered (Redis restarted without its data, or the keys were deleted)'

-- the lease check: returns the PEL entry's delivery count, or why the lease is lost
local function check_lease(ready, group, sid, consumer, count, lease_ms)
  local ok, p = pcall(redis.call, 'XPENDING', ready, group, sid, sid, 1)
  if not ok then
    local text = type(p) == 'table' and p['err'] or tostring(p)
    if string.find(text, 'NOGROUP', 1, true) then return nil, LOST_STREAM end
    error(p)
  end
  if #p == 0 then
    local born = tonumber(redis.call('GET', born_key(ready)) or '')
    local ms = tonumber(string.match(sid, '^(%d+)-'))
    if born and ms and ms < born then return nil, LOST_ENTRY end
    return nil, 'the message is no longer leased'
  end
  local e = p[1]
  if e[2] ~= consumer then return nil, 'another consumer took it over' end
  if e[4] ~= count then return nil, 'it was delivered again since' end
  if e[3] >= lease_ms then return nil, 'the lease ran out' end
  return e[4], nil
end

local function entry_fields(ready, sid)
  local r = redis.call('XRANGE', ready, sid, sid)
  if #r == 0 then return nil end
  return fields_of(r[1][2])
end
"""
