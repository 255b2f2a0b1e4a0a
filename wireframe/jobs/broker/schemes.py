"""How a URL's scheme picks a broker: plug-ins found through the ``wireframe.brokers`` entry points.

A broker is a plug-in. The distribution that ships it registers each URL scheme
it serves in the entry-point group ``wireframe.brokers``::

    [project.entry-points."wireframe.brokers"]
    mybroker = "mypackage.mybroker"

The value names a module whose ``open(url: str, *, create: bool = True)``
returns an async context manager that yields the open broker (a
:class:`~wireframe.jobs.broker.Broker`), or names such a callable itself
(``"mypackage.mybroker:open_mybroker"``). wireframe's own brokers are
registered the same way in its ``pyproject.toml``. Nothing is imported until a
URL names its scheme, so no broker (nor its client library) is a dependency of
the runtime, and a broker of your own is opened by ``jobs.connect`` and the CLI
like the built-in ones.

*Why a built-in table too* (:data:`SCHEMES`): entry points are package
metadata, written when a distribution is installed. Run from a source tree
that was never pip-installed (``PYTHONPATH=.``), or under an install made
before a scheme was registered, Python knows none (or not all) of wireframe's
own entry points — and ``memory://``, which the emulated workers and every
quick test use, would be refused. So for each built-in scheme that wireframe's
installed metadata does not register, the table stands in. It stands in for
*wireframe's* metadata only: another distribution registering a built-in
scheme conflicts with it whether wireframe is installed or not.

*Conflicts.* Two distributions registering one scheme for different targets is
an error when that scheme is opened, naming both, never a silent pick: which
one won would depend on the order of ``sys.path``.

The scan of the installed distributions takes milliseconds, and brokers are
opened often in tests, so its result is kept while ``sys.path`` stays the same;
a scheme not found is looked up afresh before it is refused, so a plug-in
installed while the process runs is found.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from importlib.metadata import EntryPoint, entry_points
from types import MappingProxyType, ModuleType
from typing import Final, cast

from wireframe.jobs.broker.errors import BrokerError, BrokerURLError
from wireframe.jobs.broker.roles import Broker
from wireframe.jobs.broker.urls import mask_password

__all__ = ["ENTRY_POINT_GROUP", "SCHEMES", "known_schemes", "open_broker"]

#: The entry-point group brokers register their URL schemes in.
ENTRY_POINT_GROUP: Final = "wireframe.brokers"

#: The built-in brokers, exactly as ``pyproject.toml`` registers them (a test
#: holds the two equal): scheme -> entry-point value. Used only where
#: wireframe's installed metadata lacks them (see the module doc).
SCHEMES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "memory": "wireframe.jobs.brokers.memory",
        "sqlite": "wireframe.jobs.brokers.sqlite",
        "redis": "wireframe.jobs.brokers.redis",
        "rediss": "wireframe.jobs.brokers.redis",
    }
)

_OWN_DISTRIBUTION: Final = "wireframe"

#: What an entry point resolves to: ``open(url, *, create=True)``.
Opener = Callable[..., AbstractAsyncContextManager[Broker]]

_cache: tuple[tuple[str, ...], dict[str, list[EntryPoint]]] | None = None


def _is_own(ep: EntryPoint) -> bool:
    return ep.dist is not None and ep.dist.name.lower().replace("_", "-") == _OWN_DISTRIBUTION


def _source(ep: EntryPoint) -> str:
    """Where an entry point comes from, for error messages."""
    if ep.dist is None:
        return "wireframe's built-in table"
    return f"distribution {ep.dist.name!r}"


def _add(found: dict[str, list[EntryPoint]], scheme: str, ep: EntryPoint) -> None:
    """Record ``ep`` for ``scheme`` unless a candidate with the same target is there."""
    same = found.setdefault(scheme, [])
    if all(other.value != ep.value for other in same):
        same.append(ep)


def _scan() -> dict[str, list[EntryPoint]]:
    """Scheme -> the distinct entry points registered for it, the built-in table filling in."""
    found: dict[str, list[EntryPoint]] = {}
    own: set[str] = set()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        scheme = ep.name.lower()
        if _is_own(ep):
            own.add(scheme)
        _add(found, scheme, ep)
    for scheme, value in SCHEMES.items():
        if scheme not in own:
            _add(found, scheme, EntryPoint(scheme, value, ENTRY_POINT_GROUP))
    return found


def _registered(*, fresh: bool = False) -> dict[str, list[EntryPoint]]:
    """The result of :func:`_scan`, kept while ``sys.path`` is unchanged (unless ``fresh``)."""
    global _cache
    key = tuple(sys.path)
    if fresh or _cache is None or _cache[0] != key:
        _cache = (key, _scan())
    return _cache[1]


def known_schemes() -> list[str]:
    """Every URL scheme :func:`open_broker` can open now, sorted: registered or built in."""
    return sorted(_registered(fresh=True))


def _opener(ep: EntryPoint, scheme: str, shown: object) -> Opener:
    """Load what ``ep`` names: a module's ``open``, or the callable itself."""
    where = f"{ep.value!r} ({_source(ep)})"
    try:
        target = ep.load()
    except Exception as exc:
        raise BrokerError(
            f"broker URL {shown!r}: the broker for {scheme}:// cannot be loaded from "
            f"{where}: {type(exc).__name__}: {exc}"
        ) from exc
    opener = getattr(target, "open", None) if isinstance(target, ModuleType) else target
    if not callable(opener):
        raise BrokerError(
            f"broker URL {shown!r}: {where}, registered for {scheme}://, is neither a module "
            "with an open(url, *, create=True) function nor such a callable"
        )
    return cast(Opener, opener)


def open_broker(url: str, *, create: bool = True) -> AbstractAsyncContextManager[Broker]:
    """Open the broker a URL names, by its scheme; use as ``async with``.

    The scheme is looked up among the ``wireframe.brokers`` entry points (see
    the module doc); the broker's module is imported only then, so the job
    runtime never depends on a particular broker. An unknown scheme raises
    :class:`BrokerURLError` listing the known ones; a scheme two distributions
    register, or a plug-in that fails to load, :class:`BrokerError`.
    ``create=False`` is for tools that only look (``wireframe jobs stats``...):
    a broker whose storage would be created by opening it (a SQLite file at a
    mistyped path) raises :class:`BrokerError` instead; brokers that create
    nothing on open ignore it.
    """
    scheme = url.split("://", 1)[0].lower() if isinstance(url, str) and "://" in url else ""
    shown = mask_password(url) if isinstance(url, str) else url
    candidates = _registered().get(scheme) or _registered(fresh=True).get(scheme)
    if not candidates:
        raise BrokerURLError(
            f"broker URL {shown!r}: unknown scheme {scheme!r}; "
            f"known schemes are {', '.join(sorted(_registered()))}"
        )
    if len(candidates) > 1:
        claims = "; ".join(f"{ep.value!r} ({_source(ep)})" for ep in candidates)
        raise BrokerError(
            f"broker URL {shown!r}: scheme {scheme}:// is registered by more than one "
            f"broker in the entry-point group {ENTRY_POINT_GROUP!r}: {claims}; "
            "uninstall all but one"
        )
    return _opener(candidates[0], scheme, shown)(url, create=create)
