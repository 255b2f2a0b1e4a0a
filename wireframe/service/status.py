"""The one resource every service gives itself: a read-only view of its own status.

A health endpoint or a metrics exporter needs to see the service it runs in,
but a layer only sees what other layers give it. So the service gives one
resource itself: take ``status: wf.ServiceStatus`` like any other resource and
read the live :class:`~wireframe.service.report.ServiceReport` from it. No layer
may give this type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from wireframe.service.report import ServiceReport

if TYPE_CHECKING:
    from wireframe.service.health import HealthCheck

__all__ = ["BUILT_IN", "Observed", "ServiceStatus"]

#: The provider name the wiring plan shows for resources the service gives itself.
BUILT_IN = "(the service)"


class Observed(Protocol):
    """What a status view reads of a service (``Service`` and ``ServiceStatus`` both are one)."""

    @property
    def phase(self) -> str: ...

    @property
    def barrier_open(self) -> bool: ...

    @property
    def health_checks(self) -> tuple[HealthCheck, ...]: ...

    def status(self) -> ServiceReport: ...


class ServiceStatus:
    """A live, read-only view of the running service, for health and metrics tasks."""

    __slots__ = ("_service",)

    def __init__(self, service: Observed) -> None:
        self._service = service

    @property
    def phase(self) -> str:
        """``wiring``, ``running``, ``stopping``, ``shutting_down`` or ``done``."""
        return self._service.phase

    @property
    def barrier_open(self) -> bool:
        """Whether every precondition has returned."""
        return self._service.barrier_open

    @property
    def health_checks(self) -> tuple[HealthCheck, ...]:
        """The health checks the service's layers gave."""
        return self._service.health_checks

    def status(self) -> ServiceReport:
        """The same as :meth:`report` (so a ServiceStatus can stand for its service)."""
        return self._service.status()

    def report(self) -> ServiceReport:
        """A snapshot of every task's state (what ``Service.status()`` returns)."""
        return self._service.status()

    def __repr__(self) -> str:
        return f"<ServiceStatus {self.phase}>"
