"""The Redis broker, ``redis://host:port/db``: the distributed engine, on Redis Streams.

Each queue is a stream with one consumer group; a delivery is a stream entry in the
group's pending-entries list (PEL), so a lease is a PEL entry owned by this broker's
consumer with a given delivery count, and its idle time is the lease clock. Every
step that checks a lease and changes state is one Lua script, so "the lease is still
mine" and "acknowledge, delete, post the reply" happen atomically. Delayed messages
wait in a sorted set until a consume moves them into the stream. Replies go to a
list per channel; broadcast uses Redis pub/sub, which reaches every live subscriber
and keeps nothing behind (an abort signal is only useful to those listening now).

URL: ``redis[s]://[user:password@]host[:port][/db]?options`` - ``prefix``,
``reconnect``, ``poll``, ``tls_ca``, ``tls_verify`` besides the common ``lease``,
``max_deliveries`` and ``result_ttl`` (see :mod:`.options`).

Cancellation: every wait is cancellable and loses nothing. A cancelled blocking read
is woken with ``CLIENT UNBLOCK`` and whatever it took in that instant is handed back
at once (messages made claimable, replies kept in an inbox the next receive drains).
Closing the broker hands the leases it still holds back at once, so a worker's
shutdown does not leave its messages waiting out their leases.

Errors: every failure leaves as a :class:`~wireframe.jobs.broker.BrokerError`
carrying Redis' (or the TLS layer's) own message, never as a coredis, anyio, ssl or
socket type - :class:`~wireframe.jobs.broker.BrokerUnavailable` when waiting can
help (Redis unreachable, restarting, loading, busy, or out of memory under
``maxmemory``), a plain BrokerError when it cannot (refused credentials, a
certificate that does not verify, a server that does not speak TLS). Redis losing
its data (a restart without persistence, deleted keys) turns the leases it held into
:class:`~wireframe.jobs.broker.LockLost` saying so, and the next consume or publish
creates the queue's stream and group again. Malformed data (written by something
else) never blocks a queue or a receiver: an entry goes to the dead-letter stream
with the reason, a reply becomes a dead reply saying so, or is logged and skipped.

*Priorities* keep the streams' leases: each priority level in use is a stream of its
own with the same consumer group, and a consume reads the levels highest first (see
:mod:`.queues`); a queue that only sees priority 0 has its one stream, as before.

*Limits* (rate and concurrency, :mod:`.limits`) are kept by the scripts that hand
messages out: a limit is a hash with its token bucket, its slots a sorted set of
the deliveries holding one (by lease end), and a message the limit holds back
waits in a sorted set of its queue and limit, in its place, until an end of a
lease or a token lets it into its stream again; a batch without limited messages
costs nothing more.

*Orchestrations* (:mod:`.durable`): the broker is also a durable orchestration
store. An instance is a row hash, a history list and an inbox sorted set; an
activity's reply to the instance's inbox channel makes it ready in the same
script that completes (or dead-letters) the job, a turn is taken and committed
in one script each, fenced on its lease, and a take waits in ``BLPOP`` on a wake
token until the next due time.

*Jobs submitted by themselves* (the job store) are messages whose stream entries
carry a marker, each with a record hash that the scripts moving the message update
in the same step; submits from concurrent tasks go in one script call. The
finishing script pushes the final record to the submitting broker's inbox, which
one of its waiters reads for all (:mod:`.job_replies`); a waiter elsewhere blocks
in a ``BLMOVE`` rotation of a token the finishing script pushes for it, so every
wait wakes on the finish without polling (:mod:`.jobs`).

Keys, all under the ``prefix`` (``P``; ``Q`` a queue, ``N`` a priority other than
0, ``C`` a channel, ``ID`` a job, ``I`` an orchestration instance); what each
holds is told with the scripts that write it (:mod:`.scripts`):

=========================  ==============================================
``P queues``               SET of queue names
``P q:Q:ready``            STREAM of messages of priority 0; its group's
                           PEL: their leases
``P q:Q:ready:pN``         STREAM of messages of priority N (same group)
``P q:Q:levels``           ZSET of the priorities N in use (score N)
``P q:Q:delayed``          ZSET of delayed messages, by due time
``P q:Q:dead``             STREAM of dead letters
``P q:Q:done``             counter of completed messages
``P q:Q:born``             when the stream and group were last created
                           (``P q:Q:born:pN`` for priority N's)
``P q:Q:wait:L``           ZSET of messages waiting for limit L, in place
``P q:Q:limits``           SET of the limits with messages waiting in Q
``P lim:L``                HASH, limit L and its token bucket
``P lim:L:slots``          ZSET of the deliveries holding a slot of L
``P lim:L:queues``         SET of the queues with messages waiting for L
``P limseq``               counter of places among waiting messages
``P pub:TOKEN``            one publish call landed (a repeat adds nothing)
``P job:ID``               HASH, the record of a job submitted by itself
``P key:KEY``              STRING, the id of the live job holding a dedup key
``P jobdone:ID``           LIST, the token a finished job's waiters elsewhere see
``P jr:CONSUMER``          LIST, the finished records of the jobs a broker submitted
``P c:C``                  LIST of replies to channel C
``P c:C:inbox:CONSUMER:N`` one wait's inbox of replies
``P channels``             ZSET of run channel records (live until)
``P workers``              HASH of worker records
``P b:TOPIC``              pub/sub channel of a broadcast topic (no key)
``P oi:I``                 HASH, orchestration instance I's row and lease
``P oh:I``                 LIST, its history
``P ob:I``                 ZSET, its inbox, by when each event is visible
``P ow:I``                 SET of the lists its change-waiters block on
``P owl:CONSUMER:N``       one change-wait's LIST
``P o:ready``              ZSET of instances by when each may next have work
``P o:wake``               LIST, the token that wakes a waiting take
``P o:seq``                counter of inbox events
``P o:all``, ``P o:s:S``   ZSETs of instances (all, of status S) by update
=========================  ==============================================

Design, one module per idea:

* :mod:`.broker` - :class:`RedisBroker`, which joins the parts below.
* :mod:`.connection` - three coredis clients (ordinary, blocking reads,
  subscriptions), calls that retry while Redis cannot be reached, and blocking
  reads that can be cancelled; :mod:`.errors` says what a failure means and
  :mod:`.coredis_compat` holds every use of coredis internals (four coredis bugs,
  told upstream-ready).
* The parts of each role: :mod:`.queues` (declare, publish, consume across priority
  levels, leases handed back), :mod:`.limits` (rate and concurrency limits),
  :mod:`.leases` (complete, abandon, extend,
  dead-letter; completions group-committed by :mod:`.group_commit`), :mod:`.jobs`
  (the job store: submit, records, waiting, abort) with :mod:`.job_replies` (the
  shared reply path of the jobs a broker submitted), :mod:`.channels` (replies and
  run channel records), :mod:`.workers`, :mod:`.broadcast`, :mod:`.admin`;
  :mod:`.durable` (the orchestration store, a mixin of the broker).
* :mod:`.scripts` - the Lua scripts, by the same roles; :mod:`.keys` - the names of
  keys; :mod:`.options` - the URL; :mod:`.values` - reading what Redis answers.

``open_broker`` finds this package by its scheme (``wireframe.jobs.brokers.redis``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from wireframe.jobs.broker import BrokerURLError, parse_broker_url
from wireframe.jobs.brokers.redis.broker import RedisBroker
from wireframe.jobs.brokers.redis.options import OPTIONS

__all__ = ["OPTIONS", "RedisBroker", "open"]


@asynccontextmanager
async def _open(broker: RedisBroker) -> AsyncIterator[RedisBroker]:
    await broker._start()
    try:
        yield broker
    finally:
        await broker.aclose()


def open(url: str, *, create: bool = True) -> AbstractAsyncContextManager[RedisBroker]:
    """Open a Redis broker for ``url``; use as ``async with open(url) as broker``.

    The URL is checked at once (:class:`BrokerURLError`); opening does not connect:
    the first call does (``ping`` to check). ``create`` is accepted for
    :func:`~wireframe.jobs.broker.open_broker` and ignored: opening writes nothing.
    """
    parsed = parse_broker_url(url, OPTIONS)
    if parsed.scheme not in ("redis", "rediss"):
        raise BrokerURLError(f"broker URL {parsed}: the redis broker takes redis:// or rediss://")
    return _open(RedisBroker(parsed))
