"""The Lua scripts of limits: define one, and check the limited entries a blocking read took.

Keys (``P`` is the broker's key prefix, ``L`` a limit's name, ``Q`` a queue):

* ``P lim:L`` - HASH, the limit: ``r`` rate (jobs per ``p`` ms) and ``c``
  concurrency, each missing when the limit has none, and its token bucket: ``t``
  tokens at ``a`` (ms of Redis ``TIME``). A message naming a limit without this key
  (never defined, or Redis lost it) has no limit.
* ``P lim:L:slots`` - ZSET of the deliveries of the limit that hold a slot,
  ``stream sid``, scored by the end of their lease (ms): a slot whose lease ran out
  is free (the scripts drop it), an extension moves its score, every other end of
  the lease removes it.
* ``P lim:L:queues`` - SET of the queues with messages waiting for the limit.
* ``P q:Q:wait:L`` - ZSET of the messages of ``Q`` waiting for the limit, in their
  place (see :mod:`.limiting`); ``P q:Q:limits`` - SET of the limits with
  messages waiting in ``Q``.
* ``P limseq`` - counter giving a message that starts to wait its place.

A stream entry of a message naming a limit has the field ``l`` (the name), and
``o`` (its place) once it was promoted from the waiting set; the delivery of such a
message is the same as any other (its lease token does not change: the scripts
that end it are told the limit, or read it from the entry).
"""

from __future__ import annotations

from wireframe.jobs.brokers.redis.scripts import PRELUDE

__all__ = ["DEFINE_LIMIT", "LIMIT_TAKEN"]

#: No KEYS. ARGV: prefix, group, name, rate ('' none), per (ms), concurrency ('' none).
#: Replaces the limit; the bucket keeps its tokens (capped at the new rate; a new
#: bucket is full), the slots in use stay. Then promotes as many waiting messages as
#: the limit now lets go.
DEFINE_LIMIT = (
    PRELUDE
    + r"""
local prefix, group, name = ARGV[1], ARGV[2], ARGV[3]
local key = prefix .. 'lim:' .. name
local now = now_ms()
local rate, per, conc = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local ok, old = pcall(redis.call, 'HMGET', key, 'r', 'p', 't', 'a')
if not ok then old = {} end
redis.call('DEL', key)
local fields = {'p', per}
if rate then
  local tokens = rate
  local orate, oper, ot, oa = tonumber(old[1]), tonumber(old[2]), tonumber(old[3]),
                              tonumber(old[4])
  if orate and oper and oper > 0 and ot and oa then
    tokens = math.min(rate, orate, ot + math.max(0, now - oa) * orate / oper)
  end
  for _, v in ipairs({'r', rate, 't', tokens, 'a', now}) do fields[#fields + 1] = v end
end
if conc then fields[#fields + 1] = 'c'; fields[#fields + 1] = conc end
redis.call('HSET', key, unpack(fields))
local st = limit_state(prefix, name, now)
promote(prefix, group, name, st and limit_room(st, now) or math.huge, {})
return 1
"""
)

#: No KEYS. ARGV: group, prefix, queue, lease_ms, then stream, sid of each entry
#: naming a limit that a blocking XREADGROUP just leased to this consumer (CONSUME
#: checks those it reads itself). Each takes a token and a slot of its limit, or
#: waits for it in its place (its delivery undone). Returns per entry 1 (handed out),
#: 0 (it waits, or is gone) or -1 (a tracked job aborted by id: settled, counted done).
LIMIT_TAKEN = (
    PRELUDE
    + r"""
local group, prefix, queue, lease_ms = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local now = now_ms()
local out = {}
for k = 5, #ARGV, 2 do
  local stream, sid = ARGV[k], ARGV[k + 1]
  local f = entry_fields(stream, sid)
  local name = f and f['l'] or ''
  local st = name ~= '' and limit_state(prefix, name, now)
  local job = f and f['j'] == '1' and job_of(prefix, f['i'])
  if not f then
    redis.call('XACK', stream, group, sid)
    out[#out + 1] = 0
  elseif job and job[1] == 'aborted' then
    redis.call('XACK', stream, group, sid)
    redis.call('XDEL', stream, sid)
    redis.call('INCR', queue_base(stream) .. 'done')
    out[#out + 1] = -1
  elseif st then
    local level = level_of(stream)
    if held_ahead(prefix, queue, name, level, f['o'])
        or not limit_take(st, now, stream .. ' ' .. sid, lease_ms, false) then
      redis.call('XACK', stream, group, sid)
      redis.call('XDEL', stream, sid)
      hold_message(prefix, queue, name, level, f['o'], f, base_count(f))
      out[#out + 1] = 0
    else
      out[#out + 1] = 1
    end
  else
    out[#out + 1] = 1
  end
end
limit_flush()
return out
"""
)
