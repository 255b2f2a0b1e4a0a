"""The Lua scripts that end or renew a lease: complete, abandon, extend, dead-letter.

A delivery is an entry of a queue's ``ready`` stream in its consumer group's PEL
(see :mod:`.queues`), leased to one consumer: the entry's idle time is the lease
clock. Lease token of a delivery: ``"<stream entry id>|<PEL delivery count>|<consumer>"``.
A lease is current while the PEL entry exists, belongs to that consumer, has that
delivery count and has been idle for less than the lease. Each script here checks
that first (``check_lease`` in the prelude) and, where it does not hold, changes
nothing and answers why, which the broker raises as ``LockLost``. A lease check on
a stream or group that no longer exists answers why, like any other lost lease;
consume and publish create them again. ``COMPLETE`` posts no reply to a dead run
channel (see :mod:`.channels`). A tracked job's record (:mod:`.jobs`) moves in the
same script as its message: done, queued or scheduled again, dead. So does the slot
of a message's limit (:mod:`.limiting`): every end of a lease gives it back and
promotes the first message waiting for the limit, which wakes a blocked reader.

The ready key of a delivery is the stream of its message's priority (the lease
token names it, see :mod:`wireframe.jobs.brokers.redis.leases`).
"""

from __future__ import annotations

from wireframe.jobs.brokers.redis.scripts import PRELUDE

__all__ = [
    "ABANDON",
    "COMPLETE",
    "COMPLETE_MORE",
    "DEAD_LETTER",
    "EXTEND",
]

_COMPLETE = r"""
local group, lease_ms, channels = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local prefix = string.sub(channels, 1, -9)  -- channels is prefix .. 'channels'
local plain, first = PLAIN
local now = now_ms()
-- the items: ready, done, sid, count, consumer, reply key, payload, channel, then (the
-- others) job id, has result, result, limit, deliveries, started
local items = {}
local k = first
while k <= #ARGV do
  local more = #items >= plain
  items[#items + 1] = {k = k, more = more}
  if more then k = k + 14 else k = k + 8 end
end
-- The lease check of the whole batch: the PEL entries of each stream and consumer
-- between the lowest and highest entry completed, in one XPENDING.
local function sid_less(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, bm = tonumber(am), tonumber(bm)
  return am < bm or (am == bm and tonumber(as) < tonumber(bs))
end
local spans = {}
for _, it in ipairs(items) do
  local ready, sid, consumer = ARGV[it.k], ARGV[it.k + 2], ARGV[it.k + 4]
  local span = spans[ready .. ' ' .. consumer]
  if not span then
    spans[ready .. ' ' .. consumer] = {ready = ready, consumer = consumer, lo = sid, hi = sid, n = 1}
  else
    if sid_less(sid, span.lo) then span.lo = sid end
    if sid_less(span.hi, sid) then span.hi = sid end
    span.n = span.n + 1
  end
end
local pel = {}
for name, span in pairs(spans) do
  local ok, p = pcall(redis.call, 'XPENDING', span.ready, group, span.lo, span.hi,
                      math.max(span.n, 100000), span.consumer)
  local found = {}
  if ok then for _, e in ipairs(p) do found[e[1]] = e end end
  pel[name] = found
end
local out, seen, acks, done, replies, taken = {}, {}, {}, {}, {}, {}
for _, it in ipairs(items) do
  local k = it.k
  local ready, sid, count, consumer = ARGV[k], ARGV[k + 2], tonumber(ARGV[k + 3]), ARGV[k + 4]
  local why = nil
  local e = pel[ready .. ' ' .. consumer][sid]
  if taken[ready .. ' ' .. sid] then
    why = 'the message is no longer leased'  -- completed twice in one batch
  elseif not (e and e[4] == count and e[3] < lease_ms) then
    why = select(2, check_lease(ready, group, sid, consumer, count, lease_ms))  -- says why
  end
  if why then
    out[#out + 1] = why
  else
    taken[ready .. ' ' .. sid] = true
    local sids = acks[ready]
    if not sids then sids = {}; acks[ready] = sids end
    sids[#sids + 1] = sid
    out[#out + 1] = 'ok'
  end
end
-- acknowledged and deleted first: under maxmemory, Redis lets a script that has
-- written (freed) go on writing, the replies and records below
for ready, sids in pairs(acks) do
  redis.call('XACK', ready, group, unpack(sids))
  redis.call('XDEL', ready, unpack(sids))
end
for n, it in ipairs(items) do
  local k = it.k
  if out[n] == 'ok' then
    local ready, sid, consumer = ARGV[k], ARGV[k + 2], ARGV[k + 4]
    done[ARGV[k + 1]] = (done[ARGV[k + 1]] or 0) + 1
    if ARGV[k + 5] ~= '' then
      local score = redis.call('ZSCORE', channels, ARGV[k + 7])
      if not (score and tonumber(score) <= now) then
        post_reply(prefix, ARGV[k + 5], ARGV[k + 7], ARGV[k + 6], now)
      end
    end
    if it.more and ARGV[k + 8] ~= '' then
      local result = nil
      if ARGV[k + 9] == '1' then result = ARGV[k + 10] end
      local more = {'a', ARGV[k + 12], 'w', consumer}
      if ARGV[k + 13] ~= '' then more[5] = 'st'; more[6] = ARGV[k + 13] end
      finish_job(prefix, ARGV[k + 8], 'done', result, nil, now, more, replies)
    end
    if it.more and ARGV[k + 11] ~= '' then
      limit_freed(prefix, group, ARGV[k + 11], ready .. ' ' .. sid, now, seen)
    end
  end
end
for key, n in pairs(done) do redis.call('INCRBY', key, n) end
flush_replies(replies)
return out
"""

#: Completes many deliveries at once (group commit). No KEYS (the keys vary per
#: item; this broker targets standalone Redis). ARGV: group, lease_ms, channels
#: key, then per delivery: ready key (the stream of its priority), done key, sid,
#: count, consumer, reply key ('' = no reply), reply payload, channel name. A reply
#: to a dead run channel is not posted. Returns one outcome per delivery: 'ok' or
#: why the lease is lost.
COMPLETE = PRELUDE + _COMPLETE.replace("PLAIN", "math.huge, 4")

#: :data:`COMPLETE` of a batch with tracked jobs or limits. ARGV: group, lease_ms,
#: channels key, how many deliveries are plain (untracked, no limit), then those as
#: for ``COMPLETE``, then the others, each with six more: job id ('' untracked), has
#: result ('1' or '0'), result, limit ('' none), the delivery's deliveries in all, when
#: it started (ms; '' unknown). A tracked job's record is made done
#: with the result (unless it was aborted meanwhile: then the result is dropped), and
#: a limit's slot is given back (the first message waiting for it promoted), in the
#: same step.
COMPLETE_MORE = PRELUDE + _COMPLETE.replace("PLAIN", "tonumber(ARGV[4]), 5")

#: KEYS: ready (the stream of the delivery's priority), delayed. ARGV: group, sid,
#: count, consumer, lease_ms, delay_ms, replace body ('1' or '0'), new body, prefix.
#: (Entries handed out are well formed: consume buries the others.) The message goes
#: back to the stream of its priority, or into the delayed set; a tracked job's
#: record says queued (or scheduled, its message kept in the record); a tracked job
#: aborted meanwhile is settled instead (counted done). A message of a defined limit
#: waits for it again, at the back, and its slot is given back (:mod:`.limiting`).
ABANDON = (
    PRELUDE
    + r"""
local ready, delayed, prefix = KEYS[1], KEYS[2], ARGV[9]
local count, why = check_lease(ready, ARGV[1], ARGV[2], ARGV[4], tonumber(ARGV[3]),
                               tonumber(ARGV[5]))
if why then return why end
local f = entry_fields(ready, ARGV[2])
redis.call('XACK', ready, ARGV[1], ARGV[2])
redis.call('XDEL', ready, ARGV[2])
if f == nil then return 'ok' end
local now = now_ms()
local name = f['l'] or ''
local n = base_count(f) + count
local made = n  -- the job's attempts so far (its record's 'a')
local body = f['b']
if ARGV[7] == '1' then n = 0; body = ARGV[8] end
local job = nil
if f['j'] == '1' then
  job = job_of(prefix, f['i'])
  if job and job[1] == 'aborted' then
    redis.call('INCR', queue_base(ready) .. 'done')
    if name ~= '' then limit_freed(prefix, ARGV[1], name, ready .. ' ' .. ARGV[2], now, {}) end
    return 'ok'
  end
  if job and not LIVE[job[1]] then job = nil end
end
local record = prefix .. 'job:' .. f['i']
local delay = tonumber(ARGV[6])
local level = level_of(ready)
local more = {}
if name ~= '' then more = {'l', name} end
if delay > 0 then
  if job then
    redis.call('ZADD', delayed, now + delay, cmsgpack.pack({f['i']}))
    redis.call('HSET', record, 's', 'scheduled', 'v', now + delay, 'db', body, 'dr', f['r'],
               'dn', n, 'a', made, unpack(more))
  else
    local m = {f['i'], body, f['r'], n}
    if name ~= '' then m[5] = level; m[6] = name
    elseif level ~= 0 then m[5] = level end
    redis.call('ZADD', delayed, now + delay, cmsgpack.pack(m))
  end
elseif name ~= '' then
  -- at the back, in its stream or waiting for its limit
  local queue = string.sub(queue_base(ready), #prefix + 3, -2)
  if job then redis.call('HSET', record, 's', 'queued', 'v', now, 'a', made) end
  limit_freed(prefix, ARGV[1], name, ready .. ' ' .. ARGV[2], now, {})
  local sid = limit_enqueue(prefix, ARGV[1], queue, name, level,
                            {i = f['i'], b = body, r = f['r'], j = job and '1' or nil}, n, now,
                            {}, {})
  if job and sid then redis.call('HSET', record, 'sid', sid) end
  return 'ok'
elseif job then
  local sid = redis.call('XADD', ready, '*', 'i', f['i'], 'b', body, 'r', f['r'], 'n', n,
                         'j', '1', unpack(more))
  redis.call('HSET', record, 's', 'queued', 'v', now, 'sid', sid, 'a', made)
else
  redis.call('XADD', ready, '*', 'i', f['i'], 'b', body, 'r', f['r'], 'n', n, unpack(more))
end
if name ~= '' then limit_freed(prefix, ARGV[1], name, ready .. ' ' .. ARGV[2], now, {}) end
return 'ok'
"""
)

#: KEYS: ready. ARGV: group, sid, count, consumer, lease_ms, and for a message of a
#: limit its slots key (its slot then lasts the new lease).
EXTEND = (
    PRELUDE
    + r"""
local _, why = check_lease(KEYS[1], ARGV[1], ARGV[2], ARGV[4], tonumber(ARGV[3]),
                           tonumber(ARGV[5]))
if why then return why end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[4], 0, ARGV[2], 'JUSTID')
if ARGV[6] then
  pcall(redis.call, 'ZADD', ARGV[6], 'XX', now_ms() + tonumber(ARGV[5]), KEYS[1] .. ' ' .. ARGV[2])
end
return 'ok'
"""
)

#: KEYS: ready, dead. ARGV: group, sid, count, consumer, lease_ms, prefix, reason,
#: refused ('1': this delivery is refused, so it does not count as made). The dead
#: letter keeps the message's limit (field ``l``); its slot is given back.
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
if f['l'] and f['l'] ~= '' then
  limit_freed(ARGV[6], ARGV[1], f['l'], KEYS[1] .. ' ' .. ARGV[2], now_ms(), {})
end
return 'ok'
"""
)
