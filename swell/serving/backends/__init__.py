"""Backends that run replicas; each satisfies :class:`swell.serving.ReplicaBackend`."""

from swell.serving.backends.process import ProcessBackend

__all__ = ["ProcessBackend"]
