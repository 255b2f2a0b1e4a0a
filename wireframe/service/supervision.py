"""Restart policies: a task that raises is started again instead of stopping the service.

A long-running service should not stop because a consumer lost its connection
for a second. A task that carries ``restart = wf.RestartPolicy(...)`` (as a
class or instance attribute) is started again after a backoff when it raises;
the backoff doubles with each failure still inside the policy's ``window``, up
to ``max_backoff``. More than ``max_restarts`` failures within ``window``
seconds and the task fails for good, stopping the service as any failing task
does. The stop signal ends a task waiting in its backoff at once (reported
"stopped", not failed).

Every kind may carry a policy — the attribute is how a task says it wants to be
restarted. A precondition with one keeps the barrier closed while it restarts;
a oneshot with one is run again until it returns. Without the attribute (the
default for every kind) nothing changes: the first exception stops the service.

Only exceptions restart a task: cancellation and ``BaseException``\\ s such as
``KeyboardInterrupt`` never do.
"""

from __future__ import annotations

import math
from collections import deque

import attrs

__all__ = ["RestartPolicy", "Restarts"]


def _finite_non_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"RestartPolicy {attribute.name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"RestartPolicy {attribute.name} must be a finite number >= 0, got {value!r}"
        )


def _count(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"RestartPolicy {attribute.name} must be an int >= 0, got {value!r}")


@attrs.frozen
class RestartPolicy:
    """How often and how soon a failing task is started again.

    ``max_restarts`` failures are forgiven within any ``window`` seconds; the
    next one stops the service, failed. The first restart waits ``backoff``
    seconds, each further failure within the window doubles it, up to
    ``max_backoff``. ``RestartPolicy(max_restarts=0)`` restarts nothing (the
    same as no policy).
    """

    max_restarts: int = attrs.field(default=5, validator=_count)
    window: float = attrs.field(default=60.0, validator=_finite_non_negative)
    backoff: float = attrs.field(default=1.0, validator=_finite_non_negative)
    max_backoff: float = attrs.field(default=30.0, validator=_finite_non_negative)

    def __attrs_post_init__(self) -> None:
        if self.max_backoff < self.backoff:
            raise ValueError(
                f"RestartPolicy max_backoff ({self.max_backoff!r}) must be >= backoff "
                f"({self.backoff!r})"
            )


@attrs.define
class Restarts:
    """One task's restart bookkeeping: the failures still inside the policy's window."""

    policy: RestartPolicy
    count: int = 0
    _recent: deque[float] = attrs.field(factory=deque)

    def failed(self, now: float) -> float | None:
        """Record a failure at ``now``; the delay before the restart, or None to give up."""
        recent = self._recent
        while recent and recent[0] <= now - self.policy.window:
            recent.popleft()
        recent.append(now)
        if len(recent) > self.policy.max_restarts:
            return None
        self.count += 1
        delay: float = self.policy.backoff * 2.0 ** (len(recent) - 1)
        return min(self.policy.max_backoff, delay)


def restart_policy_of(task: object) -> RestartPolicy | None:
    """The task's ``restart`` attribute, checked: a policy, None, or a TypeError naming the task."""
    policy = getattr(task, "restart", None)
    if policy is None or isinstance(policy, RestartPolicy):
        return policy
    raise TypeError(
        f"task {getattr(task, 'id', task)!r} has restart={policy!r}; "
        "it must be a wf.RestartPolicy or None"
    )
