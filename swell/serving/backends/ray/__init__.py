"""Replicas on a Ray cluster (``swell serve --backend ray``): docs/cluster.md.

Importing this package does not import Ray; the backend does at its first use.
"""

from swell.serving.backends.ray._backend import RayBackend

__all__ = ["RayBackend"]
