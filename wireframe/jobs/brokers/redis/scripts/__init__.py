"""The Redis broker's Lua scripts: every step that must be atomic runs as one script.

Redis runs a script without interleaving other commands, so "check the lease, then
acknowledge, delete and post the reply" is one indivisible step, and a batch of
messages is one round trip. The scripts of each role live in a module of their own,
with the keys they work on: :mod:`.queues` (a queue's streams, one per priority level
in use, and delayed set), :mod:`.leases` (the ends of a lease), :mod:`.jobs` (records
of jobs submitted by themselves), :mod:`.channels` (replies and run channel
records), :mod:`.workers` and :mod:`.admin`. Each takes its keys and arguments in the
order documented above it, and most start with :data:`PRELUDE`, the helpers they
share: the Redis clock, (re)creating a queue's stream and group, the streams of its
priority levels, what makes a stream entry malformed, moving a tracked job's record
(started, finished: its waiters woken), burying a message in the dead-letter stream,
limits (:mod:`.limiting`: buckets, slots, messages waiting for a limit), the lease
check. :mod:`.limits` has the scripts of limits of their own; :mod:`.orchestrating`
the posting of a reply, which makes an orchestration instance whose activity
replied ready (:mod:`.durable`: the orchestration store's scripts).
"""

from __future__ import annotations

from wireframe.jobs.brokers.redis.scripts.limiting import LIMITING
from wireframe.jobs.brokers.redis.scripts.orchestrating import ORCHESTRATING

__all__ = ["PRELUDE"]

#: Helpers every script starts with.
PRELUDE = (
    r"""
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
"""
    + ORCHESTRATING
    + r"""

-- A queue's keys start with its base 'P q:Q:'. Its messages of priority 0 are in the
-- stream base..'ready', those of priority N (not 0) in base..'ready:pN'.
local function queue_base(ready)
  return string.match(ready, '^(.*:)ready:p%-?%d+$') or string.sub(ready, 1, -6)
end

-- the priority of the messages in the stream `ready`
local function level_of(ready)
  return tonumber(string.match(ready, ':ready:p(%-?%d+)$') or '0')
end

-- the key holding when the stream `ready` was last created ('...:born', '...:born:pN')
local function born_key(ready)
  local base, level = string.match(ready, '^(.*:)ready(:p%-?%d+)$')
  if base then return base .. 'born' .. level end
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

-- the stream of priority `level` of the queue whose priority-0 stream is `ready`,
-- created if missing and its level recorded in the queue's 'levels' ZSET (once per
-- script run: `seen` remembers)
local function level_stream(queues, ready, group, queue, level, seen)
  if level == 0 then return ready end
  local stream = ready .. ':p' .. level
  if not seen[stream] then
    seen[stream] = true
    -- a stream whose group is gone gets it back from the next consume
    if redis.call('EXISTS', stream) == 0 then ensure_queue(queues, stream, group, queue) end
    local levels = queue_base(ready) .. 'levels'
    if not pcall(redis.call, 'ZADD', levels, level, level) then  -- not a ZSET: garbage
      redis.call('DEL', levels)
      redis.call('ZADD', levels, level, level)
    end
  end
  return stream
end

-- the priority levels in use of the queue whose priority-0 stream is `ready`, highest
-- first, 0 among them (members of its 'levels' ZSET that are not whole numbers, or a
-- key that is not a ZSET, are ignored)
local function levels_of(ready)
  local ok, z = pcall(redis.call, 'ZRANGE', queue_base(ready) .. 'levels', 0, -1)
  local out, zero = {}, false
  if ok then
    for k = #z, 1, -1 do
      local n = string.match(z[k], '^%-?%d+$') and tonumber(z[k])
      if n and n ~= 0 then
        if n < 0 and not zero then out[#out + 1] = 0; zero = true end
        out[#out + 1] = n
      end
    end
  end
  if not zero then out[#out + 1] = 0 end
  return out
end

-- the stream of priority `level` of the queue whose priority-0 stream is `ready`
local function stream_of(ready, level)
  if level == 0 then return ready end
  return ready .. ':p' .. level
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

-- Tracked jobs (submitted by themselves): a record HASH 'P job:ID' (see scripts.jobs);
-- their stream entries carry the field j = '1'. A record that is missing or not a
-- hash of ours is no record: the message runs untracked, nothing wedges.
local LIVE = {scheduled = true, queued = true, running = true}

-- The fields of a record a finished job's reply carries (with its final ones).
local REPLY_FIELDS = {'q', 'e', 'v', 'k', 'p', 'o', 'a', 'st', 'w', 'l'}
-- Most replies an inbox keeps unread (the oldest go first), and how long (ms) an
-- inbox nobody reads is kept.
local INBOX_CAP, INBOX_TTL = 10000, 600000

-- push the replies collected by finish_job ({inbox = {reply, ...}}) in one RPUSH per
-- inbox; a new inbox gets its expiry, one past its cap is trimmed
local function flush_replies(replies)
  for inbox, items in pairs(replies) do
    local ok, n = pcall(redis.call, 'RPUSH', inbox, unpack(items))
    if not ok then  -- not a list: someone else's
      redis.call('DEL', inbox)
      n = redis.call('RPUSH', inbox, unpack(items))
    end
    if n > INBOX_CAP then redis.call('LTRIM', inbox, -INBOX_CAP, -1) end
    if n == #items or n > INBOX_CAP then redis.call('PEXPIRE', inbox, INBOX_TTL) end
  end
end

-- make a live job's record final: `status` with `result` or `err` (either may be
-- nil) and the field, value pairs `more`, kept for its ttl; its dedup key freed;
-- its waiters woken: the runtime that submitted it by a reply carrying the whole
-- record in its inbox (collected in `replies` when given, else pushed now), waiters
-- elsewhere (the record's 'wt') by a token in 'P jobdone:ID' that every BLMOVE
-- rotation sees. False when it was not live.
local function finish_job(prefix, id, status, result, err, now, more, replies)
  local job = prefix .. 'job:' .. id
  local ok, r = pcall(redis.call, 'HMGET', job, 's', 'ttl', 'rt', 'wt', unpack(REPLY_FIELDS))
  if not (ok and LIVE[r[1]]) then return false end
  local ttl = tonumber(r[2]) or 86400000
  local set = {'s', status, 'f', now, 'x', now + ttl}
  if result then set[#set + 1] = 'res'; set[#set + 1] = result end
  if err then set[#set + 1] = 'err'; set[#set + 1] = err end
  local first = r[4 + 8] == false  -- no 'st' yet: this was its first run
  if more then
    for k = 1, #more, 2 do
      if more[k] ~= 'st' or first then set[#set + 1] = more[k]; set[#set + 1] = more[k + 1] end
    end
  end
  redis.call('HSET', job, unpack(set))
  redis.call('PEXPIRE', job, ttl)
  local key = r[4 + 4]
  if key then
    local dedup = prefix .. 'key:' .. key
    local held_ok, held = pcall(redis.call, 'GET', dedup)
    if held_ok and held == id then redis.call('DEL', dedup) end
  end
  if r[3] then
    local flat = {}
    for k, name in ipairs(REPLY_FIELDS) do
      if r[4 + k] then flat[#flat + 1] = name; flat[#flat + 1] = r[4 + k] end
    end
    for _, v in ipairs(set) do flat[#flat + 1] = v end
    local reply = cmsgpack.pack({id, flat})
    if replies then
      local items = replies[r[3]]
      if not items then items = {}; replies[r[3]] = items end
      items[#items + 1] = reply
    else
      flush_replies({[r[3]] = {reply}})
    end
  end
  if r[4] then
    local done = prefix .. 'jobdone:' .. id
    if not pcall(redis.call, 'LPUSH', done, '1') then  -- not a list: someone else's
      redis.call('DEL', done)
      redis.call('LPUSH', done, '1')
    end
    redis.call('PEXPIRE', done, ttl)
  end
  return true
end

-- a tracked job's record fields status, attempts, started (nil: no usable record)
local function job_of(prefix, id)
  local ok, r = pcall(redis.call, 'HMGET', prefix .. 'job:' .. id, 's', 'a', 'st')
  if ok and r[1] then return r end
  return nil
end

-- a live job handed to `consumer` again (a lease taken over, an entry handed back):
-- running. (A first delivery writes nothing: the record says queued with its
-- entry's id, and a read finds the entry leased - see scripts.jobs.JOB. Its
-- attempts are 'a', those before its entry, plus the entry's deliveries.)
local function start_job(prefix, id, r, consumer, now)
  local set = {'s', 'running', 'w', consumer}
  if not r[3] then set[#set + 1] = 'st'; set[#set + 1] = now end
  redis.call('HSET', prefix .. 'job:' .. id, unpack(set))
end

-- add a message to the dead-letter stream and post a dead reply (fields may be
-- missing); the entry keeps the message's priority and tracking, so that a requeue
-- puts it back where it was; a tracked job's record says it is dead
local function entomb(dead, prefix, f, total, reason, level)
  local id, reply_to = f['i'] or '', f['r'] or ''
  local now = now_ms()
  local extra = {}
  if level and level ~= 0 then extra = {'p', level} end
  if f['l'] and f['l'] ~= '' then extra[#extra + 1] = 'l'; extra[#extra + 1] = f['l'] end
  if f['j'] == '1' then
    extra[#extra + 1] = 'j'; extra[#extra + 1] = '1'
    finish_job(prefix, id, 'dead', nil, reason, now, {'a', total})
  end
  redis.call('XADD', dead, '*', 'i', id, 'b', f['b'] or '', 'r', reply_to, 'why', reason,
             'n', total, 't', now, unpack(extra))
  if reply_to ~= '' then
    post_reply(prefix, prefix .. 'c:' .. reply_to, reply_to, cmsgpack.pack({id, 1, reason}), now,
              id)
  end
end

-- move a stream entry to the dead-letter stream and post a dead reply
local function bury(ready, dead, group, prefix, sid, f, total, reason)
  redis.call('XACK', ready, group, sid)
  redis.call('XDEL', ready, sid)
  entomb(dead, prefix, f, total, reason, level_of(ready))
end

"""
    + LIMITING
    + r"""
-- a scheduled tracked job came due: its message (kept in its record while it waited)
-- goes to the stream of its priority and the record says queued. One aborted
-- meanwhile has nothing to run; one without a usable record goes to the dead-letter
-- stream saying so.
local function release_scheduled(queues, ready, dead, group, queue, prefix, id, seen)
  local job = prefix .. 'job:' .. id
  local ok, r = pcall(redis.call, 'HMGET', job, 's', 'p', 'db', 'dr', 'dn', 'l')
  if ok and r[1] == 'scheduled' and r[3] then
    local level = tonumber(r[2]) or 0
    if level ~= math.floor(level) then level = 0 end
    if r[6] and r[6] ~= '' then
      -- of a limit: to its stream, or it waits for its limit (in the record, still)
      redis.call('HSET', job, 's', 'queued')
      local sid = limit_enqueue(prefix, group, queue, r[6], level,
                                {i = id, b = r[3], r = r[4], j = '1'}, tonumber(r[5]) or 0,
                                now_ms(), seen, {})
      if sid then
        redis.call('HSET', job, 'sid', sid)
        redis.call('HDEL', job, 'db', 'dr', 'dn')
      end
      return
    end
    local stream = level_stream(queues, ready, group, queue, level, seen)
    local sid = redis.call('XADD', stream, '*', 'i', id, 'b', r[3], 'r', r[4] or '',
                           'n', tonumber(r[5]) or 0, 'j', '1')
    redis.call('HSET', job, 's', 'queued', 'sid', sid)
    redis.call('HDEL', job, 'db', 'dr', 'dn')
  elseif not (ok and r[1] and not LIVE[r[1]]) then
    entomb(dead, prefix, {i = id}, 0,
           'malformed member of the delayed set: the record of tracked job ' .. id ..
           ' does not hold its scheduled message')
  end
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
)
