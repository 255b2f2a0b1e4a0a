"""The Redis broker's line to Redis: three clients, calls that retry, reads that block.

*Three pools.* coredis multiplexes ordinary commands: a connection goes back to the
pool as soon as a command is written, with its reply still to come. A blocking
command holds its connection, and coredis drops the connection of a cancelled one -
which would fail every multiplexed reply still pending on it (bug 2 in
:mod:`.coredis_compat`). So blocking reads use a client of their own
(:meth:`Connection.block`), and so do subscriptions, whose connections coredis
re-opens on its own.

*Calls.* Every other call goes through :meth:`Connection.call`: each attempt is one
short round trip, shielded and bounded; while Redis cannot be reached it is repeated
with backoff for up to ``reconnect`` seconds, if repeating it is safe. A failure
leaves as a :class:`BrokerError` explaining it (:mod:`.errors`), never as a coredis,
anyio, ssl or socket type.

*Blocking reads* are cancellable without losing anything: a cancelled one is woken
with ``CLIENT UNBLOCK`` and what it took in that instant is handed to the caller's
``late`` callback (which gives it back), so a cancelled ``consume`` or
``receive_replies`` loses nothing.
"""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import coredis
import coredis.exceptions
import trio
from coredis.retry import NoRetryPolicy

from wireframe.jobs.broker import BrokerError, BrokerUnavailable, BrokerURL
from wireframe.jobs.brokers.redis import coredis_compat
from wireframe.jobs.brokers.redis.errors import explain, is_failure

__all__ = ["CALL_TIMEOUT", "MAX_BLOCKING", "Arg", "Connection", "Late"]

_log = logging.getLogger("wireframe.jobs.brokers.redis")
T = TypeVar("T")
#: What a script argument may be.
Arg = str | bytes | int
#: What gets the reply of a blocking read whose caller was cancelled (to hand it back).
Late = Callable[[Any], Awaitable[None]]

#: Longest a single non-blocking Redis call may take before Redis counts as gone.
CALL_TIMEOUT = 10.0
#: Most blocking reads (consume and receive waits) one broker runs at once.
MAX_BLOCKING = 256
#: Longest a cancelled blocking read may take to be woken and read out.
UNBLOCK_TIMEOUT = 2.0


def _client(
    url: BrokerURL, db: int, tls: ssl.SSLContext | None, reconnect: float, most: int | None
) -> coredis.Redis[bytes]:
    """A coredis client for ``url``, of at most ``most`` connections, that never retries
    on its own (:meth:`Connection.call` does, knowing what is safe to repeat)."""
    return coredis.Redis(
        max_connections=most,
        host=url.host or "127.0.0.1",
        port=url.port or 6379,
        db=db,
        username=url.username,
        password=url.password,
        ssl_context=tls,
        decode_responses=False,
        connect_timeout=min(5.0, reconnect),
        retry_policy=NoRetryPolicy(),
    )


def _stream_gone(exc: Exception) -> bool:
    """Whether a blocking read ended because it was unblocked, or because its stream or
    consumer group was deleted under it (or Redis restarted without its data)."""
    return isinstance(
        exc, coredis.exceptions.UnblockedError | coredis.exceptions.StreamConsumerGroupError
    ) or (isinstance(exc, coredis.exceptions.ResponseError) and "NOGROUP" in str(exc))


class Connection:
    """One broker's clients of one Redis server, and how it calls them (see the module doc)."""

    def __init__(
        self,
        url: BrokerURL,
        *,
        db: int,
        tls: ssl.SSLContext | None,
        reconnect: float,
        poll: float,
    ) -> None:
        self.url = url
        self.reconnect = reconnect
        self.poll = poll
        self.tls = tls is not None
        #: The ordinary, multiplexed client: every script and non-blocking command.
        self.client = _client(url, db, tls, reconnect, None)
        #: The client of blocking reads, one connection each.
        self.blocking = _client(url, db, tls, reconnect, MAX_BLOCKING)
        #: The client of pub/sub subscriptions.
        self.subscriber = _client(url, db, tls, reconnect, None)
        #: Bounds blocking reads to the blocking pool's size (see :meth:`block`).
        self._blocking_slots = trio.Semaphore(MAX_BLOCKING)
        self._stack = AsyncExitStack()
        self.closed = False

    async def start(self) -> None:
        """Enter the three clients (this connects nothing yet)."""
        for client in (self.client, self.blocking, self.subscriber):
            await self._stack.enter_async_context(client)

    async def aclose(self) -> None:
        """Close every connection; later calls raise BrokerError."""
        self.closed = True
        try:
            await self._stack.aclose()
        except Exception as exc:  # closing connections to a Redis that is gone
            if not is_failure(exc):
                raise
            _log.debug("redis broker %s: closing its connections: %r", self.url, exc)

    def script(self, text: str) -> Any:
        """Register a Lua script on the ordinary client; call it with :meth:`run`."""
        return self.client.register_script(text)

    async def call(self, what: str, fn: Callable[[], Awaitable[T]], *, resend: bool) -> T:
        """Run one Redis call, retrying with backoff while Redis cannot be reached.

        Each attempt is shielded from cancellation (it is one short round trip, bounded
        by ``CALL_TIMEOUT``) so that a cancelled caller never leaves a half-known
        outcome behind. ``resend`` says whether the call may be repeated after its
        connection broke mid-flight (idempotent, or lease-checked so that a repeat
        raises LockLost); otherwise only attempts that never reached Redis repeat.
        """
        if self.closed:
            raise BrokerError(f"redis broker {self.url} is closed; {what} needs an open broker")
        deadline = trio.current_time() + self.reconnect
        delay = 0.02
        while True:
            try:
                with trio.CancelScope(shield=True), trio.fail_after(CALL_TIMEOUT):
                    return await fn()
            except trio.TooSlowError as exc:
                raise BrokerUnavailable(
                    f"redis broker {self.url}: {what} got no answer within {CALL_TIMEOUT} s"
                ) from exc
            except Exception as exc:
                if not is_failure(exc):
                    raise
                failure = explain(exc, tls=self.tls)
                # Repeat what surely did not run (a refused connect, a Redis loading
                # or out of memory), and what may be repeated, while waiting can help.
                retry = failure.transient and (resend or failure.unsent)
                if not retry or trio.current_time() + delay > deadline:
                    raise self.error(what, exc) from exc
            await trio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def run(
        self, what: str, script: Any, keys: Sequence[str], args: Sequence[Arg], *, resend: bool
    ) -> Any:
        """Run one of the Lua scripts through :meth:`call`."""
        return await self.call(what, functools.partial(script, keys, args), resend=resend)

    def error(self, what: str, exc: BaseException) -> BrokerError:
        """The BrokerError (BrokerUnavailable if waiting can help) for a failed call."""
        failure = explain(exc, tls=self.tls)
        kind = BrokerUnavailable if failure.transient else BrokerError
        return kind(f"redis broker {self.url}: {what} failed: {failure.reason}")

    async def ping(self) -> None:
        """Return when Redis answers; raise BrokerUnavailable at once if it does not."""
        if self.closed:
            raise BrokerError(f"redis broker {self.url} is closed")
        try:
            with trio.fail_after(min(5.0, self.reconnect)):
                await self.client.ping()
        except Exception as exc:
            if not is_failure(exc):
                raise
            failure = explain(exc, tls=self.tls)
            if not failure.transient:
                raise BrokerError(f"redis broker {self.url}: {failure.reason}") from exc
            raise BrokerUnavailable(
                f"redis broker {self.url} does not answer: {failure.reason}"
            ) from exc

    async def block(self, what: str, command: bytes, *args: Arg, late: Late | None = None) -> Any:
        """Run one blocking Redis read on a connection of its own; cancellable.

        coredis would drop the connection of a cancelled blocking command (and leak
        its pool slot: see :mod:`.coredis_compat`), so this never lets it see the
        cancellation: when the caller is cancelled, ``CLIENT UNBLOCK`` (from the
        ordinary pool) wakes the command, its reply is read (shielded, bounded) and
        given to ``late`` - what a cancelled read took is handed back, not lost - and
        the connection goes back to the pool intact. Returns None when Redis could not
        be reached (after a short pause; the caller's next :meth:`call` retries and
        gives up in time).
        """
        if self.closed:
            raise BrokerError(f"redis broker {self.url} is closed")
        async with self._blocking_slots:  # a cancellable wait for a free connection
            try:
                with trio.CancelScope(shield=True), trio.fail_after(CALL_TIMEOUT):
                    conn = await coredis_compat.lease(self.blocking)
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
            except Exception as exc:
                if _stream_gone(exc):
                    # the caller's next script call creates the stream and group again
                    await trio.sleep(0.01)
                    return None
                if not is_failure(exc):
                    raise
                return await self._blocked_failure(what, exc)
            finally:
                coredis_compat.give_back(self.blocking, conn)

    async def _blocked_failure(self, what: str, exc: BaseException) -> None:
        """After a failed blocking read: pause and return None if waiting can help.

        The caller's next script call then retries (and gives up in time); under
        ``maxmemory`` (where Redis refuses a BLMOVE but runs the scripts) the
        caller goes on by polling. Anything else raises its BrokerError.
        """
        if not explain(exc, tls=self.tls).transient:
            raise self.error(what, exc) from exc
        await trio.sleep(min(self.poll, 0.25))
        return None

    async def _unblock(self, conn: coredis.BaseConnection, request: Any, late: Late | None) -> None:
        """Wake a blocked command whose caller was cancelled; hand back what it took."""
        with trio.CancelScope(shield=True), trio.move_on_after(UNBLOCK_TIMEOUT) as scope:
            try:
                result = await coredis_compat.wake(self.client, conn, request)
                if result and late is not None:
                    await late(result)
            except Exception as exc:
                if not is_failure(exc):
                    raise
                coredis_compat.discard(conn, "its blocked command could not be woken cleanly")
        if scope.cancelled_caught:
            coredis_compat.discard(conn, "its blocked command could not be woken in time")
