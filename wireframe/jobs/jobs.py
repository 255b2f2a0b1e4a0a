"""Where :class:`JobResult` used to live; it is :mod:`wireframe.jobs.codec`'s now.

Kept only so that code importing it from here (``wireframe/jobs/worker.py``,
being edited on another branch) keeps working; delete it once nothing does.
"""

from wireframe.jobs.codec import JobResult

__all__ = ["JobResult"]
