"""wireframe: assemble a long-running trio service from typed wiring layers.

The core lives in :mod:`wireframe.service` and is re-exported here, whole; the
job queue runtime is :mod:`wireframe.jobs`; the ``wireframe`` command is
:mod:`wireframe.cli`.
"""

from wireframe import service
from wireframe.service import *  # noqa: F403 - the core's public names, as service.__all__ lists them

__version__ = "0.1.0"

__all__ = ["__version__"]
__all__ += service.__all__
