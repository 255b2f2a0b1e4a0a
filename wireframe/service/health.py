"""Health checks, and what "live" and "ready" mean for a service.

A load balancer or an orchestrator (a Kubernetes probe) asks two questions:

* **live** — is the process answering at all? If not, restart it. The event
  loop answering a request is the whole test: a check that can fail for a
  reason a restart does not fix (the database is down) must not be a liveness
  check, or every replica restarts at once.
* **ready** — should traffic come here now? The service is running (not still
  wiring, not stopping), the precondition barrier is open, no task has failed,
  and every :class:`HealthCheck` passes within its timeout.

Any layer gives health checks as output fields (``check: wf.HealthCheck`` or a
list of them), as it gives tasks; the service collects them and
:func:`readiness` runs them, concurrently, each under its own timeout (a check
that hangs marks itself failing; the answer still comes).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from wireframe.service.report import ServiceReport, TaskState, describe

if TYPE_CHECKING:
    from wireframe.service.status import Observed

__all__ = ["CheckResult", "HealthCheck", "MetricsExposition", "Readiness", "readiness"]


def _check_name(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise ValueError(
            f"HealthCheck name must be a non-empty string of <= 200 chars, got {value!r}"
        )


def _check_timeout(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"HealthCheck timeout must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"HealthCheck timeout must be a finite number > 0 seconds, got {value!r}")


@attrs.frozen
class HealthCheck:
    """A named readiness check: ``check`` is an async callable that raises when unhealthy.

    Give one (or a list) as an output field of any layer. ``timeout`` bounds
    one run of the check: a check still running then counts as failing.
    """

    name: str = attrs.field(validator=_check_name)
    check: Callable[[], Awaitable[Any]]
    timeout: float = attrs.field(default=5.0, validator=_check_timeout)


@attrs.frozen
class CheckResult:
    """One check's outcome: ``error`` is None when it passed."""

    name: str
    error: str | None
    seconds: float

    @property
    def ok(self) -> bool:
        """Whether the check passed."""
        return self.error is None


@attrs.frozen
class Readiness:
    """The answer to "should traffic come here now?", with every reason it should not."""

    ready: bool
    reasons: tuple[str, ...]
    checks: tuple[CheckResult, ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: ``ready``, ``reasons`` and each check's ``ok``/``error``/``seconds``."""
        return {
            "ready": self.ready,
            "reasons": list(self.reasons),
            "checks": {
                c.name: {"ok": c.ok, "error": c.error, "seconds": round(c.seconds, 6)}
                for c in self.checks
            },
        }


class MetricsExposition(Protocol):
    """A resource that renders metrics as Prometheus text (given by the telemetry layer)."""

    def prometheus_text(self) -> tuple[bytes, str]:
        """The exposition body and its content type."""
        ...


async def _run_check(check: HealthCheck, results: list[CheckResult]) -> None:
    started = time.perf_counter()
    error: str | None = None
    with trio.move_on_after(check.timeout) as scope:
        try:
            await check.check()
        except Exception as exc:
            error = describe(exc)
    if scope.cancelled_caught:
        error = f"did not answer within {check.timeout:g} s"
    results.append(CheckResult(check.name, error, time.perf_counter() - started))


async def readiness(service: Observed) -> Readiness:
    """Whether ``service`` is ready, running its health checks concurrently."""
    reasons: list[str] = []
    phase = service.phase
    if phase != "running":
        reasons.append(f"the service is {phase.replace('_', ' ')}, not running")
    elif not service.barrier_open:
        reasons.append("preconditions have not all returned")
    for task in service.status().tasks.values():
        if task.state is TaskState.FAILED or task.state is TaskState.TIMED_OUT:
            reasons.append(f"task {task.id!r} {task.state.value}")
    results: list[CheckResult] = []
    checks = service.health_checks
    if checks:
        async with trio.open_nursery() as nursery:
            for check in checks:
                nursery.start_soon(_run_check, check, results)
    order = {c.name: i for i, c in enumerate(checks)}
    results.sort(key=lambda r: order.get(r.name, 0))
    reasons += [f"check {r.name!r} failed: {r.error}" for r in results if not r.ok]
    return Readiness(not reasons, tuple(reasons), tuple(results))


def status_json(report: ServiceReport, phase: str) -> dict[str, Any]:
    """The service's status as a JSON-ready dict, times as wall-clock UNIX seconds.

    A report's times are trio clock readings; they are shifted by the offset
    between the wall clock and trio's clock now.
    """
    offset = time.time() - trio.current_time()

    def wall(reading: float | None) -> float | None:
        return None if reading is None else round(reading + offset, 3)

    def error(info: Any) -> dict[str, str] | None:
        return None if info is None else {"type": info.type, "message": info.message}

    tasks: Mapping[str, Any] = {
        t.id: {
            "kind": t.kind.value,
            "layer": t.layer,
            "state": t.state.value,
            "started_at": wall(t.started_at),
            "ended_at": wall(t.ended_at),
            "error": error(t.error),
            "restarts": t.restarts,
            "last_error": error(t.last_error),
        }
        for t in report.tasks.values()
    }
    return {
        "phase": phase,
        "ok": report.ok,
        "stop_reason": report.stop_reason,
        "started_at": wall(report.started_at),
        "tasks": tasks,
    }
