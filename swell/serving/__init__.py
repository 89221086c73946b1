"""Router, replica lifecycle and backends."""


from swell.serving._backend import (
    Replica,
    ReplicaBackend,
    ReplicaSpec,
    ReplicaState,
    StateCallback,
    tracing_env,
)
from swell.serving._controller import Controller
from swell.serving._deployment import (
    DeploymentCondition,
    DeploymentSpec,
    ReplicaRecord,
    ScaledDeployment,
)
from swell.serving._events import EventSink, NullSink
from swell.serving._http_client import ReplicaGone, ReplicaPool
from swell.serving._logs import LogCapture, LogFollower, LogLimits, LogLine, ReplicaLogs
from swell.serving._metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from swell.serving._metrics import MetricFamily, render_metrics
from swell.serving._router import (
    DeploymentRouter,
    ReplicaHandle,
    Supervisor,
    Tracing,
    Unavailable,
)
from swell.serving._status import (
    BuildState,
    DeploymentStatus,
    deployment_status,
    scale_down_choice,
)


def otlp_tracing(endpoint: str) -> Tracing:
    """The router's request spans, sent to the OTLP/HTTP collector at ``endpoint`` (its base URL).

    opentelemetry is imported here, never when tracing is off (docs/observability.md)."""
    from swell.serving._tracing import otlp_tracing as make

    return make(endpoint)


__all__ = [
    "METRICS_CONTENT_TYPE",
    "BuildState",
    "Controller",
    "DeploymentCondition",
    "DeploymentRouter",
    "DeploymentSpec",
    "DeploymentStatus",
    "EventSink",
    "LogCapture",
    "LogFollower",
    "LogLimits",
    "LogLine",
    "MetricFamily",
    "NullSink",
    "Replica",
    "ReplicaBackend",
    "ReplicaGone",
    "ReplicaHandle",
    "ReplicaLogs",
    "ReplicaPool",
    "ReplicaRecord",
    "ReplicaSpec",
    "ReplicaState",
    "ScaledDeployment",
    "StateCallback",
    "Supervisor",
    "Tracing",
    "Unavailable",
    "deployment_status",
    "otlp_tracing",
    "render_metrics",
    "scale_down_choice",
    "tracing_env",
]
