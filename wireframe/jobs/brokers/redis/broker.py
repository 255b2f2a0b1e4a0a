"""The Redis broker, ``redis://host:port/db``: the distributed engine, on Redis Streams.

Each queue is a stream with one consumer group; a delivery is a stream entry in the
group's pending-entries list (PEL), so a lease is a PEL entry owned by this broker's
consumer with a given delivery count, and its idle time is the lease clock.
``consume`` takes over entries idle longer than the lease (``XAUTOCLAIM``) and then
reads new ones (``XREADGROUP``); when nothing is there it blocks in ``XREADGROUP
BLOCK`` on a connection of its own. Every step that checks a lease and changes
state (complete, abandon, extend, dead-letter) is one Lua script, so "the lease is
still mine" and "acknowledge, delete, post the reply" happen atomically. Delayed
messages wait in a sorted set and are moved into the stream by ``consume`` when
due. Replies go to a list per channel; broadcast uses Redis pub/sub, which reaches
every live subscriber and keeps nothing behind (an abort signal is only useful to
those listening now). The key layout is documented in ``scripts.queues`` and ``scripts.channels``.

URL: ``redis[s]://[user:password@]host[:port][/db]?options``. Options besides the
common ``lease`` and ``max_deliveries``:

* ``prefix`` (default ``wireframe:``) - key prefix; apps sharing one Redis use
  different prefixes and never see each other's keys. A prefix not ending in
  ``:`` gets one added (``prefix=app`` gives keys ``app:q:...``).
* ``reconnect`` (seconds, default 10) - how long an operation keeps retrying while
  Redis cannot be reached before raising :class:`BrokerUnavailable`.
* ``poll`` (seconds, default 0.25) - the longest a blocked ``consume`` sleeps
  between housekeeping passes (expired leases are noticed within
  ``min(poll, lease/4)``, delayed messages published while a consumer is
  blocked become visible within ``poll``).
* ``tls_ca`` (path, default: the system's CAs) and ``tls_verify`` (default true;
  ``false`` skips certificate and host name checks) - for ``rediss://`` only.

Cancellation: every wait is cancellable. Blocking reads run on a pool of their own
and a cancelled one is woken with ``CLIENT UNBLOCK`` rather than by dropping its
connection; whatever it took in that instant is handed back at once (messages are
made claimable, replies stay in an inbox the next receive drains), so a cancelled
``consume`` or ``receive_replies`` loses nothing. Closing the broker hands the
leases it still holds back at once, so a worker's shutdown does not leave its
messages waiting out their leases.

Errors: every failure leaves as a :class:`BrokerError` carrying Redis' (or the TLS
layer's) own message, never as a coredis, anyio, ssl or socket type -
:class:`BrokerUnavailable` when waiting can help (Redis unreachable, restarting,
loading, busy, or out of memory under ``maxmemory``), a plain BrokerError when it
cannot (refused credentials, a certificate that does not verify, a server that
does not speak TLS). See ``errors``. Redis losing its data (a restart
without persistence, deleted keys) turns the leases it held into
:class:`LockLost` saying so, and the next consume or publish creates the queue's
stream and group again. Malformed entries (written by something else) go to the
dead-letter stream with the reason (see ``scripts.queues``); a malformed reply
is skipped with a log line, or, when its message id is readable, handed out as a
dead reply saying so - so that no job waits for it forever.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import secrets
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

import attrs
import coredis
import coredis.exceptions
import msgpack
import trio
from coredis.retry import NoRetryPolicy

from wireframe.jobs.broker import (
    DEAD_CHANNEL_RETENTION,
    BrokerError,
    BrokerUnavailable,
    BrokerURL,
    BrokerURLError,
    ChannelLost,
    DeadLetter,
    Delivery,
    LockLost,
    Message,
    QueueStats,
    Reply,
    WorkerInfo,
    count_workers,
    parse_broker_url,
    seconds_option,
)
from wireframe.jobs.brokers.redis import coredis_compat
from wireframe.jobs.brokers.redis.errors import explain, is_failure, leaves
from wireframe.jobs.brokers.redis.scripts import admin, channels, leases, queues, workers

__all__ = ["OPTIONS", "RedisBroker", "open"]

_log = logging.getLogger("wireframe.jobs.brokers.redis")
T = TypeVar("T")
#: What a script argument may be.
Arg = str | bytes | int

#: The consumer group every queue's stream has.
GROUP = "wireframe"
#: The placeholder consumer holding entries a closed broker handed back.
_RELEASED = "wireframe:released"
#: A consumer with nothing pending and idle this long (ms) belonged to a dead broker.
_STALE_CONSUMER_MS = 3_600_000

#: Longest a single non-blocking Redis call may take before Redis counts as gone.
_CALL_TIMEOUT = 10.0
#: Most blocking reads (consume and receive waits) one broker runs at once.
_MAX_BLOCKING = 256
#: Longest a cancelled blocking read may take to be woken and read out.
_UNBLOCK_TIMEOUT = 2.0
#: Longest a reply wait blocks server-side before it is renewed.
_REPLY_BLOCK = 5
#: Most delayed/expired messages a consume moves per pass is bounded in Lua; this
#: bounds how many replies one receive takes server-side per call.
_MAX_BATCH = 10_000
#: Longest aclose spends handing this consumer's leases back.
_RELEASE_TIMEOUT = 2.0
#: Most completions one group-committed script call carries.
_MAX_COMPLETE_BATCH = 500
#: The fields a stream entry must have, and what its delivery count must look like
#: (the same rule as ``malformed`` in the scripts).
_WELL_FORMED = frozenset({b"i", b"b", b"r"})
_COUNT = re.compile(rb"[0-9]+")


def _too_many(made: int, limit: int) -> str:
    """The dead-letter reason for a message delivered too often (the same on every broker)."""
    return f"delivered {made} times without completing (max_deliveries={limit})"


def _prefix(text: str) -> str:
    if not text:
        raise BrokerURLError("option prefix must not be empty (use the default 'wireframe:')")
    return text if text.endswith(":") else text + ":"


def _flag(name: str) -> Callable[[str], bool]:
    def convert(text: str) -> bool:
        value = text.strip().lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off"):
            return False
        raise BrokerURLError(f"option {name}={text!r} must be true or false")

    return convert


#: The redis-specific URL options: name -> (converter, default).
OPTIONS: dict[str, tuple[Callable[[str], object], object]] = {
    "prefix": (_prefix, "wireframe:"),
    "reconnect": (seconds_option("reconnect"), 10.0),
    "poll": (seconds_option("poll"), 0.25),
    "tls_ca": (str, ""),
    "tls_verify": (_flag("tls_verify"), True),
}


def _tls_context(url: BrokerURL) -> ssl.SSLContext | None:
    """The TLS context for ``rediss://`` (None for plain ``redis://``)."""
    if url.scheme != "rediss":
        return None
    ca = str(url.options["tls_ca"]) or None
    try:
        context = ssl.create_default_context(cafile=ca)
    except OSError as exc:
        raise BrokerURLError(f"broker URL {url}: cannot read tls_ca={ca!r}: {exc}") from None
    if not url.options["tls_verify"]:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def _parse_db(url: BrokerURL) -> int:
    path = url.path.strip("/")
    if not path:
        return 0
    try:
        db = int(path)
    except ValueError:
        raise BrokerURLError(
            f"broker URL {url}: the path must be a database number like /0, not {url.path!r}"
        ) from None
    if db < 0:
        raise BrokerURLError(f"broker URL {url}: database number {db} must not be negative")
    return db


class RedisBroker:
    """A :class:`~wireframe.jobs.broker.Broker` on one Redis server (see the module doc).

    Make one with :func:`open`; it is usable inside that ``async with`` block.
    """

    def __init__(self, url: BrokerURL) -> None:
        self.url = url
        self.db = _parse_db(url)
        self.prefix = str(url.options["prefix"])
        self.reconnect = float(url.options["reconnect"])  # type: ignore[arg-type]
        self.poll = float(url.options["poll"])  # type: ignore[arg-type]
        self.lease_ms = max(1, round(url.lease * 1000))
        self.claim_interval = min(self.poll, url.lease / 4)
        #: This broker instance's consumer name in every consumer group.
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        tls = _tls_context(url)
        self._tls = tls is not None

        def client(max_connections: int | None = None) -> coredis.Redis[bytes]:
            return coredis.Redis(
                max_connections=max_connections,
                host=url.host or "127.0.0.1",
                port=url.port or 6379,
                db=self.db,
                username=url.username,
                password=url.password,
                ssl_context=tls,
                decode_responses=False,
                connect_timeout=min(5.0, self.reconnect),
                retry_policy=NoRetryPolicy(),
            )

        # Three pools. coredis multiplexes ordinary commands: a connection goes back to
        # the pool as soon as a command is written, with its reply still to come. A
        # blocking command holds its connection, and coredis drops the connection of
        # a cancelled one - which would fail every multiplexed reply still pending on
        # it. So blocking reads use a pool of their own (see _block), and so do
        # subscriptions, whose connections coredis re-opens on its own.
        self._client = client()
        self._blocking = client(max_connections=_MAX_BLOCKING)
        self._subscriber = client()
        self._stack = AsyncExitStack()
        self._closed = False
        self._last_claim: dict[str, float] = {}
        self._claim_cursor: dict[str, str] = {}
        #: Per queue: until when (trio clock) a consume may skip the housekeeping pass
        #: (nothing delayed or expired is due) and read new entries directly.
        self._quiet_until: dict[str, float] = {}
        self._completions = _GroupCommit(self._complete_many)
        c = self._client
        self._declare = c.register_script(queues.DECLARE)
        self._publish = c.register_script(queues.PUBLISH)
        self._consume = c.register_script(queues.CONSUME)
        self._complete = c.register_script(leases.COMPLETE)
        self._abandon = c.register_script(leases.ABANDON)
        self._extend = c.register_script(leases.EXTEND)
        self._dead = c.register_script(leases.DEAD_LETTER)
        self._stats = c.register_script(admin.STATS)
        self._requeue = c.register_script(admin.REQUEUE_DEAD)
        self._purge = c.register_script(admin.PURGE)
        self._delete = c.register_script(queues.DELETE_QUEUE)
        self._release = c.register_script(queues.RELEASE)
        self._hand_back_script = c.register_script(queues.HAND_BACK)
        self._bury_malformed = c.register_script(queues.BURY_MALFORMED)
        self._receive = c.register_script(channels.RECEIVE)
        self._open_channel = c.register_script(channels.OPEN_CHANNEL)
        self._keep_channel = c.register_script(channels.KEEP_CHANNEL)
        self._close_channel = c.register_script(channels.CLOSE_CHANNEL)
        self._delete_channel = c.register_script(channels.DELETE_CHANNEL)
        self._purge_channels = c.register_script(channels.PURGE_CHANNELS)
        self._heartbeat = c.register_script(workers.HEARTBEAT)
        self._workers = c.register_script(workers.WORKERS)
        #: Bounds blocking reads to the blocking pool's size (see _block).
        self._blocking_slots = trio.Semaphore(_MAX_BLOCKING)
        #: Per channel: inboxes whose reply was handed out (to delete), and inboxes
        #: of waits that ended otherwise (to drain: they may hold a reply).
        self._inbox_drop: dict[str, list[str]] = {}
        self._inbox_drain: dict[str, list[str]] = {}
        self._inbox_seq = 0
        self._published: list[str] = []  # tokens of answered publishes, to delete
        #: Queues this broker consumed from (whose leases it releases on close).
        self._consumed: set[str] = set()

    def __repr__(self) -> str:
        return f"RedisBroker({str(self.url)!r}, consumer={self.consumer!r})"

    async def _start(self) -> None:
        await self._stack.enter_async_context(self._client)
        await self._stack.enter_async_context(self._blocking)
        await self._stack.enter_async_context(self._subscriber)

    # -- keys -----------------------------------------------------------------------
    def _q(self, queue: str, part: str) -> str:
        if not isinstance(queue, str) or not queue:
            raise BrokerError(f"redis broker: queue name {queue!r} must be a non-empty string")
        return f"{self.prefix}q:{queue}:{part}"

    def _queues_key(self) -> str:
        return f"{self.prefix}queues"

    def _channel(self, channel: str) -> str:
        return f"{self.prefix}c:{channel}"

    def _channels_key(self) -> str:
        return f"{self.prefix}channels"

    def _workers_key(self) -> str:
        return f"{self.prefix}workers"

    def _topic(self, topic: str) -> str:
        return f"{self.prefix}b:{topic}"

    # -- calling Redis ----------------------------------------------------------------
    async def _call(self, what: str, fn: Callable[[], Awaitable[T]], *, resend: bool) -> T:
        """Run one Redis call, retrying with backoff while Redis cannot be reached.

        Each attempt is shielded from cancellation (it is one short round trip, bounded
        by ``_CALL_TIMEOUT``) so that a cancelled caller never leaves a half-known
        outcome behind. ``resend`` says whether the call may be repeated after its
        connection broke mid-flight (idempotent, or lease-checked so that a repeat
        raises LockLost); otherwise only attempts that never reached Redis repeat.
        """
        if self._closed:
            raise BrokerError(f"redis broker {self.url} is closed; {what} needs an open broker")
        deadline = trio.current_time() + self.reconnect
        delay = 0.02
        while True:
            try:
                with trio.CancelScope(shield=True), trio.fail_after(_CALL_TIMEOUT):
                    return await fn()
            except trio.TooSlowError as exc:
                raise BrokerUnavailable(
                    f"redis broker {self.url}: {what} got no answer within {_CALL_TIMEOUT} s"
                ) from exc
            except Exception as exc:
                if not is_failure(exc):
                    raise
                failure = explain(exc, tls=self._tls)
                # Repeat what surely did not run (a refused connect, a Redis loading
                # or out of memory), and what may be repeated, while waiting can help.
                retry = failure.transient and (resend or failure.unsent)
                if not retry or trio.current_time() + delay > deadline:
                    raise self._error(what, exc) from exc
            await trio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _error(self, what: str, exc: BaseException) -> BrokerError:
        """The BrokerError (BrokerUnavailable if waiting can help) for a failed call."""
        failure = explain(exc, tls=self._tls)
        kind = BrokerUnavailable if failure.transient else BrokerError
        return kind(f"redis broker {self.url}: {what} failed: {failure.reason}")

    async def _run(
        self, what: str, script: Any, keys: Sequence[str], args: Sequence[Arg], *, resend: bool
    ) -> Any:
        """Run one of the Lua scripts through :meth:`_call`."""
        return await self._call(what, functools.partial(script, keys, args), resend=resend)

    async def _block(
        self,
        what: str,
        command: bytes,
        *args: Arg,
        late: Callable[[Any], Awaitable[None]] | None = None,
    ) -> Any:
        """Run one blocking Redis read on a connection of its own; cancellable.

        coredis would drop the connection of a cancelled blocking command (and leak
        its pool slot: see ``coredis_compat``), so this broker never lets it see the
        cancellation: when the caller is cancelled, ``CLIENT UNBLOCK`` (from the
        ordinary pool) wakes the command, its reply is read (shielded, bounded) and
        given to ``late`` - what a cancelled read took is handed back, not lost - and
        the connection goes back to the pool intact. Returns None when Redis could not
        be reached (after a short pause; the caller's next ``_call`` retries and gives
        up in time).
        """
        if self._closed:
            raise BrokerError(f"redis broker {self.url} is closed")
        async with self._blocking_slots:  # a cancellable wait for a free connection
            try:
                with trio.CancelScope(shield=True), trio.fail_after(_CALL_TIMEOUT):
                    conn = await coredis_compat.lease(self._blocking)
            except Exception as exc:
                if not is_failure(exc):
                    raise
                return await self._blocked_failure(what, exc)
            try:
                request = coredis_compat.send(conn, command, *args)
                try:
                    return await request
                except trio.Cancelled:
                    await self._unblock(conn, request, late)
                    raise
            except (
                coredis.exceptions.ResponseError,
                coredis.exceptions.StreamConsumerGroupError,  # NOGROUP, not a ResponseError
            ) as exc:
                # The stream or its group was deleted under a blocked XREADGROUP (or Redis
                # restarted without its data): the caller's next script call re-creates them.
                if isinstance(
                    exc,
                    coredis.exceptions.UnblockedError | coredis.exceptions.StreamConsumerGroupError,
                ) or "NOGROUP" in str(exc):
                    await trio.sleep(0.01)
                    return None
                return await self._blocked_failure(what, exc)
            except Exception as exc:
                if not is_failure(exc):
                    raise
                return await self._blocked_failure(what, exc)
            finally:
                coredis_compat.give_back(self._blocking, conn)

    async def _blocked_failure(self, what: str, exc: BaseException) -> None:
        """After a failed blocking read: pause and return None if waiting can help.

        The caller's next script call then retries (and gives up in time); under
        ``maxmemory`` (where Redis refuses a BLMOVE but runs the scripts) the
        caller goes on by polling. Anything else raises its BrokerError.
        """
        if not explain(exc, tls=self._tls).transient:
            raise self._error(what, exc) from exc
        await trio.sleep(min(self.poll, 0.25))
        return None

    async def _unblock(
        self, conn: Any, request: Any, late: Callable[[Any], Awaitable[None]] | None
    ) -> None:
        """Wake a blocked command whose caller was cancelled; hand back what it took."""
        with trio.CancelScope(shield=True), trio.move_on_after(_UNBLOCK_TIMEOUT) as scope:
            try:
                result = await coredis_compat.wake(self._client, conn, request)
                if result and late is not None:
                    await late(result)
            except Exception as exc:
                if not is_failure(exc):
                    raise
                coredis_compat.discard(conn, "its blocked command could not be woken cleanly")
        if scope.cancelled_caught:
            coredis_compat.discard(conn, "its blocked command could not be woken in time")

    # -- Broker protocol ------------------------------------------------------------------
    def clock(self) -> float:
        """Wall-clock seconds: leases are measured by Redis, reported on this clock."""
        return time.time()

    async def ping(self) -> None:
        """Return when Redis answers; raise BrokerUnavailable at once if it does not."""
        if self._closed:
            raise BrokerError(f"redis broker {self.url} is closed")
        try:
            with trio.fail_after(min(5.0, self.reconnect)):
                await self._client.ping()
        except Exception as exc:
            if not is_failure(exc):
                raise
            failure = explain(exc, tls=self._tls)
            if not failure.transient:
                raise BrokerError(f"redis broker {self.url}: {failure.reason}") from exc
            raise BrokerUnavailable(
                f"redis broker {self.url} does not answer: {failure.reason}"
            ) from exc

    async def aclose(self) -> None:
        """Close every connection. Idempotent."""
        if self._closed:
            return
        try:
            await self._release_leases()
        finally:
            self._closed = True
            try:
                await self._stack.aclose()
            except Exception as exc:  # closing connections to a Redis that is gone
                if not is_failure(exc):
                    raise
                _log.debug("redis broker %s: closing its connections: %r", self.url, exc)

    async def _release_leases(self) -> None:
        """Make the messages this consumer still holds claimable by others at once.

        Once closed, this broker can complete nothing, so waiting out the leases of
        what it holds (jobs cut short by shutdown, or entries a cancelled blocking read
        leased but never handed out) would only delay them. Best effort, bounded.
        """
        if not self._consumed:
            return
        keys = [self._q(q, "ready") for q in sorted(self._consumed)]
        with trio.CancelScope(shield=True), trio.move_on_after(_RELEASE_TIMEOUT):
            try:
                await self._release(keys, [GROUP, self.consumer, _RELEASED, _STALE_CONSUMER_MS])
            except Exception as exc:
                if not is_failure(exc):
                    raise
                # Redis is gone: the leases run out on their own

    async def declare_queue(self, queue: str) -> None:
        """Create ``queue``'s stream and consumer group if missing."""
        keys = [self._queues_key(), self._q(queue, "ready")]
        await self._run("declare_queue", self._declare, keys, [GROUP, queue], resend=True)

    async def delete_queue(self, queue: str) -> None:
        """Delete every key of ``queue``."""
        parts = ("ready", "delayed", "dead", "done", "born")
        keys = [self._queues_key(), *(self._q(queue, p) for p in parts)]
        await self._run("delete_queue", self._delete, keys, [queue], resend=True)

    async def publish(self, queue: str, messages: Sequence[Message], *, delay: float = 0.0) -> None:
        """Append ``messages`` in one script call (one round trip per batch)."""
        # A token per call makes a repeat after a lost answer harmless (see PUBLISH);
        # the tokens of answered calls are deleted by the next call.
        token = f"{self.prefix}pub:{self.consumer}:{secrets.token_hex(8)}"
        answered, self._published = self._published, []
        keys = [self._queues_key(), self._q(queue, "ready"), self._q(queue, "delayed")]
        keys += [token, *answered]
        delay_ms = max(0, round(delay * 1000)) if delay > 0 else 0
        args: list[Arg] = [GROUP, queue, delay_ms, int(self.reconnect) + 60]
        for m in messages:
            args += [m.id, m.body, m.reply_to]
        try:
            await self._run("publish", self._publish, keys, args, resend=True)
        except BaseException:
            self._published.extend(answered)
            raise
        self._published.append(token)

    async def consume(self, queue: str, limit: int) -> list[Delivery]:
        """Lease up to ``limit`` messages: expired leases first, then new ones; block if none."""
        if limit < 1:
            raise BrokerError(f"redis broker: consume limit must be at least 1, not {limit}")
        keys = [
            self._queues_key(),
            self._q(queue, "ready"),
            self._q(queue, "delayed"),
            self._q(queue, "dead"),
        ]
        ready = keys[1]
        self._consumed.add(queue)
        while True:
            now = trio.current_time()
            claim = now - self._last_claim.get(queue, -1e9) >= self.claim_interval
            quiet = self._quiet_until.get(queue, 0.0)
            if claim or now >= quiet:
                args: list[Arg] = [
                    GROUP,
                    queue,
                    self.consumer,
                    limit,
                    self.lease_ms,
                    self.url.max_deliveries,
                    self.prefix,
                    "1" if claim else "0",
                    self._claim_cursor.get(queue, "0-0"),
                ]
                result: Any = await self._run("consume", self._consume, keys, args, resend=True)
                if claim:
                    self._last_claim[queue] = now
                    self._claim_cursor[queue] = _text(result[2])
                flat, wait_ms = result[0], int(result[1])
                if flat:
                    self._quiet_until.pop(queue, None)
                    return self._deliveries(queue, flat)
                block = min(self.claim_interval, self.poll)
                if wait_ms >= 0:
                    block = min(block, wait_ms / 1000)
                # Until then nothing is due but new entries: the next consumes read
                # them straight away, without another housekeeping pass.
                quiet = self._quiet_until[queue] = now + block
            block_ms = max(1, round((quiet - now) * 1000))
            read: Any = await self._block(
                "consume",
                b"XREADGROUP",
                "GROUP",
                GROUP,
                self.consumer,
                "COUNT",
                limit,
                "BLOCK",
                block_ms,
                "STREAMS",
                ready,
                ">",
                late=functools.partial(self._hand_back, ready),
            )
            if not read:
                self._quiet_until.pop(queue, None)
                continue
            deliveries = await self._accept_read(queue, _stream_entries(read))
            if deliveries:
                return deliveries

    async def _hand_back(self, ready: str, read: Any) -> None:
        """Make entries a cancelled blocking read leased claimable again at once."""
        ids = [_text(entry[0]) for entry in _stream_entries(read)]
        if ids:
            await self._hand_back_script([ready], [GROUP, _RELEASED, *ids])

    def _deliveries(self, queue: str, flat: Sequence[Any]) -> list[Delivery]:
        expires = self.clock() + self.url.lease
        out = []
        for k in range(0, len(flat), 6):
            sid, mid, body, reply_to, count, total = flat[k : k + 6]
            out.append(
                Delivery(
                    message=Message(id=_text(mid), body=_bytes(body), reply_to=_text(reply_to)),
                    queue=queue,
                    deliveries=int(total),
                    lease_token=f"{_text(sid)}|{int(count)}|{self.consumer}",
                    lease_expires=expires,
                )
            )
        return out

    async def _accept_read(self, queue: str, entries: Sequence[Any]) -> list[Delivery]:
        """Turn entries of a blocking XREADGROUP into deliveries, burying those over the
        limit and the malformed ones (with the reason CONSUME would give)."""
        flat: list[Any] = []
        malformed: list[str] = []
        for sid, pairs in entries:
            fields = dict(zip(pairs[::2], pairs[1::2], strict=False))
            n = fields.get(b"n", b"0")
            if not (fields.keys() >= _WELL_FORMED and _COUNT.fullmatch(_bytes(n))):
                malformed.append(_text(sid))
                continue
            flat += [sid, fields[b"i"], fields[b"b"], fields[b"r"], 1, int(n) + 1]
        if malformed:
            keys = [self._q(queue, "ready"), self._q(queue, "dead")]
            args: list[Arg] = [GROUP, _RELEASED, self.prefix, *malformed]
            await self._run("consume", self._bury_malformed, keys, args, resend=True)
        deliveries = self._deliveries(queue, flat)
        keep = []
        for d in deliveries:
            if d.deliveries > self.url.max_deliveries:
                reason = _too_many(d.deliveries - 1, self.url.max_deliveries)
                try:
                    await self._bury(d, reason, refused=True)
                except LockLost:
                    pass
            else:
                keep.append(d)
        return keep

    def _token(self, delivery: Delivery) -> tuple[str, str, str]:
        try:
            sid, count, consumer = delivery.lease_token.split("|", 2)
        except ValueError:
            raise BrokerError(
                f"redis broker: lease token {delivery.lease_token!r} of message "
                f"{delivery.message.id!r} was not made by a redis broker"
            ) from None
        return sid, count, consumer

    def _check(self, delivery: Delivery, outcome: object) -> None:
        word = _text(outcome)
        if word != "ok":
            raise LockLost(delivery.message.id, delivery.queue, word)

    async def complete(self, delivery: Delivery, reply: bytes | None) -> None:
        """Acknowledge, delete and post the reply in one lease-checked script.

        Completions from concurrent tasks are group-committed: while one script call
        is in flight, the completions that arrive queue up and go together in the
        next call, so a busy worker pays one round trip per batch, not per job.
        """
        sid, count, consumer = self._token(delivery)
        channel = delivery.message.reply_to
        if reply is None or not channel:
            reply_key, payload = "", b""
        else:
            reply_key = self._channel(channel)
            payload = msgpack.packb([delivery.message.id, 0, reply], use_bin_type=True)
        item: list[Arg] = [
            self._q(delivery.queue, "ready"),
            self._q(delivery.queue, "done"),
            sid,
            count,
            consumer,
            reply_key,
            payload,
            channel,
        ]
        self._check(delivery, await self._completions.submit(item))

    async def _complete_many(self, items: list[list[Arg]]) -> list[object]:
        args: list[Arg] = [GROUP, self.lease_ms, self._channels_key()]
        for item in items:
            args += item
        outcomes = await self._run("complete", self._complete, [], args, resend=True)
        return list(outcomes)

    async def abandon(
        self, delivery: Delivery, *, delay: float = 0.0, body: bytes | None = None
    ) -> None:
        """Give the message back (as a new entry, or into the delayed set), lease-checked."""
        sid, count, consumer = self._token(delivery)
        keys = [self._q(delivery.queue, "ready"), self._q(delivery.queue, "delayed")]
        delay_ms = max(0, round(delay * 1000)) if delay > 0 else 0
        args: list[Arg] = [GROUP, sid, count, consumer, self.lease_ms, delay_ms]
        args += ["0", b""] if body is None else ["1", body]
        outcome = await self._run("abandon", self._abandon, keys, args, resend=True)
        self._check(delivery, outcome)

    async def extend(self, delivery: Delivery) -> Delivery:
        """Reset the PEL entry's idle time (XCLAIM to ourselves), lease-checked."""
        sid, count, consumer = self._token(delivery)
        keys = [self._q(delivery.queue, "ready")]
        args: list[Arg] = [GROUP, sid, count, consumer, self.lease_ms]
        outcome = await self._run("extend", self._extend, keys, args, resend=True)
        self._check(delivery, outcome)
        return Delivery(
            message=delivery.message,
            queue=delivery.queue,
            deliveries=delivery.deliveries,
            lease_token=delivery.lease_token,
            lease_expires=self.clock() + self.url.lease,
        )

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move the delivery to the dead-letter stream and post a dead reply, lease-checked."""
        await self._bury(delivery, reason, refused=False)

    async def _bury(self, delivery: Delivery, reason: str, *, refused: bool) -> None:
        sid, count, consumer = self._token(delivery)
        keys = [self._q(delivery.queue, "ready"), self._q(delivery.queue, "dead")]
        args: list[Arg] = [GROUP, sid, count, consumer, self.lease_ms, self.prefix, reason]
        args.append("1" if refused else "0")
        outcome = await self._run("dead_letter", self._dead, keys, args, resend=True)
        self._check(delivery, outcome)

    async def receive_replies(self, channel: str, limit: int) -> list[Reply]:
        """Take up to ``limit`` replies; a cancelled call never loses one.

        When replies are waiting, one script call takes them. Otherwise the wait is a
        cancellable ``BLMOVE`` of one reply from the channel into an inbox list of
        this wait's own, handed out at once (the next call deletes the inbox). A wait
        cancelled just as Redis moved a reply leaves it in its inbox, which the next
        call on the channel drains: no reply is lost, none is handed out twice, and
        concurrent receivers each wait on their own inbox.
        """
        if limit < 1:
            raise BrokerError(f"redis broker: receive limit must be at least 1, not {limit}")
        key = self._channel(channel)
        while True:
            drop = self._inbox_drop.pop(channel, [])
            drain = self._inbox_drain.pop(channel, [])
            args: list[Arg] = [len(drop), min(limit, _MAX_BATCH)]
            # What the script takes it also keeps in a landing inbox (deleted by the
            # next call): a repeat after a lost answer drains it, so it may resend.
            self._inbox_seq += 1
            landing = f"{key}:inbox:{self.consumer}:{self._inbox_seq}"
            try:
                taken = await self._run(
                    "receive_replies",
                    self._receive,
                    [key, *drop, *drain, landing],
                    args,
                    resend=True,
                )
            except BaseException:
                # not run, or outcome unknown: deleting or draining again is harmless
                self._inbox_drop.setdefault(channel, []).extend(drop)
                self._inbox_drain.setdefault(channel, []).extend([*drain, landing])
                raise
            if taken:
                self._inbox_drop.setdefault(channel, []).append(landing)
                replies = _replies(channel, taken)
                if replies:
                    return replies
                continue
            self._inbox_seq += 1
            inbox = f"{key}:inbox:{self.consumer}:{self._inbox_seq}"
            moved = None
            try:
                moved = await self._block(
                    "receive_replies", b"BLMOVE", key, inbox, "RIGHT", "LEFT", _REPLY_BLOCK
                )
            finally:
                # a reply handed out leaves an inbox to delete; any other ending may
                # have left one in it (cancelled as Redis answered): drain it later
                done = self._inbox_drop if moved is not None else self._inbox_drain
                done.setdefault(channel, []).append(inbox)
            if moved is not None and (replies := _replies(channel, [moved])):
                return replies

    def _channel_keys(self, channel: str) -> list[str]:
        """The channel's record set, its reply list and this broker's inboxes of it."""
        keys = [self._channels_key(), self._channel(channel)]
        return keys + self._inbox_drop.pop(channel, []) + self._inbox_drain.pop(channel, [])

    async def delete_channel(self, channel: str) -> None:
        """Delete the channel's list, its record (and this broker's inboxes of it)."""
        keys = self._channel_keys(channel)
        await self._run("delete_channel", self._delete_channel, keys, [channel], resend=True)

    async def open_channel(self, channel: str, ttl: float) -> None:
        """Record ``channel`` as live for ``ttl`` seconds."""
        args: list[Arg] = [channel, _ms(ttl), _ms(DEAD_CHANNEL_RETENTION), self.prefix]
        keys = [self._channels_key()]
        await self._run("open_channel", self._open_channel, keys, args, resend=True)

    async def keep_channel(self, channel: str, ttl: float) -> None:
        """Keep ``channel`` live for ``ttl`` more seconds; :class:`ChannelLost` if it is not."""
        keys = [self._channels_key()]
        outcome = _text(
            await self._run(
                "keep_channel", self._keep_channel, keys, [channel, _ms(ttl)], resend=True
            )
        )
        if outcome == "missing":
            raise ChannelLost(
                channel,
                f"Redis at {self.url} has no record of it: it lost its data (restarted "
                "without persistence, or the keys were deleted)",
            )
        if outcome != "ok":
            ago = int(outcome.split()[-1]) / 1000
            raise ChannelLost(channel, f"it was closed or expired {ago:.3f} s ago")

    async def close_channel(self, channel: str) -> None:
        """Drop ``channel``'s replies and make it dead from now on."""
        keys = self._channel_keys(channel)
        await self._run("close_channel", self._close_channel, keys, [channel], resend=True)

    async def heartbeat(self, worker: WorkerInfo, ttl: float) -> None:
        """Record ``worker`` as live for ``ttl`` seconds (``0``: remove it)."""
        info = msgpack.packb(
            [
                worker.queue,
                worker.concurrency,
                worker.host,
                worker.pid,
                worker.started_at,
                worker.running,
            ],
            use_bin_type=True,
        )
        args: list[Arg] = [worker.id, _ms(ttl) if ttl > 0 else 0, info]
        keys = [self._workers_key()]
        await self._run("heartbeat", self._heartbeat, keys, args, resend=True)

    async def workers(self, queue: str | None = None) -> list[WorkerInfo]:
        """The live workers (of ``queue``, or all), sorted by queue and id."""
        raw: Any = await self._run("workers", self._workers, [self._workers_key()], [], resend=True)
        pairs = zip(raw[::2], raw[1::2], strict=True)
        out = [w for w in (_worker(_text(i), entry) for i, entry in pairs) if w is not None]
        if queue is not None:
            out = [w for w in out if w.queue == queue]
        return sorted(out, key=lambda w: (w.queue, w.id))

    async def broadcast(self, topic: str, body: bytes) -> None:
        """PUBLISH to the topic's pub/sub channel."""
        key = self._topic(topic)
        await self._call("broadcast", lambda: self._client.publish(key, body), resend=False)

    def subscribe(self, topic: str) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Subscribe on a dedicated pub/sub connection; live once entered."""
        return self._subscribe(topic)

    @asynccontextmanager
    async def _subscribe(self, topic: str) -> AsyncIterator[AsyncIterator[bytes]]:
        """The subscription; errors leave bare (the block's own) or as BrokerErrors.

        coredis' subscriber re-connects and re-subscribes on its own after Redis
        went away (what was broadcast meanwhile is missed: pub/sub keeps nothing);
        it gives up only on errors waiting cannot mend, which end the block with
        their BrokerError.
        """
        if self._closed:
            raise BrokerError(f"redis broker {self.url} is closed")
        key = self._topic(topic)
        # coredis' subscriber retries a refused connection forever: make sure Redis
        # answers first, so that subscribing to a Redis that is gone fails in bounded time.
        await self._call("subscribe", self._client.ping, resend=True)
        own: BaseException | None = None  # what the block itself raised
        try:
            async with coredis_compat.subscription(self._subscriber, key) as pubsub:
                try:
                    yield _Bodies(pubsub, f"redis broker {self.url}: subscription to {topic!r}")
                except BaseException as exc:
                    own = exc
                    raise
        except BaseException as exc:
            errors = [e for e in leaves(exc) if not isinstance(e, trio.Cancelled)]
            if own is not None and any(e is own for e in errors):
                raise own from None  # the block's own error, not wrapped in a group
            if errors and is_failure(exc):
                raise self._error(f"subscription to {topic!r}", exc) from exc
            raise

    async def stats(self) -> list[QueueStats]:
        """Counts per known queue, in one script call."""
        flat: Any = await self._call(
            "stats",
            lambda: self._stats([self._queues_key()], [self.prefix, GROUP, _RELEASED]),
            resend=True,
        )
        out = [
            QueueStats(
                queue=_text(flat[k]),
                queued=int(flat[k + 1]),
                running=int(flat[k + 2]),
                done=int(flat[k + 3]),
                dead=int(flat[k + 4]),
            )
            for k in range(0, len(flat), 5)
        ]
        return count_workers(out, await self.workers())

    async def _queues(self, queue: str | None) -> list[str]:
        if queue is not None:
            return [queue]
        key = self._queues_key()
        names: Any = await self._call(
            "list queues", lambda: self._client.smembers(key), resend=True
        )
        return sorted(_text(n) for n in names)

    async def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters, read from each queue's dead stream."""
        out: list[DeadLetter] = []
        for q in await self._queues(queue):
            key = self._q(q, "dead")
            entries: Any = await self._call(
                "dead_letters",
                functools.partial(self._client.xrange, key, count=limit),
                resend=True,
            )
            out += [_dead_letter(q, e.identifier, e.field_values) for e in entries]
        out.sort(key=lambda d: d.died_at)
        return out[:limit]

    async def requeue_dead(self, queue: str | None = None) -> int:
        """Re-add each dead letter to its queue with a fresh delivery count."""
        total = 0
        for q in await self._queues(queue):
            keys = [self._queues_key(), self._q(q, "ready"), self._q(q, "dead")]
            n = await self._run("requeue_dead", self._requeue, keys, [GROUP, q], resend=False)
            total += int(n)
        return total

    async def purge(self, queue: str | None = None) -> int:
        """Delete dead letters and completed-message counters; queued/leased stay."""
        total = 0
        for q in await self._queues(queue):
            keys = [self._q(q, "dead"), self._q(q, "done")]
            n = await self._run("purge", self._purge, keys, [], resend=False)
            total += int(n)
        if queue is None:
            inboxes = await self._inboxes()
            keys = [self._channels_key(), *inboxes]
            args: list[Arg] = [self.prefix, _ms(DEAD_CHANNEL_RETENTION), *inboxes.values()]
            total += int(await self._run("purge", self._purge_channels, keys, args, resend=True))
        return total

    async def _inboxes(self) -> dict[str, str]:
        """Every receiver's inbox list in this prefix (a scan): key -> its channel.

        A receiver deletes its own inboxes; those of a receiver that died stay
        until ``purge`` finds their channel dead.
        """
        head = f"{self.prefix}c:"

        async def scan() -> dict[str, str]:
            found: dict[str, str] = {}
            async for raw in self._client.scan_iter(match=f"{head}*:inbox:*", count=1000):
                key = _text(raw)
                channel, sep, _ = key.removeprefix(head).partition(":inbox:")
                if sep:
                    found[key] = channel
            return found

        return await self._call("purge", scan, resend=True)


@attrs.define
class _Waiter:
    """One caller's item in a :class:`_GroupCommit`, and how it ended."""

    item: list[Arg]
    done: trio.Event = attrs.field(factory=trio.Event)
    outcome: object = None
    error: BaseException | None = None
    lead: bool = False


class _GroupCommit:
    """Coalesces concurrent calls into batched calls of ``flush`` (a group commit).

    The first caller flushes at once (no added latency); callers arriving while a
    flush is in flight queue up, and the first of them leads the next flush with
    everything queued by then. A waiting caller is shielded: its item is (or will
    be) sent, and it gets that item's real outcome rather than an unknown one.
    """

    def __init__(self, flush: Callable[[list[list[Arg]]], Awaitable[list[object]]]) -> None:
        self._flush = flush
        self._queue: list[_Waiter] = []
        self._busy = False

    async def submit(self, item: list[Arg]) -> object:
        me = _Waiter(item)
        self._queue.append(me)
        if self._busy:
            with trio.CancelScope(shield=True):
                await me.done.wait()
            if not me.lead:
                if me.error is not None:
                    # the batch's error, as its kind: whether waiting can help is the same
                    kind = (
                        BrokerUnavailable
                        if isinstance(me.error, BrokerUnavailable)
                        else BrokerError
                    )
                    raise kind(str(me.error)) from me.error
                return me.outcome
        else:
            self._busy = True
        batch, self._queue = self._queue[:_MAX_COMPLETE_BATCH], self._queue[_MAX_COMPLETE_BATCH:]
        try:
            outcomes = await self._flush([w.item for w in batch])
        except trio.Cancelled:
            # Nothing was sent (attempts are shielded; only a backoff sleep is
            # cancellable): hand the others back to the queue for the next leader.
            self._queue[:0] = [w for w in batch if w is not me]
            raise
        except BaseException as exc:
            for w in batch:
                w.error = exc
                w.done.set()
            raise
        else:
            for w, outcome in zip(batch, outcomes, strict=True):
                w.outcome = outcome
                w.done.set()
        finally:
            if self._queue:
                self._queue[0].lead = True
                self._queue[0].done.set()
            else:
                self._busy = False
        return me.outcome


def _ms(seconds: float) -> int:
    """Whole milliseconds, at least 1."""
    return max(1, round(seconds * 1000))


def _worker(worker_id: str, raw: bytes) -> WorkerInfo | None:
    """A worker entry of ``P workers`` (see ``scripts.workers``), or None if unreadable."""
    try:
        seen_ms, _, info = msgpack.unpackb(raw, raw=True)
        queue, concurrency, host, pid, started_at, running = msgpack.unpackb(info, raw=False)
        return WorkerInfo(
            id=worker_id,
            queue=str(queue),
            concurrency=int(concurrency),
            host=str(host),
            pid=int(pid),
            started_at=float(started_at),
            running=int(running),
            seen_at=int(seen_ms) / 1000,
        )
    except (ValueError, TypeError, msgpack.UnpackException):
        return None


def _dead_letter(queue: str, sid: Any, f: Any) -> DeadLetter:
    """One entry of a dead stream (fields missing from a foreign entry read as empty)."""

    def number(key: bytes, default: int) -> int:
        value = _bytes(f.get(key, b""))
        return int(value) if _COUNT.fullmatch(value) else default

    return DeadLetter(
        message=Message(
            id=_text(f.get(b"i", b"")),
            body=_bytes(f.get(b"b", b"")),
            reply_to=_text(f.get(b"r", b"")),
        ),
        queue=queue,
        reason=_text(f.get(b"why", b"(no reason recorded)")),
        deliveries=number(b"n", 0),
        died_at=number(b"t", int(_text(sid).split("-")[0] or 0)) / 1000,
    )


def _replies(channel: str, raws: Sequence[Any]) -> list[Reply]:
    """The replies in ``raws``; a malformed one becomes a dead reply saying so if its
    message id is readable (nobody waits for it forever), else it is logged and skipped."""
    out = []
    for raw in raws:
        try:
            item = msgpack.unpackb(_bytes(raw), raw=True)
        except Exception as exc:  # any bytes at all may be there
            item, why = None, f"it is not msgpack ({type(exc).__name__}: {exc})"
        else:
            why = "it is not [message id, kind 0 or 1, payload]"
        if (
            isinstance(item, list)
            and len(item) == 3
            and isinstance(item[0], bytes)
            and item[1] in (0, 1)
            and isinstance(item[2], bytes)
        ):
            mid, kind, payload = item
            if kind == 1:
                out.append(Reply(message_id=_text(mid), dead_reason=_text(payload)))
            else:
                out.append(Reply(message_id=_text(mid), body=payload))
        elif isinstance(item, list) and item and isinstance(item[0], bytes):
            reason = f"its reply in Redis (channel {channel!r}) was malformed: {why}"
            out.append(Reply(message_id=_text(item[0]), dead_reason=reason))
        else:
            _log.warning(
                "redis broker: skipped a malformed reply on channel %r: %s: %r",
                channel,
                why,
                _bytes(raw)[:80],
            )
    return out


def _stream_entries(read: Any) -> list[Any]:
    """The entries of a one-stream XREAD(GROUP) reply (a RESP3 map or RESP2 list)."""
    if isinstance(read, dict):
        return list(next(iter(read.values())))
    return list(read[0][1])


class _Bodies:
    """The message bodies of one pub/sub subscription, as an async iterator."""

    def __init__(self, pubsub: Any, what: str) -> None:
        self._pubsub = pubsub
        self._what = what

    def __aiter__(self) -> _Bodies:
        return self

    async def __anext__(self) -> bytes:
        try:
            body = await coredis_compat.next_message(self._pubsub)
        except Exception as exc:
            if not is_failure(exc):
                raise
            raise BrokerError(f"{self._what} failed: {exc!r}") from exc
        if body is None:
            raise StopAsyncIteration  # the subscription was closed
        return body


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
