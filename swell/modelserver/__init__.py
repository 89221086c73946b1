"""What runs inside one replica: hosts a Truss model package as the Truss server does.

Launch with ``python -m swell.modelserver --model-dir DIR``; see ``main`` for the
environment it reads. Heavy modules (uvicorn, the app) load only when ``main`` runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from swell.lazy import lazy_attributes
from swell.modelserver._otlp import OTLP_ENDPOINT_ENV

if TYPE_CHECKING:
    from swell.modelserver._build import (
        BuildCommandError,
        BuildLayout,
        build_site_packages,
        check_build_commands,
        ensure_build,
    )
    from swell.modelserver._config import load_truss_config
    from swell.modelserver._environment import (
        RequirementsInstallError,
        ensure_environment,
    )
    from swell.modelserver._node import ReplicaActor

# The server's side of this package (building environments, the Ray actor) is
# imported on first use: a replica imports this package too, and pays in memory
# and cold start for every module loaded here.
_LAZY: dict[str, str] = {
    "BuildCommandError": "swell.modelserver._build",
    "BuildLayout": "swell.modelserver._build",
    "build_site_packages": "swell.modelserver._build",
    "check_build_commands": "swell.modelserver._build",
    "ensure_build": "swell.modelserver._build",
    "load_truss_config": "swell.modelserver._config",
    "RequirementsInstallError": "swell.modelserver._environment",
    "ensure_environment": "swell.modelserver._environment",
    "ReplicaActor": "swell.modelserver._node",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = [
    "OTLP_ENDPOINT_ENV",
    "BuildCommandError",
    "BuildLayout",
    "ReplicaActor",
    "RequirementsInstallError",
    "build_site_packages",
    "check_build_commands",
    "ensure_build",
    "ensure_environment",
    "load_truss_config",
    "main",
]


def main(argv: list[str] | None = None) -> int:
    """Serve the package in ``--model-dir`` until SIGTERM; returns the exit status.

    Environment: ``SWELL_REPLICA_SOCKET`` (serve on that Unix socket) or
    ``SWELL_REPLICA_PORT`` / ``INFERENCE_SERVER_PORT`` (default 8080) on
    ``SWELL_REPLICA_HOST`` (default 127.0.0.1); ``SWELL_EVENTS_FD`` (JSON lines:
    live, loading, weights_progress, weights_ready, ready, failed);
    ``SWELL_LIFELINE_FD`` (exit at once on EOF); ``SWELL_WEIGHTS_CACHE`` and
    ``SWELL_WEIGHTS_*`` (the weights cache and fetch settings, docs/weights.md);
    ``SWELL_SECRETS_DIR`` (default /secrets); ``NUM_LOAD_RETRIES_TRUSS`` (default 1);
    ``SWELL_REPLICA_TOKEN`` (every request must carry it in ``x-swell-replica-token``,
    else 401; for replicas on a network, such as the Ray backend's);
    ``SWELL_OTLP_ENDPOINT`` (trace each model call, exported there over OTLP/HTTP).
    """
    from swell.modelserver._server import main as _main

    return _main(argv)
