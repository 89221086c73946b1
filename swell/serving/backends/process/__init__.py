"""Replicas as local OS processes (``python -m swell.modelserver``)."""

from swell.serving.backends.process._backend import ProcessBackend

__all__ = ["ProcessBackend"]
