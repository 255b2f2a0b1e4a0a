"""The Lua helpers of limits that the scripts share: buckets, slots, and waiting messages.

They are part of :data:`~wireframe.jobs.brokers.redis.scripts.PRELUDE` (they use its
clock, streams and job records, and its scheduled jobs use them); the keys they work
on and the scripts built on them are in :mod:`.limits`.

A message of a defined limit goes to the stream of its priority (its entry naming
the limit, field ``l``, and its place, ``o``) when the limit has room for it and
none of its messages waits ahead of it in that queue; otherwise it waits in its
queue's *waiting* set of that limit, in its place (priority, then a sequence
number), outside every stream: it uses up no delivery and holds back nothing
behind it. It is *promoted* - added to its stream as a new entry that keeps its
place - when the limit may let it go: by the script that ends a lease of the limit
(one slot freed, one promoted: the entry wakes a blocked reader), by a publish, by
a redefinition, and by a consume pass of its queue that has room left (tokens
accrue, leases run out). Neither reserves anything: whoever reads an entry of a
limit takes a token and a slot (:func:`limit_take`), or makes it wait again in its
place - so a limit is never exceeded, and a message let go too eagerly only waits
again.
"""

from __future__ import annotations

__all__ = ["LIMITING"]

#: The helpers (placed in the prelude after the job records and before scheduled jobs).
LIMITING = r"""
-- per script run: the state of each limit read (false: not defined, no limit)
local LIMITS = {}

-- the state of limit `name` at `now` (slots whose lease ran out given back), or false
local function limit_state(prefix, name, now)
  local st = LIMITS[name]
  if st ~= nil then return st end
  st = false
  local key = prefix .. 'lim:' .. name
  local ok, r = pcall(redis.call, 'HMGET', key, 'r', 'p', 'c', 't', 'a')
  if ok then
    local rate, conc = tonumber(r[1]), tonumber(r[3])
    if rate and not (rate >= 1 and rate < math.huge) then rate = nil end
    if conc and not (conc >= 1 and conc < math.huge) then conc = nil end
    if rate or conc then
      local per = tonumber(r[2]) or 1000
      if not (per > 0 and per < math.huge) then per = 1000 end
      st = {key = key, slots = key .. ':slots', rate = rate, per = per, conc = conc,
            tokens = tonumber(r[4]) or rate or 0, at = tonumber(r[5]) or now, used = 0,
            sent = 0}
      if conc then
        redis.call('ZREMRANGEBYSCORE', st.slots, '-inf', now)
        st.used = redis.call('ZCARD', st.slots)
      end
    end
  end
  LIMITS[name] = st
  return st
end

-- the tokens in the bucket of `st` at `now`
local function limit_level(st, now)
  if not st.rate then return math.huge end
  return math.min(st.rate, st.tokens + math.max(0, now - st.at) * st.rate / st.per)
end

-- how many more deliveries `st` allows now (math.huge: any number)
local function limit_room(st, now)
  local room = limit_level(st, now)
  if room < math.huge then room = math.floor(room) end
  if st.conc then room = math.min(room, st.conc - st.used) end
  return room
end

-- how many more messages of `st` may be sent to their streams in this script run
-- (those sent already are not handed out yet)
local function limit_spare(st, now)
  return limit_room(st, now) - st.sent
end

-- take a token and a slot of `st` for the delivery `member` ('stream sid') if it
-- has room; true if taken. A delivery taken over (`again`: its lease ran out) gives
-- its old slot back first. The bucket is written by limit_flush.
local function limit_take(st, now, member, lease_ms, again)
  if again and st.conc and redis.call('ZREM', st.slots, member) == 1 then
    st.used = st.used - 1
  end
  if limit_room(st, now) < 1 then return false end
  if st.rate then
    st.tokens, st.at, st.taken = limit_level(st, now) - 1, now, true
  end
  if st.conc then
    redis.call('ZADD', st.slots, now + lease_ms, member)
    st.used = st.used + 1
  end
  return true
end

-- write the buckets tokens were taken from in this run
local function limit_flush()
  for _, st in pairs(LIMITS) do
    if st and st.taken then redis.call('HSET', st.key, 't', st.tokens, 'a', st.at) end
  end
end

-- ms until `st` may have room again (at least 1): a token accrues, a lease runs out
local function limit_wait(st, now)
  local wait = 0
  local level = limit_level(st, now)
  if level < 1 then wait = math.ceil((1 - level) * st.per / st.rate) end
  if st.conc and st.used >= st.conc then
    local first = redis.call('ZRANGE', st.slots, 0, 0, 'WITHSCORES')
    if #first > 0 then wait = math.max(wait, tonumber(first[2]) - now) end
  end
  return math.max(1, wait)
end

-- the waiting set of limit `name` in `queue`: score minus the priority, member the
-- place (16 hex digits) followed by cmsgpack([id, body, reply_to, deliveries]), or
-- cmsgpack([id]) for a tracked job (its message waits in its record)
local function waiting_key(prefix, queue, name)
  return prefix .. 'q:' .. queue .. ':wait:' .. name
end

-- a new place, behind every message of every limit (numbers taken 64 at a time)
local PLACES = {next = 1, last = 0}
local function next_place(prefix)
  if PLACES.next > PLACES.last then
    PLACES.last = redis.call('INCRBY', prefix .. 'limseq', 64)
    PLACES.next = PLACES.last - 63
  end
  PLACES.next = PLACES.next + 1
  return string.format('%016x', PLACES.next - 1)
end

-- per script run: the waiting sets, and the limits, found without waiting messages
local NONE_WAITS, NONE_WAIT_FOR = {}, {}

-- add `payload` to the waiting set in `place` (a new place, at the back, if not one)
local function hold(prefix, queue, name, level, place, payload)
  if not (place and #place == 16 and string.match(place, '^%x+$')) then
    place = next_place(prefix)
  end
  NONE_WAITS[waiting_key(prefix, queue, name)] = nil
  NONE_WAIT_FOR[name] = nil
  redis.call('ZADD', waiting_key(prefix, queue, name), -level, place .. payload)
  redis.call('SADD', prefix .. 'q:' .. queue .. ':limits', name)
  redis.call('SADD', prefix .. 'lim:' .. name .. ':queues', queue)
  return place
end

-- make the message of the stream entry fields `f`, delivered `n` times, wait for
-- limit `name` (in `place`, or at the back); a live tracked job's message waits in
-- its record, which says queued
local function hold_message(prefix, queue, name, level, place, f, n)
  if f['j'] == '1' then
    local job = prefix .. 'job:' .. f['i']
    local ok, s = pcall(redis.call, 'HGET', job, 's')
    if ok and LIVE[s] then
      place = hold(prefix, queue, name, level, place, cmsgpack.pack({f['i']}))
      redis.call('HSET', job, 's', 'queued', 'wo', place, 'db', f['b'], 'dr', f['r'] or '',
                 'dn', n, 'l', name)
      redis.call('HDEL', job, 'sid')
      return
    end
  end
  hold(prefix, queue, name, level, place, cmsgpack.pack({f['i'], f['b'], f['r'] or '', n}))
end

-- forget `queue` as holding messages of limit `name` when its waiting set is empty
local function unhold(prefix, queue, name)
  if redis.call('EXISTS', waiting_key(prefix, queue, name)) == 0 then
    redis.call('SREM', prefix .. 'q:' .. queue .. ':limits', name)
    redis.call('SREM', prefix .. 'lim:' .. name .. ':queues', queue)
  end
end

-- true when a message of limit `name` in `queue` waits ahead of one of priority
-- `level` in `place` (that one must wait behind it)
local function held_ahead(prefix, queue, name, level, place)
  local key = waiting_key(prefix, queue, name)
  if NONE_WAITS[key] then return false end
  local top = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if #top == 0 then
    NONE_WAITS[key] = true
    return false
  end
  local score = tonumber(top[2])
  return score < -level or (score == -level and string.sub(top[1], 1, 16) < (place or ''))
end

-- a place for a message of limit `name` (its state `st`) of priority `level` entering
-- `queue`, if it may go straight to its stream: none of the limit waits ahead of it
-- there, and the limit has room for it beside what was sent in this run; else nil
local function limit_direct(prefix, queue, name, st, level, now)
  if limit_spare(st, now) < 1 or held_ahead(prefix, queue, name, level, 'g') then return nil end
  st.sent = st.sent + 1
  return next_place(prefix)
end

-- add a message of limit `name` (fields `f`: i, b, r, and j = '1' for a live tracked
-- job; delivered `n` times) to `queue` at priority `level`: to its stream when the
-- limit is not defined or lets it go straight there (limit_direct), else to the
-- limit's waiting set. Returns the stream entry's id, or nil when it waits (then
-- `added` lists the limit, to promote what may go at the end of the run).
local function limit_enqueue(prefix, group, queue, name, level, f, n, now, seen, added)
  local st = limit_state(prefix, name, now)
  local more = {'l', name}
  if st then
    local place = limit_direct(prefix, queue, name, st, level, now)
    if not place then
      hold_message(prefix, queue, name, level, nil, f, n)
      if not added[name] then added[name] = true; added[#added + 1] = name end
      return nil
    end
    more[3] = 'o'; more[4] = place
  end
  if f['j'] == '1' then more[#more + 1] = 'j'; more[#more + 1] = '1' end
  local stream = level_stream(prefix .. 'queues', prefix .. 'q:' .. queue .. ':ready', group,
                              queue, level, seen)
  return redis.call('XADD', stream, '*', 'i', f['i'], 'b', f['b'], 'r', f['r'] or '', 'n', n,
                    unpack(more))
end

-- move the first message waiting for limit `name` in `queue` to the stream of its
-- priority, as a new entry keeping its place (field 'o'); false if none waits
local function promote_head(prefix, group, queue, name, seen)
  local key = waiting_key(prefix, queue, name)
  local top = redis.call('ZPOPMIN', key)
  if #top == 0 then
    unhold(prefix, queue, name)
    return false
  end
  unhold(prefix, queue, name)
  if LIMITS[name] then LIMITS[name].sent = LIMITS[name].sent + 1 end
  local place, payload = string.sub(top[1], 1, 16), string.sub(top[1], 17)
  local level = -tonumber(top[2])
  local base = prefix .. 'q:' .. queue .. ':'
  local ready = base .. 'ready'
  if redis.call('EXISTS', ready) == 0 then ensure_queue(prefix .. 'queues', ready, group, queue) end
  local stream = level_stream(prefix .. 'queues', ready, group, queue, level, seen)
  local ok, t = pcall(cmsgpack.unpack, payload)
  if ok and type(t) == 'table' and #t == 1 and type(t[1]) == 'string' then
    local job = prefix .. 'job:' .. t[1]
    local rok, r = pcall(redis.call, 'HMGET', job, 's', 'db', 'dr', 'dn')
    if rok and r[1] == 'queued' and r[2] then
      local sid = redis.call('XADD', stream, '*', 'i', t[1], 'b', r[2], 'r', r[3] or '',
                             'n', tonumber(r[4]) or 0, 'l', name, 'o', place, 'j', '1')
      redis.call('HSET', job, 'sid', sid)
      redis.call('HDEL', job, 'wo', 'db', 'dr', 'dn')
    elseif rok and r[1] and not LIVE[r[1]] then
      redis.call('INCR', base .. 'done')  -- finished meanwhile (aborted): nothing runs
    else
      entomb(base .. 'dead', prefix, {i = t[1], l = name}, 0, 'the record of tracked job ' ..
             t[1] .. ' does not hold its waiting message', level)
    end
  elseif ok and type(t) == 'table' and type(t[1]) == 'string' and type(t[2]) == 'string'
      and type(t[3]) == 'string' and type(t[4]) == 'number' then
    redis.call('XADD', stream, '*', 'i', t[1], 'b', t[2], 'r', t[3], 'n', t[4], 'l', name,
               'o', place)
  else
    entomb(base .. 'dead', prefix, {b = payload, l = name}, 0,
           'malformed waiting message: it is not [id, body, reply_to, deliveries]', level)
  end
  return true
end

-- promote up to `n` messages waiting for limit `name`, the first in place of every
-- queue first
local function promote(prefix, group, name, n, seen)
  n = math.min(n, 1000)
  if n < 1 then return end
  local owners = prefix .. 'lim:' .. name .. ':queues'
  local queues = redis.call('SMEMBERS', owners)
  while n >= 1 do
    local best, score, place = nil, nil, nil
    for _, q in ipairs(queues) do
      local top = redis.call('ZRANGE', waiting_key(prefix, q, name), 0, 0, 'WITHSCORES')
      if #top > 0 then
        local s, p = tonumber(top[2]), string.sub(top[1], 1, 16)
        if not best or s < score or (s == score and p < place) then
          best, score, place = q, s, p
        end
      end
    end
    if not best then return end
    promote_head(prefix, group, best, name, seen)
    n = n - 1
  end
end

-- a lease of limit `name` ended (the delivery `member`, 'stream sid'): its slot is
-- free again, and the first message waiting for the limit, if it may go, is promoted
local function limit_freed(prefix, group, name, member, now, seen)
  local st = limit_state(prefix, name, now)
  if st and st.conc and redis.call('ZREM', st.slots, member) == 1 then st.used = st.used - 1 end
  if NONE_WAIT_FOR[name] then return end
  if redis.call('EXISTS', prefix .. 'lim:' .. name .. ':queues') == 0 then
    NONE_WAIT_FOR[name] = true
  else
    promote(prefix, group, name, st and math.min(1, limit_spare(st, now)) or 1, seen)
  end
end

-- messages of limit `name` were added to its waiting sets: promote what may go now
local function limit_added(prefix, group, name, now, seen)
  local st = limit_state(prefix, name, now)
  promote(prefix, group, name, st and limit_spare(st, now) or math.huge, seen)
end
"""
