"""The Redis broker's URL: ``redis[s]://[user:password@]host[:port][/db]?options``.

Options besides the common ``lease`` and ``max_deliveries`` (:data:`OPTIONS`):

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

The path is the database number (``/0`` when there is none).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

from wireframe.jobs.broker import BrokerURL, BrokerURLError, seconds_option

__all__ = ["OPTIONS", "database", "tls_context"]


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


def tls_context(url: BrokerURL) -> ssl.SSLContext | None:
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


def database(url: BrokerURL) -> int:
    """The database number the URL's path names (0 when it names none)."""
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
