"""The lifecycle core: resources, wiring layers, tasks, the stop signal, the service and its report.

Nothing here knows about jobs, brokers or the CLI; they build on it.
"""

from wireframe.service.graph import (
    LayerNode,
    Port,
    PortRole,
    ResourceAlreadyProvided,
    WiringError,
    WiringPlan,
    WiringProblem,
    plan_wiring,
)
from wireframe.service.health import CheckResult, HealthCheck, MetricsExposition, Readiness
from wireframe.service.health_server import HealthEndpoint, HealthLayer
from wireframe.service.layers import ShutdownHook, WiringLayer
from wireframe.service.report import (
    ErrorInfo,
    HookReport,
    ServiceError,
    ServiceReport,
    TaskReport,
    TaskState,
)
from wireframe.service.resources import ResourceTaken, Unique
from wireframe.service.service import Service, ServiceBuilder, run
from wireframe.service.status import ServiceStatus
from wireframe.service.stop import StopReceiver, StopRequest
from wireframe.service.supervision import RestartPolicy
from wireframe.service.tasks import (
    OneshotTask,
    Precondition,
    Task,
    TaskKind,
    UnconstrainedOneshotTask,
    UnconstrainedTask,
    task,
)

__all__ = [
    "CheckResult",
    "ErrorInfo",
    "HealthCheck",
    "HealthEndpoint",
    "HealthLayer",
    "HookReport",
    "LayerNode",
    "MetricsExposition",
    "OneshotTask",
    "Port",
    "PortRole",
    "Precondition",
    "Readiness",
    "ResourceAlreadyProvided",
    "ResourceTaken",
    "RestartPolicy",
    "Service",
    "ServiceBuilder",
    "ServiceError",
    "ServiceReport",
    "ServiceStatus",
    "ShutdownHook",
    "StopReceiver",
    "StopRequest",
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
    "plan_wiring",
    "run",
    "task",
]
