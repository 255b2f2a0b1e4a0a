"""The Lua helpers of orchestrations that every script shares: an activity's reply lands in its inbox.

They are part of :data:`~wireframe.jobs.brokers.redis.scripts.PRELUDE`, placed
before the job-record helpers, because the scripts that post a job's reply -
``COMPLETE`` and every dead-lettering (``entomb``) - post it with
:func:`post_reply`: a reply to a channel starting with
:data:`~wireframe.jobs.broker.DURABLE_INBOX_PREFIX` is an activity's completion
for an orchestration instance, so in the same step it marks that instance ready
(and wakes a waiting ``take_work``), or is dropped when the instance is gone or
the reply is of another of its runs (a generation continued as new, or replaced).
The scripts of the orchestration store itself, and the keys, are in
:mod:`.durable`.
"""

from __future__ import annotations

from wireframe.jobs.broker import DURABLE_INBOX_PREFIX

__all__ = ["ORCHESTRATING", "SEQ_WIDTH"]

#: Digits of the sequence number an inbox member starts with (then its flag, then the event).
SEQ_WIDTH = 16

#: The helpers (placed in the prelude after the clock and before the job records).
ORCHESTRATING = r"""
local DURABLE_INBOX = 'DURABLE_INBOX_PREFIX'
local FINISHED = {completed = true, failed = true, terminated = true}

-- wake one waiting take_work (at most one token waits in 'P o:wake'; a key there
-- that is not a list, someone else's, is replaced)
local function durable_wake(prefix)
  local wake = prefix .. 'o:wake'
  local ok, n = pcall(redis.call, 'LLEN', wake)
  if not ok then redis.call('DEL', wake) end
  if not ok or n == 0 then redis.call('LPUSH', wake, '1') end
end

-- instance `iid` is next due at `score` (ms of Redis TIME, or '-inf'; `lower`: only
-- if sooner than it is now): its place in the ready set, waking a waiting take when
-- that is now the soonest of all (which may make it sleep less)
local function durable_due(prefix, iid, score, lower)
  local ready = prefix .. 'o:ready'
  local ok, first = pcall(redis.call, 'ZRANGE', ready, 0, 0, 'WITHSCORES')
  if not ok then  -- not a ZSET (someone else's key): replaced, so work goes on
    redis.call('DEL', ready)
    first = {}
  end
  if lower then
    redis.call('ZADD', ready, 'LT', score, iid)
  else
    redis.call('ZADD', ready, score, iid)
  end
  if #first == 0 or tonumber(score) < tonumber(first[2]) then durable_wake(prefix) end
end

-- instance `iid` has something new due at `score`: unless it is leased (or held back
-- by a release) - its commit or release places it again - it is due then, or sooner
local function durable_ready(prefix, iid, score, now)
  local ok, r = pcall(redis.call, 'HGET', prefix .. 'oi:' .. iid, 'le')
  if ok and (tonumber(r or '0') or 0) > now then return end
  durable_due(prefix, iid, score, true)
end

-- the inbox event `event` (already encoded and flagged) for instance `iid`, visible
-- from `score` on
local function inbox_add(prefix, iid, score, event)
  local seq = redis.call('INCR', prefix .. 'o:seq')
  redis.call('ZADD', prefix .. 'ob:' .. iid, score, string.format('%0SEQ_WIDTHd', seq) .. event)
end

-- the message id a packed reply [message id, kind, payload] starts with, or nil
local function reply_id(payload)
  local b = string.byte(payload, 2) or 0
  if b >= 0xa0 and b <= 0xbf then return string.sub(payload, 3, 2 + b - 0xa0) end
  if b == 0xd9 or b == 0xc4 then
    return string.sub(payload, 4, 3 + string.byte(payload, 3))
  end
  if b == 0xda or b == 0xc5 then
    local n = string.byte(payload, 3) * 256 + string.byte(payload, 4)
    return string.sub(payload, 5, 4 + n)
  end
  return nil
end

-- post the packed reply `payload` for `channel` to its reply list `key` (`id`: the
-- message id, read from the payload when nil). A reply to an orchestration's inbox
-- channel is an activity's completion: posted only when it is of the instance's
-- current run (message id 'I|GENERATION|ACTION'; a purged or finished instance's,
-- or a replaced or continued run's, goes nowhere), and the instance is due now.
local function post_reply(prefix, key, channel, payload, now, id)
  if string.sub(channel, 1, #DURABLE_INBOX) == DURABLE_INBOX then
    local iid = string.sub(channel, #DURABLE_INBOX + 1)
    local owner, gen = string.match(id or reply_id(payload) or '', '^(.*)|([^|]*)|%d+$')
    if owner ~= iid then return end
    local ok, r = pcall(redis.call, 'HMGET', prefix .. 'oi:' .. iid, 'g', 'le', 's')
    if not (ok and r[1] and r[1] == gen) or FINISHED[r[3]] then return end
    redis.call('LPUSH', key, payload)
    -- due now, unless leased (or held back): its commit or release places it again
    if (tonumber(r[2] or '0') or 0) <= now then durable_due(prefix, iid, now, true) end
    return
  end
  redis.call('LPUSH', key, payload)
end
""".replace("DURABLE_INBOX_PREFIX", DURABLE_INBOX_PREFIX).replace("SEQ_WIDTH", str(SEQ_WIDTH))
