"""Control plane: models, deployments and environments, API keys, the server's HTTP surface."""

from swell.control._app import SwellApp, create_app
from swell.control._errors import ApiError
from swell.control._keys import ApiKeys
from swell.control._lifecycle import PushResult
from swell.control._plane import ControlPlane
from swell.control._registry import (
    DeploymentKind,
    DeploymentRecord,
    ModelRecord,
    NotFound,
    Registry,
)

__all__ = [
    "ApiError",
    "ApiKeys",
    "ControlPlane",
    "DeploymentKind",
    "DeploymentRecord",
    "ModelRecord",
    "NotFound",
    "PushResult",
    "Registry",
    "SwellApp",
    "create_app",
]
