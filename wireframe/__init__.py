"""wireframe: assemble a long-running trio service from typed wiring layers.

The core lives in :mod:`wireframe.service` and is re-exported here; the job
queue runtime is :mod:`wireframe.jobs`; the ``wireframe`` command is
:mod:`wireframe.cli`.
"""

from wireframe.service import (
    ErrorInfo,
    HookReport,
    LayerNode,
    OneshotTask,
    Port,
    PortRole,
    Precondition,
    ResourceAlreadyProvided,
    ResourceTaken,
    Service,
    ServiceBuilder,
    ServiceError,
    ServiceReport,
    ShutdownHook,
    StopReceiver,
    Task,
    TaskKind,
    TaskReport,
    TaskState,
    UnconstrainedOneshotTask,
    UnconstrainedTask,
    Unique,
    WiringError,
    WiringLayer,
    WiringPlan,
    WiringProblem,
    plan_wiring,
    run,
    task,
)

__version__ = "0.1.0"

__all__ = [
    "ErrorInfo",
    "HookReport",
    "LayerNode",
    "OneshotTask",
    "Port",
    "PortRole",
    "Precondition",
    "ResourceAlreadyProvided",
    "ResourceTaken",
    "Service",
    "ServiceBuilder",
    "ServiceError",
    "ServiceReport",
    "ShutdownHook",
    "StopReceiver",
    "Task",
    "TaskKind",
    "TaskReport",
    "TaskState",
    "UnconstrainedOneshotTask",
    "UnconstrainedTask",
    "Unique",
    "WiringError",
    "WiringLayer",
    "WiringPlan",
    "WiringProblem",
    "__version__",
    "plan_wiring",
    "run",
    "task",
]
