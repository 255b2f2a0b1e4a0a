"""The Lua scripts of the orchestration store: create, take, commit, release, extend, send, read, purge.

Keys (``P`` is the broker's key prefix, ``I`` an instance id; times are ms of
Redis ``TIME``):

* ``P oi:I`` - HASH, the instance's row: ``n`` name and ``s`` status (text),
  ``in out cs err par ver`` its input, output, custom status, error, parent id
  and version as msgpack (absent: None), ``ca ua`` created and updated at,
  ``g`` generation, ``r`` revision; ``lt`` the token of the turn that holds its
  lease and ``le`` when the lease ends (0: none; a release with a delay sets it
  without a token: held back until then); ``ct`` how the last turn ended,
  ``c:TOKEN`` (committed) or ``r:TOKEN`` (released): a repeat of that call
  after a lost answer is answered ``ok``, any other call of that turn ``lost``;
  ``mk`` the token of the call that created it (its repeat is answered created).
* ``P oh:I`` - LIST, the history: encoded events (:mod:`wireframe.durable.codec`),
  oldest first.
* ``P ob:I`` - ZSET, the inbox: events not applied yet, scored by when each is
  visible (``-inf``: at once, ahead of the rest), each member a sequence number
  (16 digits, from ``P o:seq``: first in, first out among equal scores), a flag
  (``k``: kept by a continue-as-new - raised events, suspend, resume, terminate;
  ``.``: not) and the encoded event.
* ``P c:wireframe.durable.inbox:I`` - the reply list of the instance's inbox
  channel (:mod:`.channels`): its activities' replies, posted by their jobs'
  completions (:mod:`.orchestrating`); a turn reads them all, its commit trims
  exactly those it read.
* ``P o:ready`` - ZSET of instance ids, each scored by when it may next have
  work: its soonest inbox event, now for a reply, the end of its lease while
  leased. A take reads only the members due now, and places each one it
  cannot take by what it holds (or drops it), so finished instances are never
  read.
* ``P o:wake`` - LIST of at most one token: something became due sooner than a
  waiting take expected; a take that finds nothing ``BLPOP``-s it (until the
  next due score at the latest).
* ``P o:all`` and ``P o:s:STATUS`` - ZSETs of instance ids (all, and of each
  status) by updated at, for listing.
* ``P ow:I`` - SET of the lists that waits for a change of the instance block
  on (``P owl:CONSUMER:N``): every change pushes a token to each (expiring in a
  minute) and empties the set.

Every script takes the prefix first and names the keys itself (this broker
targets standalone Redis), like ``COMPLETE``.
"""

from __future__ import annotations

from wireframe.jobs.brokers.redis.scripts import PRELUDE
from wireframe.jobs.brokers.redis.scripts.orchestrating import SEQ_WIDTH

__all__ = ["COMMIT", "CREATE", "EXTEND", "LIST", "PURGE", "RELEASE", "SEND", "TAKE", "WAIT"]

#: How long (ms) a wait's list lives once a change pushed its token.
_WAITER_TTL_MS = 60_000

_HELPERS = r"""
local function channel_of(prefix, iid) return prefix .. 'c:' .. DURABLE_INBOX .. iid end

-- the row `iid` of status `s` updated at `ua` in the listing indexes (`old`: its status before)
local function index_row(prefix, iid, old, s, ua)
  if old and old ~= s then redis.call('ZREM', prefix .. 'o:s:' .. old, iid) end
  redis.call('ZADD', prefix .. 'o:s:' .. s, ua, iid)
  redis.call('ZADD', prefix .. 'o:all', ua, iid)
end

-- wake every wait for a change of `iid`
local function changed(prefix, iid)
  local set = prefix .. 'ow:' .. iid
  local ok, waiters = pcall(redis.call, 'SMEMBERS', set)
  if ok then
    for _, w in ipairs(waiters) do
      if pcall(redis.call, 'LPUSH', w, '1') then redis.call('PEXPIRE', w, WAITER_TTL) end
    end
  end
  if not ok or #waiters > 0 then redis.call('DEL', set) end  -- (none: no set to delete)
end

-- place `iid` (not leased) in the ready set by what it holds: its soonest inbox
-- event, now when replies wait; out of it when nothing does
local function place(prefix, iid, now)
  local first = redis.call('ZRANGE', prefix .. 'ob:' .. iid, 0, 0, 'WITHSCORES')
  local score = first[2]
  if (not score or tonumber(score) > now)
      and redis.call('LLEN', channel_of(prefix, iid)) > 0 then
    score = now
  end
  if score then
    durable_due(prefix, iid, score, false)
  else
    redis.call('ZREM', prefix .. 'o:ready', iid)
  end
end

-- instance `iid` finished: its inbox and waiting replies dropped, out of the ready set
local function forget_inbox(prefix, iid)
  redis.call('DEL', prefix .. 'ob:' .. iid, channel_of(prefix, iid))
  redis.call('ZREM', prefix .. 'o:ready', iid)
end

-- delete instance `iid` (of status `s`) with everything it holds
local function drop(prefix, iid, s)
  redis.call('DEL', prefix .. 'oi:' .. iid, prefix .. 'oh:' .. iid, prefix .. 'ob:' .. iid,
             channel_of(prefix, iid))
  redis.call('ZREM', prefix .. 'o:ready', iid)
  redis.call('ZREM', prefix .. 'o:all', iid)
  redis.call('ZREM', prefix .. 'o:s:' .. s, iid)
end

-- a new row for `iid` from `pairs`, a flat list of field, value pairs (its status 's'
-- among them)
local function new_row(prefix, iid, pairs, now, revision)
  local fields, s = {}, 'pending'
  for j = 1, #pairs - 1, 2 do
    fields[#fields + 1] = pairs[j]
    fields[#fields + 1] = pairs[j + 1]
    if pairs[j] == 's' then s = pairs[j + 1] end
  end
  for _, v in ipairs({'ca', now, 'ua', now, 'r', revision, 'le', 0}) do fields[#fields + 1] = v end
  redis.call('HSET', prefix .. 'oi:' .. iid, unpack(fields))
  index_row(prefix, iid, nil, s, now)
end

-- the score of a time given as ms from now ('-inf': ahead of everything)
local function score_of(delay, now)
  if delay == '-inf' then return '-inf' end
  return now + tonumber(delay)
end

-- the row fields lt, le, ct, s, g, r of `iid` when the turn `token` holds its lease; else
-- nil and the outcome to answer: 'lost', or 'ok' when the row's last end of a turn
-- is `ended` ('c:' or 'r:' and the token: this turn committed, or released): this
-- call is a repeat of that one after its answer was lost
local function leased(prefix, iid, token, now, ended)
  local ok, r = pcall(redis.call, 'HMGET', prefix .. 'oi:' .. iid, 'lt', 'le', 'ct', 's', 'g', 'r')
  if not (ok and r[4]) then return nil, 'lost' end
  if r[1] == token and (tonumber(r[2]) or 0) > now then return r, nil end
  if ended and r[3] == ended then return nil, 'ok' end
  return nil, 'lost'
end
""".replace("WAITER_TTL", str(_WAITER_TTL_MS))

_PRELUDE = PRELUDE + _HELPERS

#: ARGV: prefix, id, replace ('1' or '0'), first event's visibility (ms from now, or
#: '-inf'), first event (flagged), this call's token, then the row's field, value
#: pairs (count first). Returns {1} (created, or found created by this call's token:
#: a repeat after a lost answer), {0, status} (exists, not replaced), {-1, type}
#: (the row key holds something else). A finished instance is replaced when asked: dropped
#: with everything it held, the new one's revision and generation going on from its
#: (one past each: an activity of the old run still running replies to a generation
#: that is gone), its waits woken.
CREATE = (
    _PRELUDE
    + r"""
local prefix, iid = ARGV[1], ARGV[2]
local row = prefix .. 'oi:' .. iid
local now = now_ms()
local ok, old = pcall(redis.call, 'HMGET', row, 's', 'r', 'g', 'mk')
if not ok then return {-1, redis.call('TYPE', row)['ok']} end
local revision = 0
if old[1] then
  if old[4] == ARGV[6] then return {1} end
  if not (ARGV[3] == '1' and FINISHED[old[1]]) then return {0, old[1]} end
  drop(prefix, iid, old[1])
  revision = (tonumber(old[2]) or 0) + 1
end
local pairs = {}
for j = 8, 7 + 2 * tonumber(ARGV[7]) do pairs[#pairs + 1] = ARGV[j] end
new_row(prefix, iid, pairs, now, revision)
redis.call('HSET', row, 'mk', ARGV[6])
if old[1] then redis.call('HSET', row, 'g', (tonumber(old[3]) or 0) + 1) end
local score = score_of(ARGV[4], now)
inbox_add(prefix, iid, score, ARGV[5])
durable_due(prefix, iid, score, true)
if old[1] then changed(prefix, iid) end
return {1}
"""
)

#: ARGV: prefix, limit, lease_ms, token base. Leases up to ``limit`` instances due
#: now that are not leased and hold visible inbox events or replies; each gets the
#: token ``base:N``. Returns {items, wait_ms}: per item {id, token, row (flat field,
#: value pairs), history, visible inbox members, replies (newest first)}; wait_ms
#: (when nothing was taken) until the soonest instance may be due, -1 if none is.
#: Taking nothing consumes the wake token (the caller waits knowing the soonest);
#: leaving due instances behind (the limit reached) leaves one for another taker.
TAKE = (
    _PRELUDE
    + r"""
local prefix, limit, lease_ms, base = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local ready = prefix .. 'o:ready'
local kind = redis.call('TYPE', ready)
kind = type(kind) == 'table' and kind['ok'] or kind
if kind ~= 'zset' and kind ~= 'none' then
  redis.call('DEL', ready)  -- someone else's key: replaced, so work goes on
end
local now = now_ms()
local items = {}
for _ = 1, 10 do
  if #items >= limit then break end
  local due = redis.call('ZRANGEBYSCORE', ready, '-inf', now, 'LIMIT', 0, limit - #items)
  if #due == 0 then break end
  for _, iid in ipairs(due) do
    local row = prefix .. 'oi:' .. iid
    local ok, r = pcall(redis.call, 'HMGET', row, 's', 'le')
    if not (ok and r[1]) then
      redis.call('ZREM', ready, iid)  -- purged (or not a row of ours)
    elseif FINISHED[r[1]] then
      forget_inbox(prefix, iid)  -- finished: nothing more happens to it
    elseif (tonumber(r[2] or '0') or 0) > now then
      redis.call('ZADD', ready, tonumber(r[2]), iid)  -- leased: looked at when that ends
    else
      local events = redis.call('ZRANGEBYSCORE', prefix .. 'ob:' .. iid, '-inf', now)
      local replies = redis.call('LRANGE', channel_of(prefix, iid), 0, -1)
      if #events == 0 and #replies == 0 then
        place(prefix, iid, now)
      else
        local token = base .. ':' .. (#items + 1)
        redis.call('HSET', row, 'lt', token, 'le', now + lease_ms)
        redis.call('ZADD', ready, now + lease_ms, iid)
        items[#items + 1] = {iid, token, redis.call('HGETALL', row),
                             redis.call('LRANGE', prefix .. 'oh:' .. iid, 0, -1), events, replies}
      end
    end
  end
end
local wait = -1
if #items == 0 then
  redis.call('DEL', prefix .. 'o:wake')
  local first = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
  if #first > 0 then wait = math.max(1, tonumber(first[2]) - now) end
elseif #redis.call('ZRANGEBYSCORE', ready, '-inf', now, 'LIMIT', 0, 1) > 0 then
  durable_wake(prefix)
end
return {items, wait}
"""
)

#: ARGV: prefix, queue group, then the turns as one msgpack array (one argument,
#: however many turns: an argument costs the client more than its bytes), each
#: turn an array: id, token, restart ('1' or '0'), status, output, custom status,
#: error (msgpack; '' for None), the inbox members taken, the count of replies
#: taken, the events appended, activities (each: queue, id, body, reply_to,
#: priority, limit), timers (each: visibility in ms from now, event), sends (each:
#: instance id, event), children (each: id, its row's field, value pairs, first
#: event, the parent's event saying the id is taken), carryover events.
#: Returns one outcome per turn, in order: 'ok', or 'lost' (nothing of that turn
#: written) when the turn's lease ran out or was taken over. The turns are
#: independent: one that lost its lease leaves the others to commit (a group commit
#: of the turns that ended together, one round trip for all).
#:
#: Writes each turn: the taken inbox members and replies removed; on a restart the
#: history replaced and the inbox left with the flagged events only (the replies
#: of the old generation dropped), the generation bumped; the events appended;
#: the activities published as ``PUBLISH_LIMITS`` would (their streams created if
#: missing, a blocked consumer woken by the entry); timers and carryover (ahead of
#: everything) into the inbox; sends into the inboxes of unfinished instances;
#: children created unless they exist (then the parent's inbox gets that they never
#: started); the row updated, its revision bumped, its lease cleared, its waits
#: woken; and the instance placed by what it now holds.
COMMIT = (
    _PRELUDE
    + r"""
local prefix, group = ARGV[1], ARGV[2]
local now = now_ms()
local queues, declared, seen = prefix .. 'queues', {}, {}  -- once per script run

-- commit turn `t` (see above); its outcome
local function commit_turn(t)
  local iid, token, status = t[1], t[2], t[4]
  local r, outcome = leased(prefix, iid, token, now, 'c:' .. token)
  if not r then return outcome end
  local row, history, inbox = prefix .. 'oi:' .. iid, prefix .. 'oh:' .. iid, prefix .. 'ob:' .. iid
  local channel = channel_of(prefix, iid)
  for _, m in ipairs(t[8]) do redis.call('ZREM', inbox, m) end
  local replies = tonumber(t[9])
  if replies > 0 then redis.call('LTRIM', channel, 0, -(replies + 1)) end
  local generation = tonumber(r[5]) or 0
  if t[3] == '1' then
    redis.call('DEL', history, channel)
    for _, m in ipairs(redis.call('ZRANGE', inbox, 0, -1)) do
      if string.sub(m, FLAG_AT, FLAG_AT) ~= 'k' then redis.call('ZREM', inbox, m) end
    end
    generation = generation + 1
  end
  local appended = t[10]
  for s = 1, #appended, 1000 do
    redis.call('RPUSH', history, unpack(appended, s, math.min(s + 999, #appended)))
  end
  local added = {}
  for _, a in ipairs(t[11]) do
    local queue, level, name = a[1], tonumber(a[5]), a[6]
    local ready = prefix .. 'q:' .. queue .. ':ready'
    if not declared[queue] then
      ensure_queue(queues, ready, group, queue)
      declared[queue] = true
    end
    if name ~= '' then
      limit_enqueue(prefix, group, queue, name, level, {i = a[2], b = a[3], r = a[4]}, 0, now,
                    seen, added)
    else
      local stream = level_stream(queues, ready, group, queue, level, seen)
      redis.call('XADD', stream, '*', 'i', a[2], 'b', a[3], 'r', a[4])
    end
  end
  for _, name in ipairs(added) do limit_added(prefix, group, name, now, seen) end
  for _, timer in ipairs(t[12]) do inbox_add(prefix, iid, score_of(timer[1], now), timer[2]) end
  for _, send in ipairs(t[13]) do
    local other = send[1]
    local ok, s = pcall(redis.call, 'HGET', prefix .. 'oi:' .. other, 's')
    if ok and s and not FINISHED[s] then
      inbox_add(prefix, other, now, send[2])
      if other ~= iid then durable_ready(prefix, other, now, now) end
    end
  end
  for _, c in ipairs(t[14]) do
    local child = c[1]
    if redis.call('EXISTS', prefix .. 'oi:' .. child) == 0 then
      new_row(prefix, child, c[2], now, 0)
      inbox_add(prefix, child, now, c[3])
      durable_due(prefix, child, now, true)
    else  -- taken by another instance: the child fails in its parent
      inbox_add(prefix, iid, now, c[4])
    end
  end
  for _, event in ipairs(t[15]) do inbox_add(prefix, iid, '-inf', event) end
  local set = {'s', status, 'ua', now, 'g', generation, 'le', 0, 'ct', 'c:' .. token,
               'r', (tonumber(r[6]) or 0) + 1}
  local unset = {'lt'}
  for j, field in ipairs({'out', 'cs', 'err'}) do
    if t[4 + j] ~= '' then
      set[#set + 1] = field
      set[#set + 1] = t[4 + j]
    else
      unset[#unset + 1] = field
    end
  end
  redis.call('HSET', row, unpack(set))
  redis.call('HDEL', row, unpack(unset))
  index_row(prefix, iid, r[4], status, now)
  changed(prefix, iid)
  if FINISHED[status] then  -- its last turn: what it left (timers, events) never runs
    forget_inbox(prefix, iid)
  else
    place(prefix, iid, now)
  end
  return 'ok'
end

local outcomes = {}
for _, t in ipairs(cmsgpack.unpack(ARGV[3])) do outcomes[#outcomes + 1] = commit_turn(t) end
return outcomes
""".replace("FLAG_AT", str(SEQ_WIDTH + 1))
)

#: ARGV: prefix, id, token, delay_ms. Gives the instance back without a turn: its
#: events are due again now, or after the delay (held back until then). Returns
#: 'ok' or 'lost'.
RELEASE = (
    _PRELUDE
    + r"""
local prefix, iid, token = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms()
local r, outcome = leased(prefix, iid, token, now, 'r:' .. token)
if not r then return outcome end
local row, delay = prefix .. 'oi:' .. iid, tonumber(ARGV[4])
redis.call('HDEL', row, 'lt')
if delay > 0 then
  redis.call('HSET', row, 'le', now + delay, 'ct', 'r:' .. token)
  durable_due(prefix, iid, now + delay, false)
else
  redis.call('HSET', row, 'le', 0, 'ct', 'r:' .. token)
  place(prefix, iid, now)
end
return 'ok'
"""
)

#: ARGV: prefix, id, token, lease_ms. Renews the turn's lease; 'ok' or 'lost'.
EXTEND = (
    _PRELUDE
    + r"""
local prefix, iid = ARGV[1], ARGV[2]
local now = now_ms()
local r, outcome = leased(prefix, iid, ARGV[3], now, nil)
if not r then return outcome end
local until_ms = now + tonumber(ARGV[4])
redis.call('HSET', prefix .. 'oi:' .. iid, 'le', until_ms)
redis.call('ZADD', prefix .. 'o:ready', until_ms, iid)
return 'ok'
"""
)

#: ARGV: prefix, id, event (flagged), this call's token key, its ttl (s), then the
#: token keys of earlier calls that were answered (deleted). Puts the event in the
#: instance's inbox, visible now; returns 1, or 0 when there is no such instance. A
#: call whose token exists already landed: its repeat (after a lost answer) adds
#: nothing and returns 1.
SEND = (
    _PRELUDE
    + r"""
local prefix, iid = ARGV[1], ARGV[2]
for k = 6, #ARGV do redis.call('DEL', ARGV[k]) end
if redis.call('EXISTS', ARGV[4]) == 1 then return 1 end
local ok, s = pcall(redis.call, 'HGET', prefix .. 'oi:' .. iid, 's')
if not (ok and s) then return 0 end
if FINISHED[s] then return 1 end  -- a finished instance takes no more turns
redis.call('SET', ARGV[4], '1', 'EX', ARGV[5])
local now = now_ms()
inbox_add(prefix, iid, now, ARGV[3])
durable_ready(prefix, iid, now, now)
return 1
"""
)

#: ARGV: prefix, id, revision, waiter list. Returns {1, row} when the instance's
#: revision is past the one given, {0} when there is no such instance; else
#: registers the waiter list (the next change pushes a token to it) and returns {2}.
WAIT = r"""
local prefix, iid = ARGV[1], ARGV[2]
local ok, flat = pcall(redis.call, 'HGETALL', prefix .. 'oi:' .. iid)
if not ok or #flat == 0 then return {0} end
for j = 1, #flat, 2 do
  if flat[j] == 'r' and (tonumber(flat[j + 1]) or 0) > tonumber(ARGV[3]) then
    return {1, flat}
  end
end
redis.call('SADD', prefix .. 'ow:' .. iid, ARGV[4])
return {2}
"""

#: ARGV: prefix, status ('' for all), limit. Returns {id, row} of the ``limit`` most
#: recently updated instances (of that status) - and of every other updated in the
#: same millisecond as the last of them, so the caller can break ties by id.
LIST = r"""
local prefix, limit = ARGV[1], tonumber(ARGV[3])
local index = prefix .. 'o:all'
if ARGV[2] ~= '' then index = prefix .. 'o:s:' .. ARGV[2] end
local top = redis.call('ZREVRANGEBYSCORE', index, '+inf', '-inf', 'WITHSCORES', 'LIMIT', 0, limit)
local ids, have = {}, {}
for j = 1, #top, 2 do
  ids[#ids + 1] = top[j]
  have[top[j]] = true
end
if #ids >= limit and #top > 0 then
  local edge = top[#top]
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', index, edge, edge)) do
    if not have[m] then ids[#ids + 1] = m end
  end
end
local out = {}
for _, iid in ipairs(ids) do
  local ok, flat = pcall(redis.call, 'HGETALL', prefix .. 'oi:' .. iid)
  if ok and #flat > 0 then out[#out + 1] = {iid, flat} end
end
return out
"""

#: ARGV: prefix, id. Deletes a finished instance with everything it holds (its
#: waits woken); returns 1, or 0 when there is none or it has not finished.
PURGE = (
    _PRELUDE
    + r"""
local prefix, iid = ARGV[1], ARGV[2]
local ok, s = pcall(redis.call, 'HGET', prefix .. 'oi:' .. iid, 's')
if not (ok and s and FINISHED[s]) then return 0 end
drop(prefix, iid, s)
changed(prefix, iid)
return 1
"""
)
