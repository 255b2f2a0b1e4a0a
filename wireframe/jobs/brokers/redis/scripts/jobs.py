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

from wireframe.jobs.brokers.redis.keys import RELEASED
from wireframe.jobs.brokers.redis.scripts import PRELUDE

__all__ = [
    "ABORT",
    "FIND_JOBS",
    "JOB",
    "PURGE_JOBS",
    "SUBMIT",
]

#: A Lua function: a record that says queued (or running) whose stream entry is leased
#: reads as running, with the lease's consumer as its worker and the entry's deliveries
#: added to its attempts (a first delivery writes nothing to the record). Appends those
#: fields to ``flat``; returns whether the entry is leased.
LEASED_VIEW = r"""
local function leased_view(prefix, group, f, flat)
  if not ((f['s'] == 'queued' or f['s'] == 'running') and f['sid'] and f['q']) then
    return false
  end
  local level = tonumber(f['p'] or '0') or 0
  if level ~= math.floor(level) then level = 0 end
  local stream = stream_of(prefix .. 'q:' .. f['q'] .. ':ready', level)
  local pok, p = pcall(redis.call, 'XPENDING', stream, group, f['sid'], f['sid'], 1)
  if not (pok and #p == 1 and p[1][2] ~= 'RELEASED') then return false end
  local t = now_ms()
  flat[#flat + 1] = 's'; flat[#flat + 1] = 'running'
  flat[#flat + 1] = 'w'; flat[#flat + 1] = p[1][2]
  flat[#flat + 1] = 'a'; flat[#flat + 1] = (tonumber(f['a'] or '0') or 0) + p[1][4]
  if not f['st'] then flat[#flat + 1] = 'st'; flat[#flat + 1] = t - p[1][3] end
  return true
end
""".replace("'RELEASED'", repr(RELEASED))

#: Submits many jobs at once (group commit). No KEYS (they vary per job). ARGV: group,
#: prefix, ttl_ms, the inbox of the submitting broker's replies ('' none), then per
#: job: queue, id, body, reply_to, priority, delay_ms, operation, has key ('1' or '0'),
#: key, limit ('' none; a job of a defined limit waits for it, see :mod:`.limiting`),
#: check ('1': the id may be known, see whether it is first - a fresh id need not be).
#: Returns per job {1, now, visible, status} for a new job, {0, record, now, id} for
#: a known id or a key held by a live job (nothing published; id is that job's),
#: {-1, type} when the record key holds something else. A record is flat field,
#: value pairs.
SUBMIT = (
    PRELUDE
    + r"""
local group, prefix, ttl, inbox = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local queues = prefix .. 'queues'
local checked, seen, out = {}, {}, {}
local clock = nil
local function now()
  if not clock then clock = now_ms() end
  return clock
end
local function submit(queue, id, body, reply_to, level, delay, op, has_key, key, name, check)
  local job = prefix .. 'job:' .. id
  if check == '1' then
    local kind = redis.call('TYPE', job)['ok']
    if kind == 'hash' then return {0, redis.call('HGETALL', job), now(), id} end
    if kind ~= 'none' then return {-1, kind} end
  end
  local dedup = nil
  if has_key == '1' then
    dedup = prefix .. 'key:' .. key
    local ok, held = pcall(redis.call, 'GET', dedup)
    if ok and held then
      local other = prefix .. 'job:' .. held
      local live, s = pcall(redis.call, 'HGET', other, 's')
      if live and LIVE[s] then return {0, redis.call('HGETALL', other), now(), held} end
    end
  end
  local fields = {'q', queue, 'p', level, 'o', op, 'a', 0, 'ttl', ttl}
  if inbox ~= '' then fields[#fields + 1] = 'rt'; fields[#fields + 1] = inbox end
  if dedup then
    redis.call('SET', dedup, id)
    fields[#fields + 1] = 'k'; fields[#fields + 1] = key
  end
  if name ~= '' then fields[#fields + 1] = 'l'; fields[#fields + 1] = name end
  local ready = prefix .. 'q:' .. queue .. ':ready'
  if not checked[ready] then
    -- a stream whose group is gone gets it back (once per queue and call)
    checked[ready] = true
    if redis.call('EXISTS', ready) == 0 then ensure_queue(queues, ready, group, queue) end
  end
  local t
  local more
  if delay > 0 then
    t = now()
    redis.call('ZADD', prefix .. 'q:' .. queue .. ':delayed', t + delay, cmsgpack.pack({id}))
    more = {'s', 'scheduled', 'e', t, 'v', t + delay, 'db', body, 'dr', reply_to, 'dn', 0}
  elseif name ~= '' then
    -- to its stream, or it waits for its limit
    t = now()
    for _, v in ipairs({'s', 'queued', 'e', t, 'v', t}) do fields[#fields + 1] = v end
    redis.call('HSET', job, unpack(fields))
    local sid = limit_enqueue(prefix, group, queue, name, level,
                              {i = id, b = body, r = reply_to, j = '1'}, 0, t, seen, {})
    if sid then redis.call('HSET', job, 'sid', sid) end
    redis.call('ZADD', prefix .. 'jobs', t, id)
    return {1, t, t, 'queued'}
  else
    local stream = level_stream(queues, ready, group, queue, level, seen)
    local sid = redis.call('XADD', stream, '*', 'i', id, 'b', body, 'r', reply_to, 'j', '1')
    t = tonumber(string.match(sid, '^(%d+)-'))
    more = {'s', 'queued', 'e', t, 'v', t, 'sid', sid}
  end
  for _, v in ipairs(more) do fields[#fields + 1] = v end
  redis.call('HSET', job, unpack(fields))
  redis.call('ZADD', prefix .. 'jobs', t, id)
  if delay > 0 then return {1, t, t + delay, 'scheduled'} end
  return {1, t, t, 'queued'}
end
for k = 5, #ARGV, 11 do
  out[#out + 1] = submit(ARGV[k], ARGV[k + 1], ARGV[k + 2], ARGV[k + 3], tonumber(ARGV[k + 4]),
                         tonumber(ARGV[k + 5]), ARGV[k + 6], ARGV[k + 7], ARGV[k + 8],
                         ARGV[k + 9], ARGV[k + 10])
end
limit_flush()
return out
"""
)

#: KEYS: job, and (to repair it) its jobdone list. ARGV: prefix, group, and '1' to
#: register a waiter elsewhere (the record's ``wt``: its finish pushes a token to the
#: jobdone list). Returns {1, record, now}, {0} when there is no record, {-1, type}
#: when the key holds something else; now is 0 unless the job is scheduled. A job
#: whose record says queued or running while its entry is leased reads as running,
#: with the lease's consumer as its worker and the entry's deliveries added to its
#: attempts (a first delivery writes nothing to the record). A jobdone key that is not
#: a list (someone else's) is deleted, so that a wait on it can block.
JOB = (
    PRELUDE
    + LEASED_VIEW
    + r"""
if KEYS[2] then
  local t = redis.call('TYPE', KEYS[2])['ok']
  if t ~= 'none' and t ~= 'list' then redis.call('DEL', KEYS[2]) end
end
local ok, flat = pcall(redis.call, 'HGETALL', KEYS[1])
if not ok then return {-1, redis.call('TYPE', KEYS[1])['ok']} end
if #flat == 0 then return {0} end
local f = fields_of(flat)
local now = 0
if f['s'] == 'scheduled' then now = now_ms() end
if LIVE[f['s']] and ARGV[3] == '1' and not f['wt'] then redis.call('HSET', KEYS[1], 'wt', 1) end
leased_view(ARGV[1], ARGV[2], f, flat)
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
    + LEASED_VIEW
    + r"""
local prefix, group = ARGV[1], ARGV[9]
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
      if match then
        local state = f['s']
        if leased_view(prefix, group, f, flat) then state = 'running' end
        if s ~= '' then match = state == s or (s == 'queued' and state == 'scheduled') end
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
