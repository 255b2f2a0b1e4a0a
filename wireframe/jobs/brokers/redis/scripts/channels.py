"""The Lua scripts of reply channels: taking replies, and the records of live run channels.

Keys (``P`` is the broker's key prefix, ``C`` a channel):

* ``P c:C`` - LIST of replies, ``LPUSH``-ed, popped from the right; each a
  msgpack array ``[message_id, kind, payload]`` with kind 0 = body, 1 = dead
  reason.
* ``P c:C:inbox:CONSUMER:N`` - LIST that one wait of a receiver ``BLMOVE``-s one
  reply into, or one ``RECEIVE`` keeps what it took in, so that a reply taken by
  a wait that was cancelled, or by a call whose answer was lost, is kept, not
  lost; deleted (or drained) by the receiver's next call.
* ``P channels`` - ZSET of run channel names scored by the time (ms of Redis
  ``TIME``) until which each is live. Closing a channel scores it now, so a
  channel is dead when its score has passed, however its run ended; a name
  that is not there is unmanaged (or its record was lost with Redis's data).
  Records dead for longer than the retention are dropped by the next open.

The queue scripts read ``P channels`` to settle the jobs of dead channels at
consume and to drop replies to them at complete.
"""

from __future__ import annotations

from wireframe.jobs.brokers.redis.scripts import PRELUDE

__all__ = [
    "CLOSE_CHANNEL",
    "DELETE_CHANNEL",
    "KEEP_CHANNEL",
    "OPEN_CHANNEL",
    "PURGE_CHANNELS",
    "RECEIVE",
]

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

#: KEYS: channels. ARGV: name, ttl_ms, retention_ms, prefix. Records the channel
#: live for ttl_ms and forgets (with their replies) up to 100 channels dead for
#: longer than the retention.
OPEN_CHANNEL = (
    PRELUDE
    + r"""
local now = now_ms()
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]),
                       'LIMIT', 0, 100)
for _, c in ipairs(old) do redis.call('DEL', ARGV[4] .. 'c:' .. c) end
if #old > 0 then redis.call('ZREM', KEYS[1], unpack(old)) end
return 1
"""
)

#: KEYS: channels. ARGV: name, ttl_ms. Returns 'ok', 'missing' (no record) or
#: 'expired N' (dead for N ms).
KEEP_CHANNEL = (
    PRELUDE
    + r"""
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 'missing' end
local now = now_ms()
if tonumber(score) <= now then return 'expired ' .. (now - tonumber(score)) end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
return 'ok'
"""
)

#: KEYS: channels, then the channel's reply list and inboxes (deleted). ARGV:
#: name. Makes the channel dead from now on (sooner if it already was).
CLOSE_CHANNEL = (
    PRELUDE
    + r"""
for k = 2, #KEYS do redis.call('DEL', KEYS[k]) end
local now = now_ms()
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not score) or tonumber(score) > now then redis.call('ZADD', KEYS[1], now, ARGV[1]) end
return 1
"""
)

#: KEYS: channels, then the channel's reply list and inboxes (deleted). ARGV:
#: name. Forgets the channel's record: it is an unmanaged mailbox again.
DELETE_CHANNEL = r"""
for k = 2, #KEYS do redis.call('DEL', KEYS[k]) end
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""

#: KEYS: channels, then receivers' inbox lists found by a scan. ARGV: prefix,
#: retention_ms, then the channel of each inbox. Deletes the replies of dead
#: channels and the inboxes of dead channels (returns how many replies) and the
#: records of channels dead for longer than the retention.
PURGE_CHANNELS = (
    PRELUDE
    + r"""
local now = now_ms()
local n = 0
for _, c in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  local key = ARGV[1] .. 'c:' .. c
  n = n + redis.call('LLEN', key)
  redis.call('DEL', key)
end
for k = 2, #KEYS do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[k + 1])
  if score and tonumber(score) <= now then
    n = n + redis.call('LLEN', KEYS[k])
    redis.call('DEL', KEYS[k])
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return n
"""
)
