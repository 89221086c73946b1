"""What every part of the control plane works on, and the base that hands it to each part.

The records live in one :class:`Registry` (in memory, written through to the
:class:`Store`); replicas are the :class:`Controller`'s.  One lock serialises
every change (last write wins, nothing torn), whichever part makes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from swell.autoscaling import Clock
from swell.config import ServerSettings
from swell.control._events import EventLog
from swell.control._registry import Registry
from swell.control._store import Store
from swell.serving import Controller

__all__ = ["Part", "Shared"]


@dataclass(frozen=True)
class Shared:
    settings: ServerSettings
    registry: Registry
    store: Store
    controller: Controller
    events: EventLog  # what happened to each deployment, for `swell logs` and the events route
    clock: Clock  # the control loop's time
    wall: Callable[[], float]  # records' timestamps and idle times: survives restarts
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def data_dir(self) -> Path:
        return Path(self.settings.data_dir)


class Part:
    """A part of the plane: the shared things under their usual names."""

    def __init__(self, shared: Shared) -> None:
        self.settings = shared.settings
        self.data_dir = shared.data_dir
        self.registry = shared.registry
        self.store = shared.store
        self.controller = shared.controller
        self.events = shared.events
        self.clock = shared.clock
        self.wall = shared.wall
        self._lock = shared.lock
