"""Backends that run replicas; each satisfies :class:`swell.serving.ReplicaBackend`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from swell.serving._logs import LogLimits  # inside swell.serving
from swell.serving.backends.process import ProcessBackend, remove_leftovers

if TYPE_CHECKING:
    from swell.config import ServerSettings

__all__ = ["ProcessBackend", "make_backend"]


def make_backend(settings: ServerSettings) -> Any:
    """The backend ``swell serve`` runs with (``settings.backend``); Ray is imported only for "ray"."""
    if settings.backend == "ray":
        from swell.serving.backends.ray import RayBackend

        return RayBackend(
            settings.ray_address,
            standbys=settings.pool_size if settings.fork_server else 0,
            log_dir=settings.data_dir / "logs",
            log_limits=LogLimits(settings.replica_log_bytes, settings.deployment_log_bytes),
        )
    remove_leftovers()  # of servers killed before they could clean up
    return ProcessBackend(
        log_dir=settings.data_dir / "logs",
        warm_start=settings.fork_server,
        prewarm_modules=settings.prewarm_modules,
        pool_size=settings.pool_size,
        cpu_overcommit=settings.cpu_overcommit,
        log_limits=LogLimits(settings.replica_log_bytes, settings.deployment_log_bytes),
    )
