"""Throughput over the last minutes, sampled from the broker's counts and kept in memory.

A broker keeps counts, not history: ``stats()`` says how many messages of a
queue are done or dead now. The dashboard samples those counts every few
seconds (one ``stats`` call, however many browsers watch) and keeps the last
:data:`WINDOW` seconds of samples, so a rate is the difference of two samples
over their interval. Nothing is written back to the broker; a restart of the
dashboard starts an empty chart. A count that went down (a ``purge``) starts
the series afresh instead of showing a negative rate.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Sequence

import attrs

from wireframe.jobs.broker import QueueStats

__all__ = ["WINDOW", "Chart", "Rates"]

#: Seconds of samples kept (and shown).
WINDOW = 600.0


@attrs.frozen
class Chart:
    """One queue's rate series, ready to draw as an SVG polyline (``points``)."""

    queue: str
    points: str  # "x,y x,y ..." in a 0..width x 0..height box, y down
    latest: float  # finished jobs per second over the last interval
    peak: float  # the highest rate in the window (the chart's full height)


@attrs.define
class Rates:
    """Samples of each queue's finished count (done + dead) at monotonic times."""

    window: float = WINDOW
    _samples: dict[str, collections.deque[tuple[float, int]]] = attrs.field(factory=dict)

    def add(self, now: float, stats: Sequence[QueueStats]) -> None:
        """Record a sample of ``stats`` taken at ``now`` (seconds, monotonic)."""
        for s in stats:
            series = self._samples.setdefault(s.queue, collections.deque())
            finished = s.done + s.dead
            if series and finished < series[-1][1]:
                series.clear()  # purged: the count went down
            series.append((now, finished))
            while series and series[0][0] < now - self.window:
                series.popleft()

    def per_second(self, queue: str) -> list[tuple[float, float]]:
        """(time, rate) for each interval between two samples of ``queue``."""
        series = list(self._samples.get(queue, ()))
        return [
            (t1, (n1 - n0) / (t1 - t0))
            for (t0, n0), (t1, n1) in itertools.pairwise(series)
            if t1 > t0
        ]

    def chart(self, queue: str, now: float, width: int = 240, height: int = 40) -> Chart:
        """``queue``'s series as a polyline over the window ending at ``now``."""
        rates = self.per_second(queue)
        peak = max((r for _, r in rates), default=0.0)
        scale = peak if peak > 0 else 1.0
        points = " ".join(
            f"{width * (1 - (now - t) / self.window):.1f},{height * (1 - r / scale):.1f}"
            for t, r in rates
        )
        return Chart(queue, points, rates[-1][1] if rates else 0.0, peak)
