"""What a failed Redis call means, as a BrokerError: the Redis broker raises nothing else.

coredis reports a failure as one of its own exception types, a socket or TLS
error (``OSError``), an anyio stream error or a timeout, often several deep in
``__cause__``/``__context__`` chains and exception groups. A user needs three
things from it instead: what went wrong in words (the server's own message kept),
whether waiting can help (:class:`BrokerUnavailable`: Redis restarting, loading,
busy or out of memory) or not (a plain :class:`BrokerError`: wrong password, a
certificate that does not verify, a server that does not speak TLS), and - for
the broker's retry loop - whether the call surely did not run, so that repeating
it cannot apply it twice. :func:`explain` answers all three.

Out of memory (``maxmemory`` reached under ``noeviction``) counts as transient:
Redis refuses a command, or a script at its first write, before it changes
anything, and memory comes back as workers complete jobs and replies are taken.
"""

from __future__ import annotations

import ssl

import anyio
import attrs
import coredis.exceptions
import trio

__all__ = ["FAILURES", "Failure", "explain", "is_failure", "leaves"]

#: What a failed Redis call may raise (groups of these too): everything else is a bug.
FAILURES: tuple[type[BaseException], ...] = (
    coredis.exceptions.RedisError,
    OSError,
    TimeoutError,
    trio.TooSlowError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)

#: A connection that could not be made, or broke.
_LOST_CONNECTION = (
    coredis.exceptions.ConnectionError,
    OSError,
    TimeoutError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)

#: OpenSSL reasons meaning the peer answered the TLS hello with something else.
_NOT_TLS = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "RECORD_LAYER_FAILURE",
        "PACKET_LENGTH_TOO_LONG",
        "UNKNOWN_PROTOCOL",
        "HTTP_REQUEST",
        "UNEXPECTED_RECORD",
        "WRONG_SSL_VERSION",
    }
)

#: Error codes of a Redis that will take the command again soon (it did not run it).
_BUSY_CODES = {
    "BUSY": "Redis is busy running a script or function",
    "MASTERDOWN": "the Redis replica lost its primary",
    "TRYAGAIN": "Redis asks to try again",
    "CLUSTERDOWN": "the Redis cluster is down",
}


@attrs.frozen
class Failure:
    """One failed Redis call, explained.

    ``reason`` says what went wrong (with the server's or library's message);
    ``transient`` whether it may pass by itself (raise BrokerUnavailable) or
    needs a person (raise BrokerError); ``unsent`` whether the call surely did
    not run, so that repeating it is safe whatever it was.
    """

    reason: str
    transient: bool
    unsent: bool


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc``, exception groups flattened."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def is_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a failed Redis call (one of :data:`FAILURES`, or a group of them)."""
    inner = [e for e in leaves(exc) if not isinstance(e, trio.Cancelled)]
    return bool(inner) and all(isinstance(e, FAILURES) for e in inner)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc``, its causes and contexts, and the leaves of any group among them."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        e = todo.pop()
        if any(e is s for s in seen):
            continue
        seen.append(e)
        if isinstance(e, BaseExceptionGroup):
            todo.extend(e.exceptions)
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
    return seen


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _root(exc: BaseException) -> BaseException:
    """The innermost OS-level error behind ``exc`` (``exc`` itself if none)."""
    found = exc
    for e in _chain(exc)[1:]:
        if isinstance(e, OSError) and not isinstance(e, ssl.SSLWantReadError):
            found = e
    return found


def _tls(exc: BaseException, tls: bool) -> Failure | None:
    """The TLS failure behind ``exc``, if that is what it is."""
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError):
            detail = e.verify_message or e.reason or _text(e)
            if "mismatch" in detail:
                what, fix = "host name", "connect by a name the certificate is valid for"
            else:
                what, fix = "certificate", "trust its CA with the URL option tls_ca=<PEM file>"
            return Failure(
                f"TLS {what} verification failed: {detail} ({fix}, or turn the checks off "
                "with tls_verify=false)",
                transient=False,
                unsent=True,
            )
    for e in chain:
        if isinstance(e, ssl.SSLError) and not isinstance(
            e, ssl.SSLWantReadError | ssl.SSLWantWriteError | ssl.SSLEOFError
        ):
            if e.reason in _NOT_TLS:
                return Failure(
                    f"the server did not speak TLS ({e.reason}): is this a plain Redis "
                    "port? use redis:// for it, or the server's TLS port",
                    transient=False,
                    unsent=True,
                )
            return Failure(f"the TLS handshake failed: {_text(e)}", transient=False, unsent=True)
    if not tls:
        return None
    if any(isinstance(e, ssl.SSLEOFError) for e in chain):
        return Failure(
            "the server closed the connection during the TLS handshake: it may not speak "
            "TLS on this port (a plain Redis port?) or may want a client certificate",
            transient=True,
            unsent=True,
        )
    timed_out = any(isinstance(e, TimeoutError | trio.TooSlowError) for e in chain)
    if timed_out and any(isinstance(e, ssl.SSLWantReadError) for e in chain):
        return Failure(
            "no TLS handshake: the server accepted the connection but did not answer the "
            "TLS hello in time - it may not speak TLS on this port (a plain Redis port? "
            "use redis:// for it) or be too busy to answer",
            transient=True,
            unsent=True,
        )
    return None


def _response(exc: coredis.exceptions.ResponseError) -> Failure:
    """A Redis error reply, explained."""
    message = _text(exc)
    code = message.split(" ", 1)[0]
    if code == "OOM":
        return Failure(
            "Redis is out of memory (maxmemory reached with policy noeviction): " + message,
            transient=True,
            unsent=True,
        )
    if code in _BUSY_CODES or isinstance(
        exc, coredis.exceptions.TryAgainError | coredis.exceptions.ClusterDownError
    ):
        return Failure(f"{_BUSY_CODES.get(code, 'Redis is busy')}: {message}", True, True)
    if isinstance(exc, coredis.exceptions.NoScriptError) or code == "NOSCRIPT":
        # the script did not run: Redis lost its script cache (a restart without its data,
        # SCRIPT FLUSH) between loading and calling it; the next call loads it again
        return Failure(f"Redis does not have the script (restarted?): {message}", True, True)
    if isinstance(exc, coredis.exceptions.ReadOnlyError):
        return Failure(
            f"Redis is a read-only replica (a failover in progress?): {message}", True, True
        )
    if isinstance(exc, coredis.exceptions.AuthenticationError):
        return Failure(
            f"Redis refused the credentials (check the user and password in the URL): {message}",
            transient=False,
            unsent=True,
        )
    if isinstance(exc, coredis.exceptions.AuthorizationError):
        return Failure(f"Redis does not allow this user the command (ACL): {message}", False, True)
    return Failure(f"Redis answered with an error: {message}", transient=False, unsent=False)


def explain(exc: BaseException, *, tls: bool) -> Failure:
    """Explain ``exc``, raised by a Redis call (one of :data:`FAILURES`, or a group of them).

    ``tls`` says whether the broker speaks TLS (``rediss://``): then a stalled or
    cut handshake is told as such.
    """
    found = _tls(exc, tls)
    if found is not None:
        return found
    inner = [e for e in leaves(exc) if not isinstance(e, trio.Cancelled)]
    if inner and inner[0] is not exc:
        return explain(inner[0], tls=tls)  # a group: its first real error says it
    if isinstance(exc, coredis.exceptions.BusyLoadingError):
        return Failure(f"Redis is loading its data set: {_text(exc)}", True, True)
    if isinstance(exc, coredis.exceptions.ResponseError):
        return _response(exc)
    if isinstance(exc, trio.TooSlowError):
        return Failure("no answer in time", transient=True, unsent=False)
    if isinstance(exc, _LOST_CONNECTION):
        text = _text(exc)
        root = _root(exc)
        if root is not exc and str(root) not in text:
            text = f"{text} ({type(root).__name__}: {str(root) or 'timed out'})"
        # Refused or timed-out connects (no stream timeout is set, so a TimeoutError
        # is a connect timeout) never sent anything; a broken connection may have.
        unsent = (
            isinstance(exc, TimeoutError | ConnectionRefusedError)
            or "Unable to establish" in text
            or "max number of clients" in text
        )
        return Failure(text, transient=True, unsent=unsent)
    return Failure(
        f"the Redis client failed: {type(exc).__name__}: {_text(exc)}",
        transient=False,
        unsent=False,
    )
