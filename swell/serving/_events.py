"""What the control loop tells the operator: a narrow sink it is given at construction.

The controller calls :meth:`EventSink.record` for every decision it acts on and
every replica start, ready, drain and failure; what keeps them (the control
plane's store, a test's list) is the sink's business.  ``record`` must not
block: the store is written behind it.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["EventSink", "NullSink"]


class EventSink(Protocol):
    def record(self, deployment_id: str, kind: str, message: str, **fields: Any) -> None:
        """One event of ``deployment_id``: ``kind`` (e.g. ``scale_up``), a sentence, and details."""


class NullSink:
    """Keeps nothing (a controller built without a sink)."""

    def record(self, deployment_id: str, kind: str, message: str, **fields: Any) -> None:
        pass
