"""The one protocol every broker implements, and how a URL picks a broker.

A broker moves opaque bytes. It knows nothing of operations, jobs or results:
the runtime encodes a job into a :class:`Message` body, the worker decodes it,
and the worker's encoded result travels back as the body of a :class:`Reply` on
the message's ``reply_to`` channel. Keeping the broker ignorant of the codec is
what lets memory, SQLite and Redis sit behind the same runtime unchanged.

Semantics every broker shares (checked by ``wireframe.testing``'s conformance
suite):

* **At-least-once with leases.** :meth:`Broker.consume` hands out each visible
  message to exactly one consumer and leases it for ``lease`` seconds. A lease
  that runs out makes the message visible again (its worker is presumed dead).
  :meth:`Broker.extend` renews a lease. Completing, abandoning or extending a
  delivery whose lease was lost raises :class:`LockLost`, and a completion that
  raised posts no reply.
* **Replies exactly once per completion.** :meth:`Broker.complete` removes the
  message and posts its reply *atomically*: either both happen or neither.
* **Dead letters.** A message delivered more than ``max_deliveries`` times is
  not handed out again: ``consume`` moves it to the dead-letter store with the
  reason, and posts a dead :class:`Reply` to its ``reply_to`` channel so that
  nobody waits for it forever. :meth:`Broker.dead_letter` does the same on
  request (a worker that cannot decode a message).
* **Broadcast reaches every subscriber**, not one of them.
* **Queues are created idempotently**; :meth:`Broker.purge` deletes finished
  state (completed records, dead letters, replies nobody will take) and never a
  queued or leased message.
* **Run channels live while their run does.** A directive run opens its result
  channel with :meth:`Broker.open_channel` and keeps it alive with
  :meth:`Broker.keep_channel`; :meth:`Broker.close_channel` ends it. A channel
  that was closed, or not kept alive within its ``ttl`` (its orchestrator died),
  is *dead*: a message replying to it is an orphan that ``consume`` settles
  without handing it out, a completion posts nothing to it, and ``purge``
  deletes its replies. A channel never opened is unmanaged and behaves as a
  plain mailbox. ``keep_channel`` raises :class:`ChannelLost` when the broker
  no longer has the channel's record: the broker lost its state (a Redis
  restarted without persistence), so the run's jobs in flight are gone too.
* **Workers announce themselves** with :meth:`Broker.heartbeat`; a worker not
  heard from within its ``ttl`` is presumed dead and :meth:`Broker.workers` no
  longer lists it.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qsl, unquote, urlsplit

import attrs

from wireframe.jobs.jobstore import JobRecord

__all__ = [
    "DEAD_CHANNEL_RETENTION",
    "Broker",
    "BrokerError",
    "BrokerURL",
    "BrokerURLError",
    "BrokerUnavailable",
    "ChannelLost",
    "DeadLetter",
    "Delivery",
    "LockLost",
    "Message",
    "QueueStats",
    "Reply",
    "WorkerInfo",
    "count_option",
    "count_workers",
    "mask_password",
    "open_broker",
    "parse_broker_url",
    "seconds_option",
]


class BrokerError(Exception):
    """Base class of every error a broker raises on purpose."""


class BrokerUnavailable(BrokerError):
    """The broker's backing service cannot be reached (yet)."""


class BrokerURLError(BrokerError, ValueError):
    """A broker URL is malformed or names an option the broker does not know."""


class LockLost(BrokerError):
    """The lease on a delivery ran out (or was taken over) before this call.

    The message may already be running elsewhere; whatever this holder computed
    is stale and has been dropped.
    """

    def __init__(self, message_id: str, queue: str, detail: str = "") -> None:
        self.message_id = message_id
        self.queue = queue
        extra = f": {detail}" if detail else ""
        super().__init__(
            f"lease on message {message_id!r} of queue {queue!r} was lost{extra}; "
            "its result was dropped and the message will run (or ran) elsewhere"
        )


class ChannelLost(BrokerError):
    """A run's result channel is gone: its replies will never come.

    Either the broker lost its state (a Redis restarted without persistence, or
    its keys were deleted) and with it the run's queued jobs, or the channel
    expired because its run did not keep it alive in time (the process was
    stopped, or its event loop blocked), so workers now skip the run's jobs.
    """

    def __init__(self, channel: str, detail: str) -> None:
        self.channel = channel
        self.detail = detail
        super().__init__(f"result channel {channel!r} is gone: {detail}")


#: How long (seconds) a dead run channel's record is kept: its orphaned jobs
#: still queued within that time are skipped, not run.
DEAD_CHANNEL_RETENTION = 86_400.0


@attrs.frozen
class Message:
    """One unit of work as the broker sees it.

    ``id`` is chosen by the publisher and unique within the broker (the runtime
    uses the job id). ``reply_to`` names the result channel that receives the
    :class:`Reply` when the message completes or dies; ``""`` means nobody
    listens. Within a queue, a message of higher ``priority`` is consumed
    first; equal priorities stay first in, first out.
    """

    id: str
    body: bytes
    reply_to: str = ""
    priority: int = 0


@attrs.frozen
class Delivery:
    """A leased message handed to one consumer.

    ``deliveries`` counts how often the message has been handed out, this time
    included (1 on the first delivery). ``lease_token`` identifies this lease;
    it is the broker's business what it contains. ``lease_expires`` is the
    broker's clock reading (see :attr:`Broker.clock`) when the lease runs out.
    """

    message: Message
    queue: str
    deliveries: int
    lease_token: str
    lease_expires: float


@attrs.frozen
class Reply:
    """What arrives on a result channel for one message.

    Exactly one of ``body`` (the completed message's result, possibly empty) or
    ``dead_reason`` (it went to the dead-letter store) is set.
    """

    message_id: str
    body: bytes | None = None
    dead_reason: str | None = None

    @property
    def is_dead(self) -> bool:
        """True when the message died instead of completing."""
        return self.dead_reason is not None


@attrs.frozen
class DeadLetter:
    """A message in the dead-letter store, with why it is there."""

    message: Message
    queue: str
    reason: str
    deliveries: int
    died_at: float  # wall-clock seconds since the epoch


@attrs.frozen
class QueueStats:
    """Counts for one queue, for ``wireframe jobs stats`` and the live view."""

    queue: str
    queued: int  # visible now or delayed
    running: int  # leased
    done: int  # completed (or settled as orphans) and not yet purged
    dead: int
    workers: int = 0  # live workers consuming this queue


@attrs.frozen
class WorkerInfo:
    """A worker as it announces itself with :meth:`Broker.heartbeat`.

    ``seen_at`` is the broker's clock reading of the last heartbeat; the broker
    sets it (a worker sends 0).
    """

    id: str
    queue: str
    concurrency: int
    host: str
    pid: int
    started_at: float  # wall-clock seconds since the epoch
    running: int = 0  # jobs running at the last heartbeat
    seen_at: float = 0.0


def count_workers(stats: Sequence[QueueStats], workers: Sequence[WorkerInfo]) -> list[QueueStats]:
    """``stats`` with each queue's live worker count filled in from ``workers``.

    A queue that live workers consume but that has no stats yet is listed too.
    """
    per_queue: dict[str, int] = {}
    for worker in workers:
        per_queue[worker.queue] = per_queue.get(worker.queue, 0) + 1
    out = [attrs.evolve(s, workers=per_queue.pop(s.queue, 0)) for s in stats]
    out += [QueueStats(q, 0, 0, 0, 0, n) for q, n in per_queue.items()]
    return sorted(out, key=lambda s: s.queue)


@runtime_checkable
class Broker(Protocol):
    """A message store with leases, result channels and broadcast.

    Every wait is a trio checkpoint and can be cancelled. Times are seconds.
    Implementations: ``wireframe.jobs.brokers.memory``, ``.sqlite``, ``.redis``.
    """

    url: BrokerURL

    def clock(self) -> float:
        """The clock leases and delays are measured on (trio's for memory)."""
        ...

    async def ping(self) -> None:
        """Return when the broker answers; raise :class:`BrokerUnavailable` if not."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads. Idempotent."""
        ...

    # -- queues ---------------------------------------------------------------
    async def declare_queue(self, queue: str) -> None:
        """Create ``queue`` if it does not exist (idempotent)."""
        ...

    async def delete_queue(self, queue: str) -> None:
        """Delete ``queue`` and everything in it. Unknown queues are ignored."""
        ...

    async def publish(self, queue: str, messages: Sequence[Message], *, delay: float = 0.0) -> None:
        """Append ``messages`` to ``queue`` in order, visible after ``delay``.

        One call is one round trip where the backend allows it: the runtime
        publishes in batches. The queue is declared if needed.
        """
        ...

    async def consume(self, queue: str, limit: int) -> list[Delivery]:
        """Lease up to ``limit`` visible messages, oldest first.

        Blocks (cancellably) until at least one is available; never returns an
        empty list. Messages whose lease expired are visible again. A message
        about to be delivered more than ``max_deliveries`` times is moved to
        the dead-letter store instead (posting a dead reply) and not returned.
        """
        ...

    async def complete(self, delivery: Delivery, reply: bytes | None) -> None:
        """Finish a delivery: remove it and post ``Reply(id, body=reply)``.

        ``reply=None`` posts nothing (e.g. the job was aborted). Atomic.
        Raises :class:`LockLost` if this lease is no longer current.
        """
        ...

    async def abandon(
        self, delivery: Delivery, *, delay: float = 0.0, body: bytes | None = None
    ) -> None:
        """Give a delivery back: visible again after ``delay``.

        With ``body`` the message's body is replaced and its delivery count
        reset to zero — that is how a retry carries its next attempt number.
        Raises :class:`LockLost` if this lease is no longer current.
        """
        ...

    async def extend(self, delivery: Delivery) -> Delivery:
        """Renew the lease for another ``lease`` seconds from now.

        Returns the delivery with its new ``lease_expires`` (and, where the
        backend needs it, a new token). Raises :class:`LockLost`.
        """
        ...

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move a delivery to the dead-letter store and post a dead reply.

        Raises :class:`LockLost` if this lease is no longer current.
        """
        ...

    # -- result channels -------------------------------------------------------
    async def receive_replies(self, channel: str, limit: int) -> list[Reply]:
        """Take up to ``limit`` replies posted to ``channel``, in arrival order.

        Blocks (cancellably) until at least one is there. A reply is taken by
        exactly one call. Replies posted before anyone listened are kept (for
        durable brokers: across restarts) until taken or the channel deleted.
        """
        ...

    async def delete_channel(self, channel: str) -> None:
        """Drop a channel, any replies left in it and its record: it is unmanaged again."""
        ...

    async def open_channel(self, channel: str, ttl: float) -> None:
        """Record ``channel`` as live for ``ttl`` seconds (a run's result channel)."""
        ...

    async def keep_channel(self, channel: str, ttl: float) -> None:
        """Keep an open channel live for ``ttl`` more seconds.

        Raises :class:`ChannelLost` if the broker has no record of it (it lost
        its state) or it is dead (closed, or not kept alive in time).
        """
        ...

    async def close_channel(self, channel: str) -> None:
        """End a channel: drop its replies; it is dead from now on (see the module doc)."""
        ...

    # -- workers ---------------------------------------------------------------------
    async def heartbeat(self, worker: WorkerInfo, ttl: float) -> None:
        """Record ``worker`` as live for ``ttl`` seconds; ``ttl=0`` removes it (it stopped)."""
        ...

    async def workers(self, queue: str | None = None) -> list[WorkerInfo]:
        """The live workers (of one queue, or all), sorted by queue and id."""
        ...

    # -- jobs by id (the job store role: wireframe.jobs.jobstore) ----------------------
    async def submit(
        self,
        queue: str,
        message: Message,
        *,
        delay: float = 0.0,
        key: str | None = None,
        operation: str = "",
    ) -> tuple[JobRecord, bool]:
        """Publish a tracked job; see :meth:`JobStore.submit`."""
        ...

    async def job(self, job_id: str) -> JobRecord | None:
        """A tracked job's record; see :meth:`JobStore.job`."""
        ...

    async def wait_job(self, job_id: str, timeout: float) -> JobRecord | None:
        """Wait for a tracked job to finish; see :meth:`JobStore.wait_job`."""
        ...

    async def abort_job(self, job_id: str) -> JobRecord | None:
        """Abort a tracked job; see :meth:`JobStore.abort_job`."""
        ...

    # -- broadcast ---------------------------------------------------------------
    async def broadcast(self, topic: str, body: bytes) -> None:
        """Send ``body`` to every current subscriber of ``topic``."""
        ...

    def subscribe(self, topic: str) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Subscribe to ``topic``; the subscription is live once entered.

        ``async with broker.subscribe("abort") as bodies: async for b in bodies``.
        Anything broadcast after ``__aenter__`` returned is received.
        """
        ...

    # -- inspection and housekeeping --------------------------------------------
    async def stats(self) -> list[QueueStats]:
        """Counts per known queue with its live workers, sorted by queue name."""
        ...

    async def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters, of one queue or of all."""
        ...

    async def requeue_dead(self, queue: str | None = None) -> int:
        """Put dead letters back on their queues (delivery count reset); count them."""
        ...

    async def purge(self, queue: str | None = None) -> int:
        """Delete finished state (completed records, dead letters); count it.

        Without ``queue`` it also deletes the replies of dead channels (counted)
        and the records of channels dead longer than
        :data:`DEAD_CHANNEL_RETENTION`. Never touches a queued or leased message.
        """
        ...


# --------------------------------------------------------------------------------
# URLs


def seconds_option(name: str) -> Callable[[str], float]:
    """A converter for a URL option that is a positive, finite number of seconds."""

    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise BrokerURLError(f"option {name}={text!r} is not a number") from None
        if not math.isfinite(value) or value <= 0:
            raise BrokerURLError(f"option {name}={text!r} must be a positive number of seconds")
        return value

    return convert


def count_option(name: str, minimum: int = 1) -> Callable[[str], int]:
    """A converter for a URL option that is a whole number of at least ``minimum``."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise BrokerURLError(f"option {name}={text!r} is not a whole number") from None
        if value < minimum:
            at_least = "at least 1" if minimum == 1 else f"{minimum} or more"
            raise BrokerURLError(f"option {name}={text!r} must be {at_least}")
        return value

    return convert


#: Options every broker URL accepts, with their converters and defaults.
COMMON_OPTIONS: Mapping[str, tuple[Callable[[str], object], object]] = {
    "lease": (seconds_option("lease"), 30.0),
    "max_deliveries": (count_option("max_deliveries"), 5),
    "result_ttl": (seconds_option("result_ttl"), 86_400.0),
}


@attrs.frozen
class BrokerURL:
    """A parsed broker URL: ``scheme://[user:password@]host[:port]/path?options``.

    ``lease``, ``max_deliveries`` and ``result_ttl`` (how long a finished job's
    record is kept, seconds) mean the same on every broker; ``options``
    holds the broker-specific ones, already converted.
    """

    raw: str = attrs.field(repr=lambda raw: repr(mask_password(raw)))
    scheme: str
    host: str
    port: int | None
    path: str
    username: str | None
    password: str | None = attrs.field(repr=lambda p: "None" if p is None else "'***'")
    lease: float = 30.0
    max_deliveries: int = 5
    result_ttl: float = 86_400.0
    options: Mapping[str, object] = attrs.field(factory=dict)

    def __str__(self) -> str:
        """The URL with any password masked, safe to log."""
        return mask_password(self.raw)


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def mask_password(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part replaced by ``***``.

    Works on the text as written (a percent-encoded password is masked too), and
    on malformed URLs, so that error messages can quote a URL safely. A
    password written without percent-encoding may hold ``/``, ``?``, ``#``,
    ``@`` or ``:``: everything from the first ``:`` of the user part to the
    *last* ``@`` is hidden, so when an ``@`` also appears in a path or an
    option, more is hidden than the password — never less.
    """
    span = _password_span(url)
    if span is None:
        return url
    start, end = span
    return f"{url[:start]}***{url[end:]}"


def _password_span(url: str) -> tuple[int, int] | None:
    """Where ``url`` may hold a password: ``url[start:end]``, or None when it cannot.

    The password starts after the first ``:`` that follows ``scheme://`` (or, in
    a malformed URL without it, the first ``:`` of all) and ends at the last
    ``@``: cutting the host part off first, at the first ``/?#``, would leave
    the tail of a password that holds one of them in plain sight.
    """
    scheme = _SCHEME.match(url)
    colon = url.find(":", scheme.end() if scheme else 0)
    at = url.rfind("@")
    if colon == -1 or at < colon:
        return None
    return colon + 1, at


def _check_password_is_encoded(url: str, shown: str, rest: int) -> None:
    """Refuse a URL whose password is written with a ``/``, ``?`` or ``#`` in it.

    The URL grammar ends the host part at the first ``/?#``, so such a password
    would be read as part of the host, path, options or fragment (and quoted in
    their error messages); an ``@`` after that point is the tell. Raised before
    anything else is parsed, so no message can quote a piece of the password.
    ``rest`` is where the text after ``scheme://`` begins.
    """
    span = _password_span(url)
    if span is None:
        return
    ends = [i for i in (url.find(c, rest) for c in "/?#") if i != -1]
    if ends and span[1] > min(ends):
        raise BrokerURLError(
            f"broker URL {shown!r} is ambiguous: an '@' comes after a '/', '?' or '#', so "
            "where its password ends cannot be told; percent-encode the password (for "
            "example with urllib.parse.quote(password, safe='')), and write an '@' in a "
            "path or option value as %40"
        )


def parse_broker_url(
    url: str, extra_options: Mapping[str, tuple[Callable[[str], object], object]] = {}
) -> BrokerURL:
    """Parse ``url``, accepting the common options plus ``extra_options``.

    ``extra_options`` maps an option name to ``(converter, default)``; a
    converter raises :class:`BrokerURLError` (or ``ValueError``) on bad text.
    An unknown option, a repeated option or a malformed URL raises
    :class:`BrokerURLError` naming it.
    """
    if not isinstance(url, str) or "://" not in url:
        shown = mask_password(url) if isinstance(url, str) else url
        raise BrokerURLError(
            f"broker URL {shown!r} is malformed: expected scheme://..., "
            "for example sqlite:///jobs.db, redis://127.0.0.1:6379/0 or memory://"
        )
    shown = mask_password(url)
    scheme = _SCHEME.match(url)
    if scheme is None:
        raise BrokerURLError(
            f"broker URL {shown!r} is malformed: it has no valid scheme (it must start with "
            "a scheme and ://, like redis://)"
        )
    _check_password_is_encoded(url, shown, scheme.end())
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        if _password_span(url) is None:
            raise BrokerURLError(f"broker URL {shown!r} is malformed: {exc}") from None
        # the parser's message quotes the host part, which here may hold a piece of the password
        raise BrokerURLError(
            f"broker URL {shown!r} is malformed: its host part cannot be read; if the "
            "password holds '[', ']' or characters outside ASCII, percent-encode it"
        ) from None
    if parts.fragment:
        raise BrokerURLError(
            f"broker URL {shown!r} has a fragment '#{parts.fragment}'; options go in the query"
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise BrokerURLError(f"broker URL {shown!r} has a bad port: {exc}") from None
    values = _options(parts.query, {**COMMON_OPTIONS, **extra_options}, shown, parts.scheme)
    lease = values.pop("lease")
    max_deliveries = values.pop("max_deliveries")
    result_ttl = values.pop("result_ttl")
    assert isinstance(lease, float) and isinstance(max_deliveries, int)
    assert isinstance(result_ttl, float)
    return BrokerURL(
        raw=url,
        scheme=parts.scheme,
        host=parts.hostname or "",
        port=port,
        path=unquote(parts.path),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        lease=lease,
        max_deliveries=max_deliveries,
        result_ttl=result_ttl,
        options=values,
    )


def _options(
    query: str,
    known: Mapping[str, tuple[Callable[[str], object], object]],
    shown: str,
    scheme: str,
) -> dict[str, object]:
    """Every ``known`` option's value: converted from ``query``, else its default.

    An unknown option, a repeated one or one its converter refuses raises
    :class:`BrokerURLError` quoting the URL as ``shown`` (password masked).
    """
    values: dict[str, object] = {name: default for name, (_, default) in known.items()}
    seen: set[str] = set()
    for name, text in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if name not in known:
            raise BrokerURLError(
                f"broker URL {shown!r}: unknown option {name!r}; "
                f"{scheme}:// accepts {', '.join(sorted(known))}"
            )
        if name in seen:
            raise BrokerURLError(f"broker URL {shown!r}: option {name!r} is given twice")
        seen.add(name)
        converter = known[name][0]
        try:
            values[name] = converter(text)
        except BrokerURLError as exc:
            raise BrokerURLError(f"broker URL {shown!r}: {exc}") from None
        except ValueError as exc:
            raise BrokerURLError(f"broker URL {shown!r}: option {name}={text!r}: {exc}") from None
    return values


#: URL scheme -> module under ``wireframe.jobs.brokers`` that implements it.
#: Each module defines
#: ``open(url: str, *, create: bool = True) -> AbstractAsyncContextManager[Broker]``.
SCHEMES: Mapping[str, str] = {
    "memory": "memory",
    "sqlite": "sqlite",
    "redis": "redis",
    "rediss": "redis",
}


def open_broker(url: str, *, create: bool = True) -> AbstractAsyncContextManager[Broker]:
    """Open the broker a URL names, by its scheme; use as ``async with``.

    Broker modules are imported only when their scheme is used, so the job
    runtime never depends on a particular broker. ``create=False`` is for
    tools that only look (``wireframe jobs stats``...): a broker whose storage
    would be created by opening it (a SQLite file at a mistyped path) raises
    :class:`BrokerError` instead; brokers that create nothing on open ignore it.
    """
    scheme = url.split("://", 1)[0].lower() if isinstance(url, str) and "://" in url else ""
    module_name = SCHEMES.get(scheme)
    if module_name is None:
        shown = mask_password(url) if isinstance(url, str) else url
        raise BrokerURLError(
            f"broker URL {shown!r}: unknown scheme {scheme!r}; "
            f"known schemes are {', '.join(sorted(SCHEMES))}"
        )
    module = importlib.import_module(f"wireframe.jobs.brokers.{module_name}")
    opener: Callable[..., AbstractAsyncContextManager[Broker]] = module.open
    return opener(url, create=create)
