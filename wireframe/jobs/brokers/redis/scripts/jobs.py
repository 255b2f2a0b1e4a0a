"""The Lua scripts of the job store: submit, read, abort a tracked job; take, purge records.

Keys (``P`` is the broker's key prefix):

* ``P job:ID`` - HASH, the record of a job submitted by itself: ``q`` queue, ``p``
  priority, ``o`` operation, ``k`` dedup key (if any), ``ttl`` how long (ms) it is
  kept once final, ``s`` status (``scheduled queued running done aborted dead``),
  ``e`` enqueued at and ``v`` visible at, ``a`` attempts, ``st`` started at, ``w``
  worker (the consumer of the last delivery), ``f`` finished at, ``x`` expires at,
  ``res`` result, ``err`` error; ``sid`` the stream entry of its message while it
  is in a stream; ``db dr dn`` its message's body, reply_to and delivery count
  while it is scheduled or waits for its limit; ``l`` its limit (if any), ``wo``
  its place among the messages waiting for it (:mod:`.limiting`). Times are ms of
  Redis ``TIME``. Once final the key expires after ``ttl``.
* ``P jobs`` - ZSET of every tracked job's id scored by its submit time (ms), so
  that ``find_jobs`` pages them newest first; an id whose record expired is
  dropped when a search meets it.
* ``P key:KEY`` - STRING, the id of the live job holding the dedup key ``KEY``;
  deleted by the script that finishes that job.
* ``P jobdone:ID`` - LIST holding one token once the job is final (expiring with
  the record): a waiter ``BLMOVE``-s it from the list onto the same list, so
  every waiter sees it, now or later, and none takes it away.

A tracked job's message is an ordinary message of its queue (see :mod:`.queues`)
whose stream entry carries the field ``j`` = ``1``; while it is scheduled, the
queue's delayed set (or its limit's waiting set) holds only ``cmsgpack([id])`` and
the message waits in the record (so that an abort can take it off the set by id). The scripts that move a
message (consume, complete, abandon, dead-letter, requeue) move its record in the
same step; an entry without ``j`` costs them nothing more.

Malformed data never wedges anything: a record key that is not a hash is reported
by ``JOB``, ``SUBMIT`` and ``ABORT`` as its type (the broker raises a BrokerError
naming it), and a tracked message without a usable record runs untracked.
"""

from __future__ import annotations

from wireframe.jobs.brokers.redis.scripts import PRELUDE

__all__ = [
    "ABORT",
    "FIND_JOBS",
    "JOB",
    "PURGE_JOBS",
    "SUBMIT",
    "TRACK_TAKEN",
]

#: KEYS: queues, ready (priority 0), delayed, job. ARGV: group, queue, id, body,
#: reply_to, priority, delay_ms, ttl_ms, operation, prefix, has key ('1' or '0'),
#: key, and the message's limit (none if missing or ''; a job of a defined limit
#: waits for it, see :mod:`.limiting`). Returns {1, record, now, id} for a new job, {0, record, now, id} for a known
#: id or a key held by a live job (nothing published; id is that job's), {-1, type}
#: when the record key holds something else. A record is flat field, value pairs.
SUBMIT = (
    PRELUDE
    + r"""
local job, prefix, id = KEYS[4], ARGV[10], ARGV[3]
local kind = redis.call('TYPE', job)['ok']
if kind == 'hash' then return {0, redis.call('HGETALL', job), now_ms(), id} end
if kind ~= 'none' then return {-1, kind} end
local dedup = nil
if ARGV[11] == '1' then
  dedup = prefix .. 'key:' .. ARGV[12]
  local ok, held = pcall(redis.call, 'GET', dedup)
  if ok and held then
    local other = prefix .. 'job:' .. held
    local live, s = pcall(redis.call, 'HGET', other, 's')
    if live and LIVE[s] then return {0, redis.call('HGETALL', other), now_ms(), held} end
  end
end
local level, delay, name = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[13] or ''
local fields = {'q', ARGV[2], 'p', level, 'o', ARGV[9], 'a', 0, 'ttl', ARGV[8]}
if dedup then
  redis.call('SET', dedup, id)
  fields[#fields + 1] = 'k'; fields[#fields + 1] = ARGV[12]
end
if name ~= '' then fields[#fields + 1] = 'l'; fields[#fields + 1] = name end
-- a stream whose group is gone gets it back from the next consume
if redis.call('EXISTS', KEYS[2]) == 0 then ensure_queue(KEYS[1], KEYS[2], ARGV[1], ARGV[2]) end
local now
local more
if delay > 0 then
  now = now_ms()
  redis.call('ZADD', KEYS[3], now + delay, cmsgpack.pack({id}))
  more = {'s', 'scheduled', 'e', now, 'v', now + delay, 'db', ARGV[4], 'dr', ARGV[5], 'dn', 0}
elseif name ~= '' then
  -- to its stream, or it waits for its limit
  now = now_ms()
  for _, v in ipairs({'s', 'queued', 'e', now, 'v', now}) do fields[#fields + 1] = v end
  redis.call('HSET', job, unpack(fields))
  local sid = limit_enqueue(prefix, ARGV[1], ARGV[2], name, level,
                            {i = id, b = ARGV[4], r = ARGV[5], j = '1'}, 0, now, {}, {})
  if sid then redis.call('HSET', job, 'sid', sid) end
  redis.call('ZADD', prefix .. 'jobs', now, id)
  return {1, fields, now, id}
else
  local stream = level_stream(KEYS[1], KEYS[2], ARGV[1], ARGV[2], level, {})
  local sid = redis.call('XADD', stream, '*', 'i', id, 'b', ARGV[4], 'r', ARGV[5], 'j', '1')
  now = tonumber(string.match(sid, '^(%d+)-'))
  more = {'s', 'queued', 'e', now, 'v', now, 'sid', sid}
end
for _, v in ipairs(more) do fields[#fields + 1] = v end
redis.call('HSET', job, unpack(fields))
redis.call('ZADD', prefix .. 'jobs', now, id)
return {1, fields, now, id}
"""
)

#: KEYS: job, and (to repair it) its jobdone list. Returns {1, record, now}, {0} when
#: there is no record, {-1, type} when the key holds something else; now is 0
#: unless the job is scheduled (the only status it changes). A jobdone key that is
#: not a list (someone else's) is deleted, so that a wait on it can block.
JOB = (
    PRELUDE
    + r"""
if KEYS[2] then
  local t = redis.call('TYPE', KEYS[2])['ok']
  if t ~= 'none' and t ~= 'list' then redis.call('DEL', KEYS[2]) end
end
local ok, flat = pcall(redis.call, 'HGETALL', KEYS[1])
if not ok then return {-1, redis.call('TYPE', KEYS[1])['ok']} end
if #flat == 0 then return {0} end
local now = 0
for k = 1, #flat, 2 do
  if flat[k] == 's' and flat[k + 1] == 'scheduled' then now = now_ms() end
end
return {1, flat, now}
"""
)

#: KEYS: job. ARGV: prefix, group, id. Aborts a live job: a scheduled one's
#: reference leaves the delayed set, one waiting for its limit the limit's waiting
#: set, a queued one's entry its stream (unless it is
#: leased: a lease that ran out, or an entry handed back - consume settles those),
#: each counted done; a running one only has its record aborted (its late
#: completion leaves it so). Returns {1, record, now} after it (a finished job's
#: unchanged), {0} when unknown, {-1, type} when the key holds something else.
ABORT = (
    PRELUDE
    + r"""
local job, prefix, id = KEYS[1], ARGV[1], ARGV[3]
local kind = redis.call('TYPE', job)['ok']
if kind == 'none' then return {0} end
if kind ~= 'hash' then return {-1, kind} end
local r = redis.call('HMGET', job, 's', 'q', 'p', 'sid', 'wo', 'l')
local now = now_ms()
if LIVE[r[1]] and r[2] then
  local base = prefix .. 'q:' .. r[2] .. ':'
  local level = tonumber(r[3]) or 0
  if level ~= math.floor(level) then level = 0 end
  if r[1] == 'scheduled' then
    if redis.call('ZREM', base .. 'delayed', cmsgpack.pack({id})) == 1 then
      redis.call('INCR', base .. 'done')
    end
    redis.call('HDEL', job, 'db', 'dr', 'dn')
  elseif r[1] == 'queued' and r[5] and r[6] then
    -- waiting for its limit
    local waiting = waiting_key(prefix, r[2], r[6])
    if redis.call('ZREM', waiting, r[5] .. cmsgpack.pack({id})) == 1 then
      redis.call('INCR', base .. 'done')
      unhold(prefix, r[2], r[6])
    end
    redis.call('HDEL', job, 'wo', 'db', 'dr', 'dn')
  elseif r[1] == 'queued' and r[4] then
    local stream = stream_of(base .. 'ready', level)
    local ok, p = pcall(redis.call, 'XPENDING', stream, ARGV[2], r[4], r[4], 1)
    if (not ok or #p == 0) and redis.call('XDEL', stream, r[4]) == 1 then
      redis.call('INCR', base .. 'done')
    end
  end
end
finish_job(prefix, id, 'aborted', nil, 'aborted by id', now)
return {1, redis.call('HGETALL', job), now}
"""
)

#: No KEYS (they vary per entry). ARGV: group, consumer, prefix, then stream, sid,
#: job id of each tracked entry a blocking XREADGROUP just leased to this consumer.
#: Returns per entry 1 (its record says running), 0 (no usable record: it runs
#: untracked) or -1 (aborted by id: settled, counted done, not to be handed out).
TRACK_TAKEN = (
    PRELUDE
    + r"""
local group, consumer, prefix = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms()
local out = {}
for k = 4, #ARGV, 3 do
  local stream, sid, id = ARGV[k], ARGV[k + 1], ARGV[k + 2]
  local job = job_of(prefix, id)
  if job and job[1] == 'aborted' then
    redis.call('XACK', stream, group, sid)
    redis.call('XDEL', stream, sid)
    redis.call('INCR', queue_base(stream) .. 'done')
    out[#out + 1] = -1
  elseif job and LIVE[job[1]] then
    start_job(prefix, id, job, consumer, now)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""
)

#: KEYS: job record keys (found by a scan). ARGV: prefix. Deletes the finished
#: records among them, with their jobdone lists; returns how many.
PURGE_JOBS = r"""
local head = ARGV[1] .. 'job:'
local n = 0
for _, key in ipairs(KEYS) do
  local ok, s = pcall(redis.call, 'HGET', key, 's')
  if ok and (s == 'done' or s == 'aborted' or s == 'dead') then
    redis.call('DEL', key, ARGV[1] .. 'jobdone:' .. string.sub(key, #head + 1))
    n = n + 1
  end
end
return n
"""

#: KEYS: the jobs index. ARGV: prefix, queue, status, operation, key (each '' for
#: any), limit, offset, scan budget. Returns {now ms, {id, record, id, record...}}:
#: records newest first matching every filter, ``limit`` of them after ``offset``
#: matches. Unfiltered, the page is read straight at ``offset``; filtered, at most
#: ``budget`` records are looked at. Ids whose record is gone (expired, purged)
#: leave the index. A filter ``queued`` also lets ``scheduled`` records through (one
#: whose time has come reads as queued): the caller filters the parsed status.
FIND_JOBS = (
    PRELUDE
    + r"""
local prefix = ARGV[1]
local q, s, o, k = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local limit, offset, budget = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local filtered = q ~= '' or s ~= '' or o ~= '' or k ~= ''
local pos, skip = offset, 0
if filtered then pos, skip = 0, offset end
local out, stale, found, looked = {}, {}, 0, 0
while found < limit and looked < budget do
  local ids = redis.call('ZREVRANGE', KEYS[1], pos, pos + 499)
  if #ids == 0 then break end
  pos = pos + #ids
  for _, id in ipairs(ids) do
    looked = looked + 1
    local ok, flat = pcall(redis.call, 'HGETALL', prefix .. 'job:' .. id)
    if ok and #flat == 0 then
      stale[#stale + 1] = id
    elseif ok then
      local f = {}
      for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
      local match = (q == '' or f['q'] == q) and (o == '' or f['o'] == o)
                    and (k == '' or f['k'] == k)
      if match and s ~= '' then
        match = f['s'] == s or (s == 'queued' and f['s'] == 'scheduled')
      end
      if match then
        if skip > 0 then
          skip = skip - 1
        else
          out[#out + 1] = id
          out[#out + 1] = flat
          found = found + 1
          if found >= limit then break end
        end
      end
    end
    if looked >= budget then break end
  end
end
for i = 1, #stale, 1000 do
  redis.call('ZREM', KEYS[1], unpack(stale, i, math.min(i + 999, #stale)))
end
return {now_ms(), out}
"""
)
