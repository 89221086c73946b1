"""The seam between the router and whatever runs replicas.

The process backend, the Ray backend and the simulator's fake all satisfy
:class:`ReplicaBackend`; the router only ever talks to this protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Protocol

from swell.config import ModelConfig
from swell.modelserver import OTLP_ENDPOINT_ENV


class ReplicaState(str, Enum):
    PENDING = "pending"  # waiting for resources
    STARTING = "starting"  # process spawned, server not accepting yet
    LOADING = "loading"  # accepting; Model.load() running
    READY = "ready"
    DRAINING = "draining"  # takes no new request; stops when in-flight work is done
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def alive(self) -> bool:
        return self in (ReplicaState.PENDING, ReplicaState.STARTING, ReplicaState.LOADING, ReplicaState.READY)


def tracing_env(otlp_endpoint: str | None, declared: Mapping[str, str] | None = None) -> dict[str, str]:
    """A replica's environment for tracing (``swell serve --otlp-endpoint``; empty when off):
    the replica traces its model calls, and model code's own OTLP exporter finds the
    collector, unless the package's ``environment_variables`` (``declared``) name another."""
    if not otlp_endpoint:
        return {}
    env = {OTLP_ENDPOINT_ENV: otlp_endpoint, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint}
    return {name: value for name, value in env.items() if name not in (declared or {})}


@dataclass(frozen=True)
class ReplicaSpec:
    """What to run: one deployment's package, its config and its environment."""

    deployment_id: str
    package_dir: Path
    config: ModelConfig
    python: str  # interpreter (a per-deployment venv when it has requirements)
    env: Mapping[str, str] = field(default_factory=dict)
    secrets_dir: Path | None = None


@dataclass
class Replica:
    """A replica as the backend reports it; mutated only by the backend."""

    id: str
    deployment_id: str
    state: ReplicaState = ReplicaState.PENDING
    address: str = ""  # "unix:/path/to.sock" or "http://HOST:PORT"
    error: str | None = None  # why it failed (traceback tail), if it did
    created_at: float = 0.0  # monotonic seconds
    ready_at: float | None = None
    load_seconds: float | None = None  # the model's own load() time, as the replica reports it
    pid: int | None = None
    # Cold-start bookkeeping (see swell/serving/_cold_start.py): monotonic
    # times of "spawned" (the process exists) and "live" (its server accepts),
    # the seconds the replica spent fetching weights, and how it was started.
    marks: dict[str, float] = field(default_factory=dict)
    weights_seconds: float | None = None
    start_mode: str = ""  # "prewarmed" (from the standby pool), "forked" or "spawned"
    # Bumped on every sign of life while it starts and loads (an event on its
    # pipe, bytes of weights fetched, a line in its log): the controller fails
    # a load that makes no progress, not one that is merely slow.
    progress: int = 0
    reason: str | None = None  # why it is pending (waiting for CPU, memory or a GPU)
    node: str | None = None  # where it runs, when that is not this machine (a Ray node)
    token: str | None = None  # what the router sends it (x-swell-replica-token), if it asks for one
    # What it holds of its node (pending: asks for), in Ray's names: "CPU", "memory"
    # (bytes), "GPU", custom ones; empty where its package asks for nothing.
    holds: dict[str, float] = field(default_factory=dict)


#: Called by the backend on every state change, on the event loop.
StateCallback = Callable[[Replica], None]


def report_state(replica: Replica, state: ReplicaState, on_change: StateCallback) -> None:
    """Set ``replica``'s state and tell ``on_change``; a failing callback is logged, never raised
    into the backend's own bookkeeping (a half-applied transition would be worse)."""
    replica.state = state
    try:
        on_change(replica)
    except Exception:
        logging.getLogger("swell.serving").exception("state callback failed for replica %s", replica.id)


class CapacityView(Protocol):
    """A backend that can say what is free, so that capacity pressure
    (``serving/_capacity.py``) can stop idle replicas for one that waits."""

    def free_resources(self) -> dict[str, dict[str, float]] | None:
        """What each node has free now, by resource (node ``""``: this machine); ``None``: not known."""
        ...

    def place_first(self, replica: Replica) -> None:
        """Room that frees goes to this pending replica before those that asked earlier
        (it is the one others are being stopped for); a no-op where the backend does not choose."""
        ...


class ReplicaBackend(Protocol):
    async def start(self, spec: ReplicaSpec, on_change: StateCallback) -> Replica:
        """Begin starting a replica; return at once (state STARTING or PENDING).

        Later transitions (LOADING, READY, FAILED, STOPPED when the process
        exits on its own) are reported through ``on_change``.
        """
        ...

    async def stop(self, replica: Replica, grace_seconds: float) -> None:
        """SIGTERM (finish in-flight, exit), then SIGKILL after the grace period."""
        ...

    def list(self) -> list[Replica]: ...

    async def close(self) -> None:
        """Stop every replica; used at server shutdown."""
        ...
