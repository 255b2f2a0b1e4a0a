"""The Lua scripts of a queue: declare, publish, consume, hand back, release, delete.

Keys (``P`` is the broker's key prefix, ``Q`` a queue):

* ``P queues`` - SET of known queue names.
* ``P q:Q:ready`` - STREAM of messages of priority 0, consumer group ``wireframe``;
  entry fields ``i`` (message id), ``b`` (body), ``r`` (reply_to), ``n``
  (deliveries before this entry existed: a message abandoned or delayed is
  re-added as a new entry and keeps its count here), ``j`` = ``1`` for a tracked
  job (:mod:`.jobs`). The group's PEL holds the leases (:mod:`.leases`).
* ``P q:Q:ready:pN`` - the same for messages of priority N (not 0), with its own
  ``P q:Q:born:pN``; ``P q:Q:levels`` - ZSET of the priorities N in use (member
  and score N). ``CONSUME`` takes over expired leases and reads new entries level
  by level, highest first, until it has ``limit``; ``PURGE`` drops the streams of
  levels left empty. Priorities are 32-bit ints.
* ``P q:Q:delayed`` - ZSET of ``cmsgpack([id, body, reply_to, n])`` (with the
  priority as a fifth element when not 0; a tracked job's is ``cmsgpack([id])``,
  its message waiting in its record) scored by the due time in milliseconds of
  Redis ``TIME``; ``CONSUME`` moves the due ones into the stream of their
  priority.
* ``P q:Q:dead`` - STREAM of dead letters, fields ``i b r why n t`` (``t`` =
  death time, ms since the epoch), and ``p`` (priority, when not 0) and ``j``
  (tracked) so that a requeue puts the message back where it was.
* ``P q:Q:done`` - counter of completed messages not yet purged.
* ``P q:Q:born`` - STRING, the Redis ``TIME`` (ms) when the stream or its group
  was last created. A lease check that finds its entry gone from the PEL and
  the entry older than this knows Redis lost the message (it restarted without
  its data, or the keys were deleted) rather than someone else finishing it.
* ``P pub:TOKEN`` - STRING marking that one publish call landed, so that its
  repeat after a lost answer adds nothing; deleted by the publisher's next
  publish, expiring after ``reconnect`` + 60 s.

``CONSUME`` settles a message whose run channel is dead (counted as done, never
handed out; see :mod:`.channels`) - unless it is a tracked job, which is wanted by
its id whoever listened - and a tracked job aborted by id while it waited. Entries that reach a consumer through its
blocking ``XREADGROUP`` (published while it waited) are not checked: such an orphan
runs, and its reply is dropped.

Malformed data never blocks a queue: a stream entry without its ``i``, ``b`` or
``r`` field or with a non-numeric ``n``, and a delayed-set member that is not
``cmsgpack([id, body, reply_to, n])``, is moved to the dead-letter stream with a
reason naming what was wrong (a delayed member whole, as the body) and its
``reply_to``, where readable, gets a dead reply.
"""

from __future__ import annotations

from wireframe.jobs.brokers.redis.scripts import PRELUDE

__all__ = [
    "BURY_MALFORMED",
    "CONSUME",
    "DECLARE",
    "DELETE_QUEUE",
    "HAND_BACK",
    "PUBLISH",
    "PUBLISH_LEVELS",
    "PUBLISH_LIMITS",
    "RELEASE",
]

#: KEYS: queues, ready. ARGV: group, queue.
DECLARE = (
    PRELUDE
    + r"""
ensure_queue(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
return 1
"""
)

_PUBLISH = r"""
for k = 5, #KEYS do redis.call('DEL', KEYS[k]) end
if redis.call('EXISTS', KEYS[4]) == 1 then return -1 end
redis.call('SET', KEYS[4], '1', 'EX', ARGV[4])
ensure_queue(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
local delay, stride = tonumber(ARGV[3]), STRIDE
local seen = {}
if delay > 0 then
  local due = now_ms() + delay
  for k = 5, #ARGV, stride do
    local level = stride >= 4 and tonumber(ARGV[k + 3]) or 0
    local m = {ARGV[k], ARGV[k + 1], ARGV[k + 2], 0}
    if stride == 5 and ARGV[k + 4] ~= '' then m[5] = level; m[6] = ARGV[k + 4]
    elseif level ~= 0 then m[5] = level end
    redis.call('ZADD', KEYS[3], due, cmsgpack.pack(m))
  end
elseif stride == 3 then
  for k = 5, #ARGV, 3 do
    redis.call('XADD', KEYS[2], '*', 'i', ARGV[k], 'b', ARGV[k + 1], 'r', ARGV[k + 2])
  end
elseif stride == 4 then
  for k = 5, #ARGV, 4 do
    local stream = level_stream(KEYS[1], KEYS[2], ARGV[1], ARGV[2], tonumber(ARGV[k + 3]), seen)
    redis.call('XADD', stream, '*', 'i', ARGV[k], 'b', ARGV[k + 1], 'r', ARGV[k + 2])
  end
else
  -- with limits: a message of a defined limit goes to its stream if the limit lets it
  -- go now (and none of it waits ahead), else it waits for it
  local prefix = string.sub(KEYS[1], 1, -7)  -- queues is prefix .. 'queues'
  local now, added = now_ms(), {}
  for k = 5, #ARGV, 5 do
    local level, name = tonumber(ARGV[k + 3]), ARGV[k + 4]
    if name ~= '' then
      limit_enqueue(prefix, ARGV[1], ARGV[2], name, level,
                    {i = ARGV[k], b = ARGV[k + 1], r = ARGV[k + 2]}, 0, now, seen, added)
    else
      local stream = level_stream(KEYS[1], KEYS[2], ARGV[1], ARGV[2], level, seen)
      redis.call('XADD', stream, '*', 'i', ARGV[k], 'b', ARGV[k + 1], 'r', ARGV[k + 2])
    end
  end
  for _, name in ipairs(added) do limit_added(prefix, ARGV[1], name, now, seen) end
end
return (#ARGV - 4) / stride
"""

#: KEYS: queues, ready, delayed, this call's token, then tokens of earlier calls
#: that were answered (deleted). ARGV: group, queue, delay_ms, token ttl (s), then
#: id, body, reply_to for each message (all of priority 0). A call whose token
#: exists already landed: its repeat (after a lost answer) publishes nothing and
#: returns -1.
PUBLISH = PRELUDE + _PUBLISH.replace("STRIDE", "3")

#: :data:`PUBLISH` of messages with priorities: id, body, reply_to, priority each
#: (highest first: a consumer blocked on every level's stream is served by the
#: stream written first).
PUBLISH_LEVELS = PRELUDE + _PUBLISH.replace("STRIDE", "4")

#: :data:`PUBLISH` of messages with limits: id, body, reply_to, priority, limit each
#: (``''``: none; highest priority first). A message of a defined limit goes to the
#: limit's waiting set in its queue, and as many as the limit lets go now are promoted
#: to their streams (see :mod:`.limiting`); one of a limit never defined goes to its
#: stream, the limit's name kept (field ``l``). A delayed one's delayed-set member has
#: its priority and limit as fifth and sixth elements.
PUBLISH_LIMITS = PRELUDE + _PUBLISH.replace("STRIDE", "5")

#: KEYS: queues, ready, delayed, dead. ARGV: group, queue, consumer, limit,
#: lease_ms, max_deliveries, prefix, claim (1 = also take over expired leases), claim
#: cursor of priority 0, then level, claim cursor pairs of the other levels (where
#: the last XAUTOCLAIM scan of each level's stream stopped; '0-0' for a level not
#: given). Returns {deliveries, wait_ms, cursors}:
#: deliveries a flat list of sid, id, body, reply_to, PEL count, total deliveries,
#: priority, tracked (1: its record says it runs; ``{tracked, limit}`` for a message
#: naming a limit); wait_ms the time until the next delayed message is due or a limit
#: holding messages back may let one go (-1: none) when nothing was delivered;
#: cursors the level, cursor pairs of every level in use, highest first.
#:
#: Limits (:mod:`.limiting`): an entry of a defined limit is handed out only with a
#: token and a slot of it (and none of its limit waiting ahead of it), else it waits
#: in its place, its delivery undone, and the read goes on past it. A pass that has
#: room left then promotes what may go of the messages waiting for limits in this
#: queue, and reads them.
CONSUME = (
    PRELUDE
    + r"""
local ready, delayed, dead = KEYS[2], KEYS[3], KEYS[4]
local group, consumer = ARGV[1], ARGV[3]
local limit, lease_ms, maxd = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local prefix = ARGV[7]
ensure_queue(KEYS[1], ready, group, ARGV[2])
local now = now_ms()
local seen = {}
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 1000)
for _, m in ipairs(due) do
  local ok, t = pcall(cmsgpack.unpack, m)
  local why, job = nil, nil
  if not ok then
    why = 'it is not msgpack (' .. tostring(t) .. ')'
  elseif type(t) == 'table' and #t == 1 and type(t[1]) == 'string' then
    -- a tracked job's reference: its message waits in its record
    job = t[1]
  elseif type(t) ~= 'table' or type(t[1]) ~= 'string' or type(t[2]) ~= 'string'
      or type(t[3]) ~= 'string' or type(t[4]) ~= 'number' or t[4] < 0
      or math.floor(t[4]) ~= t[4] or not (t[5] == nil or (type(t[5]) == 'number'
      and math.floor(t[5]) == t[5])) or not (t[6] == nil or type(t[6]) == 'string') then
    why = 'it is not [message id, body, reply_to, deliveries] (with a priority and a ' ..
          "limit after, or a tracked job's [id])"
  end
  -- Under maxmemory the first write of a script may be refused: then the due
  -- messages wait for the next pass, and the ready ones are still handed out.
  local moved
  if job then
    moved = pcall(release_scheduled, KEYS[1], ready, dead, group, ARGV[2], prefix, job, seen)
  elseif why then
    local f = {b = m}  -- kept whole as the body: nothing is lost
    if ok and type(t) == 'table' then
      if type(t[1]) == 'string' then f['i'] = t[1] end
      if type(t[3]) == 'string' then f['r'] = t[3] end
    end
    moved = pcall(entomb, dead, prefix, f, 0, 'malformed member of the delayed set: ' .. why)
  else
    moved = pcall(function()
      if t[6] and t[6] ~= '' then
        limit_enqueue(prefix, group, ARGV[2], t[6], t[5] or 0, {i = t[1], b = t[2], r = t[3]},
                      t[4], now, seen, {})
        return
      end
      local stream = level_stream(KEYS[1], ready, group, ARGV[2], t[5] or 0, seen)
      redis.call('XADD', stream, '*', 'i', t[1], 'b', t[2], 'r', t[3], 'n', t[4])
    end)
  end
  if not moved then break end
  redis.call('ZREM', delayed, m)
end
local out, got = {}, 0
local channels, done = prefix .. 'channels', prefix .. 'q:' .. ARGV[2] .. ':done'
local function take(stream, level, sid, f, count, again)
  local why = malformed(f)
  if why then
    bury_malformed(stream, dead, group, prefix, sid, f, count, why)
    return
  end
  local job = nil
  local first = count == 1 and not again
  if f['j'] == '1' and not first then
    -- handed out again: its record says running (a first delivery writes nothing, and
    -- cannot be of a job aborted by id: an abort deletes a waiting entry)
    job = job_of(prefix, f['i'])
    if job and job[1] == 'aborted' then
      -- aborted by id while it waited: settled, it never runs
      redis.call('XACK', stream, group, sid)
      redis.call('XDEL', stream, sid)
      redis.call('INCR', done)
      return
    end
    if job and not LIVE[job[1]] then job = nil end
  elseif f['r'] and f['r'] ~= '' then
    local score = redis.call('ZSCORE', channels, f['r'])
    if score and tonumber(score) <= now then
      -- an orphan: its run channel is dead, nobody wants its result
      redis.call('XACK', stream, group, sid)
      redis.call('XDEL', stream, sid)
      redis.call('INCR', done)
      return
    end
  end
  local total = base_count(f) + count
  if total > maxd then
    bury(stream, dead, group, prefix, sid, f, total - 1, too_many(total - 1, maxd))
    return
  end
  local name, tracked = f['l'], (job or (first and f['j'] == '1')) and 1 or 0
  if name and name ~= '' then
    -- its limit lets it go (a token, a slot), or it waits in its place, no delivery used
    local st = limit_state(prefix, name, now)
    if st and (held_ahead(prefix, ARGV[2], name, level, f['o'])
               or not limit_take(st, now, stream .. ' ' .. sid, lease_ms, again)) then
      redis.call('XACK', stream, group, sid)
      redis.call('XDEL', stream, sid)
      hold_message(prefix, ARGV[2], name, level, f['o'], f, total - 1)
      return
    end
    tracked = {tracked, name}
  end
  got = got + 1
  if job then start_job(prefix, f['i'], job, consumer, now) end
  for _, v in ipairs({sid, f['i'], f['b'], f['r'], count, total, level, tracked}) do
    out[#out + 1] = v
  end
end
-- read new entries of a level's stream until `limit` are handed out or none is left
-- (entries that wait for their limits, or are buried or settled, do not count)
local function read_new(stream, level)
  for _ = 1, 100 do
    if got >= limit then return end
    local want = limit - got
    local ok, r = pcall(redis.call, 'XREADGROUP', 'GROUP', group, consumer,
                        'COUNT', want, 'STREAMS', stream, '>')
    if not ok then
      pcall(ensure_queue, KEYS[1], stream, group, ARGV[2])
      return
    end
    if not r then return end
    for _, e in ipairs(r[1][2]) do take(stream, level, e[1], fields_of(e[2]), 1, false) end
    if #r[1][2] < want then return end
  end
end
local cursors = {[0] = ARGV[9]}
for k = 10, #ARGV, 2 do cursors[tonumber(ARGV[k])] = ARGV[k + 1] end
local levels = levels_of(ready)
local out_cursors = {}
for _, level in ipairs(levels) do
  local stream = stream_of(ready, level)
  local cursor = cursors[level] or '0-0'
  if got < limit and ARGV[8] == '1' then
    -- resume the PEL scan where the last pass stopped, so that expired leases behind
    -- many live ones are found too; a few XAUTOCLAIM steps per pass at most
    for _ = 1, 10 do
      local ok, r = pcall(redis.call, 'XAUTOCLAIM', stream, group, consumer, lease_ms, cursor,
                          'COUNT', limit - got)
      if not ok then  -- a level's stream or group lost with Redis' data: made anew
        pcall(ensure_queue, KEYS[1], stream, group, ARGV[2])  -- (not if the key is garbage)
        cursor = '0-0'
        break
      end
      cursor = r[1]
      for _, e in ipairs(r[2]) do
        if e[2] then
          local p = redis.call('XPENDING', stream, group, e[1], e[1], 1)
          take(stream, level, e[1], fields_of(e[2]), p[1][4], true)
        else  -- deleted meanwhile (Redis < 7 still lists it): nothing to deliver
          redis.call('XACK', stream, group, e[1])
        end
      end
      if cursor == '0-0' or got >= limit then break end
    end
  end
  read_new(stream, level)
  out_cursors[#out_cursors + 1] = level
  out_cursors[#out_cursors + 1] = cursor
end
if got < limit then
  -- messages waiting for their limits in this queue: as many as may go now go to
  -- their streams, and are read
  local promoted = false
  for _, name in ipairs(redis.call('SMEMBERS', prefix .. 'q:' .. ARGV[2] .. ':limits')) do
    local st, n = limit_state(prefix, name, now), limit - got
    if st then n = math.min(n, limit_spare(st, now)) end
    for _ = 1, n do
      if not promote_head(prefix, group, ARGV[2], name, seen) then break end
      promoted = true
    end
  end
  if promoted then
    for _, level in ipairs(levels_of(ready)) do read_new(stream_of(ready, level), level) end
  end
end
local wait = -1
if got == 0 then
  local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  if #first > 0 then wait = math.max(0, tonumber(first[2]) - now) end
  -- until a limit holding messages back may let one go
  for _, name in ipairs(redis.call('SMEMBERS', prefix .. 'q:' .. ARGV[2] .. ':limits')) do
    local st = limit_state(prefix, name, now)
    if st and limit_room(st, now) < 1 then
      local w = limit_wait(st, now)
      if wait < 0 or w < wait then wait = w end
    end
  end
end
limit_flush()
return {out, wait, out_cursors}
"""
)

#: KEYS: ready (a stream of any priority). ARGV: group, released, retry count
#: ('-1': keep it), then stream entry ids. Hands entries a read leased (but nobody
#: got: a cancelled blocking read, or more than a consume asked for) to the
#: placeholder consumer, claimable at once; with a retry count, the read's delivery
#: is undone (the count it had before).
HAND_BACK = r"""
local retry = {}
if ARGV[3] ~= '-1' then retry = {'RETRYCOUNT', ARGV[3]} end
for k = 4, #ARGV do
  -- fails only if the stream or group is gone, and the entries with it
  pcall(redis.call, 'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[k], 'IDLE', 1000000000000,
        'JUSTID', unpack(retry))
end
return #ARGV - 3
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

#: KEYS: ready streams (priority 0) of the queues this consumer read. ARGV: group,
#: consumer, released (the placeholder consumer that holds handed-back entries),
#: stale_ms, prefix. In the stream of every priority level of those queues: hands every
#: entry this consumer still holds to the placeholder with an idle time far past any
#: lease (claimable at once, delivery count kept; one of a defined limit waits for it
#: again in its place, and its slot is given back),
#: deletes this consumer, and deletes consumers of crashed brokers (nothing pending,
#: idle longer than stale_ms). Returns how many entries were handed back.
RELEASE = (
    PRELUDE
    + r"""
local group, me, released, stale = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local prefix, now, seen = ARGV[5], now_ms(), {}
local n = 0
for _, base in ipairs(KEYS) do
  for _, level in ipairs(levels_of(base)) do
    local ready = stream_of(base, level)
    if redis.call('EXISTS', ready) == 1 then
      local ok, p = pcall(redis.call, 'XPENDING', ready, group, '-', '+', 10000, me)
      if ok then
        for _, e in ipairs(p) do
          n = n + 1
          local f = entry_fields(ready, e[1])
          local name = f and f['l'] or ''
          if name ~= '' and limit_state(prefix, name, now) then
            -- of a limit: it waits for it again, in its place, and its slot is free
            local queue = string.sub(queue_base(ready), #prefix + 3, -2)
            redis.call('XACK', ready, group, e[1])
            redis.call('XDEL', ready, e[1])
            hold_message(prefix, queue, name, level, f['o'], f, base_count(f) + e[4])
            limit_freed(prefix, group, name, ready .. ' ' .. e[1], now, seen)
          else
            redis.call('XCLAIM', ready, group, released, 0, e[1], 'IDLE', 1000000000000,
                       'JUSTID')
          end
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
end
return n
"""
)

#: KEYS: queues, ready, delayed, dead, done, born, levels. ARGV: queue, prefix.
#: Deletes the streams (and born keys) of every priority level too, and the messages
#: waiting for limits.
DELETE_QUEUE = (
    PRELUDE
    + r"""
local prefix = ARGV[2]
local limits = prefix .. 'q:' .. ARGV[1] .. ':limits'
for _, name in ipairs(redis.call('SMEMBERS', limits)) do
  redis.call('DEL', waiting_key(prefix, ARGV[1], name))
  redis.call('SREM', prefix .. 'lim:' .. name .. ':queues', ARGV[1])
end
redis.call('DEL', limits)
for _, level in ipairs(levels_of(KEYS[2])) do
  if level ~= 0 then
    redis.call('DEL', stream_of(KEYS[2], level), born_key(stream_of(KEYS[2], level)))
  end
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
redis.call('SREM', KEYS[1], ARGV[1])
return 1
"""
)
