"""Retry policies for :class:`~wireframe.jobs.errors.Transient` failures.

A policy is pure arithmetic on the attempt number, so the worker needs no clock
to decide: ``delay_before(attempt)`` is the backoff before attempt ``attempt``
(2 is the first retry), or ``None`` when the policy gives up.
"""

from __future__ import annotations

import math

import attrs

__all__ = ["RetryPolicy"]


def _non_negative(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(
            f"RetryPolicy.{attribute.name} must be a finite number >= 0, not {value!r}"
        )


@attrs.frozen
class RetryPolicy:
    """How often and how late to retry: at most ``max_attempts`` runs in total.

    The delay before retry ``k`` (k = 1, 2, ...) is ``delay * factor**(k-1)``
    capped at ``max_delay``; ``budget`` caps the sum of all delays (seconds,
    ``None`` = no cap). Use the constructors :meth:`immediate`, :meth:`fixed`
    and :meth:`exponential`.
    """

    max_attempts: int = attrs.field(default=3)
    delay: float = attrs.field(default=0.0, validator=_non_negative)
    factor: float = attrs.field(default=1.0, validator=_non_negative)
    max_delay: float = attrs.field(default=math.inf)
    budget: float | None = None

    @max_attempts.validator
    def _check_attempts(self, _: object, value: int) -> None:
        if value < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be at least 1, not {value!r}")

    @classmethod
    def immediate(cls, max_attempts: int = 3) -> RetryPolicy:
        """Retry at once, up to ``max_attempts`` runs in total."""
        return cls(max_attempts=max_attempts)

    @classmethod
    def fixed(cls, delay: float, max_attempts: int = 3) -> RetryPolicy:
        """Retry after the same ``delay`` each time."""
        return cls(max_attempts=max_attempts, delay=delay)

    @classmethod
    def exponential(
        cls,
        initial: float,
        *,
        factor: float = 2.0,
        max_delay: float = math.inf,
        max_attempts: int = 5,
        budget: float | None = None,
    ) -> RetryPolicy:
        """Retry after ``initial``, then ``initial*factor``, ... capped at ``max_delay``,
        with the sum of delays at most ``budget``."""
        return cls(
            max_attempts=max_attempts,
            delay=initial,
            factor=factor,
            max_delay=max_delay,
            budget=budget,
        )

    def _raw(self, retry: int) -> float:
        return min(self.delay * self.factor ** (retry - 1), self.max_delay)

    def delay_before(self, attempt: int) -> float | None:
        """Seconds to wait before running attempt ``attempt`` (>= 2), or ``None``: give up."""
        if attempt > self.max_attempts or attempt < 2:
            return None
        delay = self._raw(attempt - 1)
        if self.budget is not None:
            spent = sum(self._raw(k) for k in range(1, attempt))
            if spent > self.budget:
                return None
        return delay


#: The policy used when ``Transient`` is raised without one.
DEFAULT_RETRY = RetryPolicy.exponential(0.1, max_delay=5.0, max_attempts=3)
