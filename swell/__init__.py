"""Swell: self-hostable model serving built around autoscaling."""

__version__ = "0.1.0"
