"""The Lua scripts of the Redis broker: every step that must be atomic runs as one script.

Redis runs a script without interleaving other commands, so "check the lease, then
acknowledge, delete and post the reply" is one indivisible step, and a batch of
messages is one round trip. The scripts share a prelude of helpers (``PRELUDE``)
and take their keys and arguments in the order documented above each one.

Data model (``P`` is the broker's key prefix, ``Q`` a queue, ``C`` a channel):

* ``P queues`` - SET of known queue names.
* ``P q:Q:ready`` - STREAM of messages, consumer group ``wireframe``; entry fields
  ``i`` (message id), ``b`` (body), ``r`` (reply_to), ``n`` (deliveries before
  this entry existed: a message abandoned or delayed is re-added as a new entry
  and keeps its count here). The group's PEL holds the leases.
* ``P q:Q:delayed`` - ZSET of ``cmsgpack([id, body, reply_to, n])`` scored by the
  due time in milliseconds of Redis ``TIME``.
* ``P q:Q:dead`` - STREAM of dead letters, fields ``i b r why n t`` (``t`` =
  death time, ms since the epoch).
* ``P q:Q:done`` - counter of completed messages not yet purged.
* ``P q:Q:born`` - STRING, the Redis ``TIME`` (ms) when the stream or its group
  was last created. A lease check that finds its entry gone from the PEL and
  the entry older than this knows Redis lost the message (it restarted without
  its data, or the keys were deleted) rather than someone else finishing it.
* ``P c:C`` - LIST of replies, ``LPUSH``-ed, popped from the right; each a
  msgpack array ``[message_id, kind, payload]`` with kind 0 = body, 1 = dead
  reason.
* ``P pub:TOKEN`` - STRING marking that one publish call landed, so that its
  repeat after a lost answer adds nothing; deleted by the publisher's next
  publish, expiring after ``reconnect`` + 60 s.
* ``P c:C:inbox:CONSUMER:N`` - LIST that one wait of a receiver ``BLMOVE``-s one
  reply into, so that a reply taken by a wait that was cancelled is kept, not
  lost; deleted by the receiver's next call.
* ``P channels`` and ``P workers`` - run channel and worker records, see
  ``scripts.presence``. ``CONSUME`` settles a message whose run channel is dead
  (counted as done, never handed out) and ``COMPLETE`` posts no reply to one.
  Entries that reach a consumer through its blocking ``XREADGROUP`` (published
  while it waited) are not checked: such an orphan runs, and its reply is dropped.

Lease token of a delivery: ``"<stream entry id>|<PEL delivery count>|<consumer>"``.
A lease is current while the PEL entry exists, belongs to that consumer, has that
delivery count and has been idle for less than the lease. A lease check on a stream
or group that no longer exists answers why, like any other lost lease; consume and
publish create them again.

Malformed data never blocks a queue: a stream entry without its ``i``, ``b`` or
``r`` field or with a non-numeric ``n``, and a delayed-set member that is not
``cmsgpack([id, body, reply_to, n])``, is moved to the dead-letter stream with a
reason naming what was wrong (a delayed member whole, as the body) and its
``reply_to``, where readable, gets a dead reply.
"""

from __future__ import annotations

__all__ = [
    "ABANDON",
    "BURY_MALFORMED",
    "COMPLETE",
    "CONSUME",
    "DEAD_LETTER",
    "DECLARE",
    "DELETE_QUEUE",
    "EXTEND",
    "HAND_BACK",
    "PUBLISH",
    "PURGE",
    "RECEIVE",
    "RELEASE",
    "REQUEUE_DEAD",
    "STATS",
]

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

#: KEYS: queues, ready. ARGV: group, queue.
DECLARE = (
    PRELUDE
    + r"""
ensure_queue(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
return 1
"""
)

#: KEYS: queues, ready, delayed, this call's token, then tokens of earlier calls
#: that were answered (deleted). ARGV: group, queue, delay_ms, token ttl (s), then
#: id, body, reply_to for each message. A call whose token exists already landed:
#: its repeat (after a lost answer) publishes nothing and returns -1.
PUBLISH = (
    PRELUDE
    + r"""
for k = 5, #KEYS do redis.call('DEL', KEYS[k]) end
if redis.call('EXISTS', KEYS[4]) == 1 then return -1 end
redis.call('SET', KEYS[4], '1', 'EX', ARGV[4])
ensure_queue(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
local delay = tonumber(ARGV[3])
if delay > 0 then
  local due = now_ms() + delay
  for k = 5, #ARGV, 3 do
    redis.call('ZADD', KEYS[3], due, cmsgpack.pack({ARGV[k], ARGV[k + 1], ARGV[k + 2], 0}))
  end
else
  for k = 5, #ARGV, 3 do
    redis.call('XADD', KEYS[2], '*', 'i', ARGV[k], 'b', ARGV[k + 1], 'r', ARGV[k + 2])
  end
end
return (#ARGV - 4) / 3
"""
)

#: KEYS: queues, ready, delayed, dead. ARGV: group, queue, consumer, limit,
#: lease_ms, max_deliveries, prefix, claim (1 = also take over expired leases),
#: claim cursor (where the last XAUTOCLAIM scan stopped; '0-0' at first).
#: Returns {deliveries, wait_ms, cursor}: deliveries a flat list of sid, id, body,
#: reply_to, PEL count, total deliveries; wait_ms the time until the next
#: delayed message is due (-1: none) when nothing was delivered.
CONSUME = (
    PRELUDE
    + r"""
local ready, delayed, dead = KEYS[2], KEYS[3], KEYS[4]
local group, consumer = ARGV[1], ARGV[3]
local limit, lease_ms, maxd = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local prefix = ARGV[7]
ensure_queue(KEYS[1], ready, group, ARGV[2])
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 1000)
for _, m in ipairs(due) do
  local ok, t = pcall(cmsgpack.unpack, m)
  local why = nil
  if not ok then
    why = 'it is not msgpack (' .. tostring(t) .. ')'
  elseif type(t) ~= 'table' or type(t[1]) ~= 'string' or type(t[2]) ~= 'string'
      or type(t[3]) ~= 'string' or type(t[4]) ~= 'number' or t[4] < 0
      or math.floor(t[4]) ~= t[4] then
    why = 'it is not [message id, body, reply_to, deliveries]'
  end
  -- Under maxmemory the first write of a script may be refused: then the due
  -- messages wait for the next pass, and the ready ones are still handed out.
  local moved
  if why then
    local f = {b = m}  -- kept whole as the body: nothing is lost
    if ok and type(t) == 'table' then
      if type(t[1]) == 'string' then f['i'] = t[1] end
      if type(t[3]) == 'string' then f['r'] = t[3] end
    end
    moved = pcall(entomb, dead, prefix, f, 0, 'malformed member of the delayed set: ' .. why)
  else
    moved = pcall(redis.call, 'XADD', ready, '*', 'i', t[1], 'b', t[2], 'r', t[3], 'n', t[4])
  end
  if not moved then break end
  redis.call('ZREM', delayed, m)
end
local out, got = {}, 0
local channels, done = prefix .. 'channels', prefix .. 'q:' .. ARGV[2] .. ':done'
local function take(sid, f, count)
  local why = malformed(f)
  if why then
    bury_malformed(ready, dead, group, prefix, sid, f, count, why)
    return
  end
  if f['r'] and f['r'] ~= '' then
    local score = redis.call('ZSCORE', channels, f['r'])
    if score and tonumber(score) <= now then
      -- an orphan: its run channel is dead, nobody wants its result
      redis.call('XACK', ready, group, sid)
      redis.call('XDEL', ready, sid)
      redis.call('INCR', done)
      return
    end
  end
  local total = base_count(f) + count
  if total > maxd then
    bury(ready, dead, group, prefix, sid, f, total - 1, too_many(total - 1, maxd))
  else
    got = got + 1
    for _, v in ipairs({sid, f['i'], f['b'], f['r'], count, total}) do out[#out + 1] = v end
  end
end
local cursor = ARGV[9]
if ARGV[8] == '1' then
  -- resume the PEL scan where the last pass stopped, so that expired leases behind
  -- many live ones are found too; a few XAUTOCLAIM steps per pass at most
  for _ = 1, 10 do
    local r = redis.call('XAUTOCLAIM', ready, group, consumer, lease_ms, cursor,
                         'COUNT', limit - got)
    cursor = r[1]
    for _, e in ipairs(r[2]) do
      if e[2] then
        local p = redis.call('XPENDING', ready, group, e[1], e[1], 1)
        take(e[1], fields_of(e[2]), p[1][4])
      else  -- deleted meanwhile (Redis < 7 still lists it): nothing to deliver
        redis.call('XACK', ready, group, e[1])
      end
    end
    if cursor == '0-0' or got >= limit then break end
  end
end
if got < limit then
  local r = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', limit - got,
                       'STREAMS', ready, '>')
  if r then
    for _, e in ipairs(r[1][2]) do take(e[1], fields_of(e[2]), 1) end
  end
end
local wait = -1
if got == 0 then
  local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  if #first > 0 then wait = math.max(0, tonumber(first[2]) - now) end
end
return {out, wait, cursor}
"""
)

#: Completes many deliveries at once (group commit). No KEYS (the keys vary per
#: item; this broker targets standalone Redis). ARGV: group, lease_ms, channels
#: key, then per delivery: ready key, done key, sid, count, consumer, reply key
#: ('' = no reply), reply payload, channel name. A reply to a dead run channel
#: is not posted. Returns one outcome per delivery: 'ok' or why the lease is lost.
COMPLETE = (
    PRELUDE
    + r"""
local group, lease_ms, channels = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local now = now_ms()
local out = {}
for k = 4, #ARGV, 8 do
  local ready, sid = ARGV[k], ARGV[k + 2]
  local _, why = check_lease(ready, group, sid, ARGV[k + 4], tonumber(ARGV[k + 3]), lease_ms)
  if why then
    out[#out + 1] = why
  else
    redis.call('XACK', ready, group, sid)
    redis.call('XDEL', ready, sid)
    redis.call('INCR', ARGV[k + 1])
    if ARGV[k + 5] ~= '' then
      local score = redis.call('ZSCORE', channels, ARGV[k + 7])
      if not (score and tonumber(score) <= now) then
        redis.call('LPUSH', ARGV[k + 5], ARGV[k + 6])
      end
    end
    out[#out + 1] = 'ok'
  end
end
return out
"""
)

#: KEYS: ready, delayed. ARGV: group, sid, count, consumer, lease_ms, delay_ms,
#: replace body ('1' or '0'), new body. (Entries handed out are well formed: consume
#: buries the others.)
ABANDON = (
    PRELUDE
    + r"""
local ready, delayed = KEYS[1], KEYS[2]
local count, why = check_lease(ready, ARGV[1], ARGV[2], ARGV[4], tonumber(ARGV[3]),
                               tonumber(ARGV[5]))
if why then return why end
local f = entry_fields(ready, ARGV[2])
redis.call('XACK', ready, ARGV[1], ARGV[2])
redis.call('XDEL', ready, ARGV[2])
if f == nil then return 'ok' end
local n = base_count(f) + count
local body = f['b']
if ARGV[7] == '1' then n = 0; body = ARGV[8] end
local delay = tonumber(ARGV[6])
if delay > 0 then
  redis.call('ZADD', delayed, now_ms() + delay, cmsgpack.pack({f['i'], body, f['r'], n}))
else
  redis.call('XADD', ready, '*', 'i', f['i'], 'b', body, 'r', f['r'], 'n', n)
end
return 'ok'
"""
)

#: KEYS: ready. ARGV: group, sid, count, consumer, lease_ms.
EXTEND = (
    PRELUDE
    + r"""
local _, why = check_lease(KEYS[1], ARGV[1], ARGV[2], ARGV[4], tonumber(ARGV[3]),
                           tonumber(ARGV[5]))
if why then return why end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[4], 0, ARGV[2], 'JUSTID')
return 'ok'
"""
)

#: KEYS: ready, dead. ARGV: group, sid, count, consumer, lease_ms, prefix, reason,
#: refused ('1': this delivery is refused, so it does not count as made).
DEAD_LETTER = (
    PRELUDE
    + r"""
local count, why = check_lease(KEYS[1], ARGV[1], ARGV[2], ARGV[4], tonumber(ARGV[3]),
                               tonumber(ARGV[5]))
if why then return why end
local f = entry_fields(KEYS[1], ARGV[2])
if f == nil then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return 'ok'
end
local made = base_count(f) + count
if ARGV[8] == '1' then made = made - 1 end
bury(KEYS[1], KEYS[2], ARGV[1], ARGV[6], ARGV[2], f, made, ARGV[7])
return 'ok'
"""
)

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

#: KEYS: queues, ready, delayed, dead, done, born. ARGV: queue.
DELETE_QUEUE = r"""
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
redis.call('SREM', KEYS[1], ARGV[1])
return 1
"""

#: KEYS: ready streams of the queues this consumer read. ARGV: group, consumer,
#: released (the placeholder consumer that holds handed-back entries), stale_ms.
#: Hands every entry this consumer still holds to the placeholder with an idle time
#: far past any lease (claimable at once, delivery count kept), deletes this
#: consumer, and deletes consumers of crashed brokers (nothing pending, idle longer
#: than stale_ms). Returns how many entries were handed back.
RELEASE = r"""
local group, me, released, stale = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local n = 0
for _, ready in ipairs(KEYS) do
  if redis.call('EXISTS', ready) == 1 then
    local ok, p = pcall(redis.call, 'XPENDING', ready, group, '-', '+', 10000, me)
    if ok then
      for _, e in ipairs(p) do
        redis.call('XCLAIM', ready, group, released, 0, e[1], 'IDLE', 1000000000000, 'JUSTID')
        n = n + 1
      end
      redis.call('XGROUP', 'DELCONSUMER', ready, group, me)
      for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', ready, group)) do
        local f = {}
        for k = 1, #c, 2 do f[c[k]] = c[k + 1] end
        if f['pending'] == 0 and f['idle'] > stale and f['name'] ~= released then
          redis.call('XGROUP', 'DELCONSUMER', ready, group, f['name'])
        end
      end
    end
  end
end
return n
"""

#: KEYS: channel, then inboxes to delete (their reply was handed out), then
#: inboxes to drain (a wait into them was cancelled or failed), then this call's
#: landing inbox (drained too). ARGV: how many inboxes to delete, limit. Returns
#: the drained replies, then up to ``limit`` in all from the channel, oldest
#: first - and keeps them all in the landing inbox, so that a repeat of a call
#: whose answer was lost returns them again.
RECEIVE = r"""
local ndrop = tonumber(ARGV[1])
local landing = KEYS[#KEYS]
local out = {}
for k = 2, #KEYS do
  if k > ndrop + 1 then
    local kept = redis.call('LRANGE', KEYS[k], 0, -1)
    for j = #kept, 1, -1 do out[#out + 1] = kept[j] end
  end
  redis.call('DEL', KEYS[k])
end
local want = tonumber(ARGV[2]) - #out
if want > 0 then
  local p = redis.call('LMPOP', 1, KEYS[1], 'RIGHT', 'COUNT', want)
  if p then
    for _, v in ipairs(p[2]) do out[#out + 1] = v end
  end
end
for s = 1, #out, 1000 do
  redis.call('LPUSH', landing, unpack(out, s, math.min(s + 999, #out)))
end
return out
"""

#: KEYS: ready. ARGV: group, released, then stream entry ids. Hands entries a
#: cancelled blocking read leased (but nobody got) to the placeholder consumer,
#: claimable at once with their delivery count kept.
HAND_BACK = r"""
for k = 3, #ARGV do
  -- fails only if the stream or group is gone, and the entries with it
  pcall(redis.call, 'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[k], 'IDLE', 1000000000000,
        'JUSTID')
end
return #ARGV - 2
"""

#: KEYS: ready, dead. ARGV: group, released, prefix, then ids of entries a
#: blocking read just leased to this broker that looked malformed to it. Buries
#: each that is (as CONSUME would); hands any other back (claimable at once).
#: Returns how many were buried.
BURY_MALFORMED = (
    PRELUDE
    + r"""
local n = 0
for k = 4, #ARGV do
  local sid = ARGV[k]
  local f = entry_fields(KEYS[1], sid)
  local why = f and malformed(f)
  if why then
    bury_malformed(KEYS[1], KEYS[2], ARGV[1], ARGV[3], sid, f, 1, why)
    n = n + 1
  elseif f then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, sid, 'IDLE', 1000000000000, 'JUSTID')
  end
end
return n
"""
)
