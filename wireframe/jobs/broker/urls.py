"""Broker URLs: ``scheme://[user:password@]host[:port]/path?options``, parsed and masked.

Every broker parses its URL with :func:`parse_broker_url`, so the common options
(``lease``, ``max_deliveries``) mean the same everywhere and every mistake gets
the same kind of message: a :class:`~wireframe.jobs.broker.BrokerURLError`
naming the option or part that is wrong, quoting the URL with its password
masked (:func:`mask_password`) so that no message, log line or repr leaks it.
A broker adds its own options as ``name -> (converter, default)``; the
converters here (:func:`seconds_option`, :func:`count_option`) give the shared
wording.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

import attrs

from wireframe.jobs.broker.errors import BrokerURLError

__all__ = [
    "COMMON_OPTIONS",
    "BrokerURL",
    "count_option",
    "mask_password",
    "parse_broker_url",
    "seconds_option",
]


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
