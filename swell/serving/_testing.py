"""A scriptable in-memory :class:`ReplicaBackend` for tests of the router and the loop,
and a :class:`Supervisor` that records what a router tells it."""

from __future__ import annotations

import builtins

from swell.config import AutoscalingSettings
from swell.serving._backend import Replica, ReplicaSpec, ReplicaState, StateCallback
from swell.serving._router import ReplicaHandle

__all__ = ["FakeBackend", "FakeSupervisor"]


class FakeSupervisor:
    """A router's owner for tests of the router alone: status set by the test, news kept."""

    def __init__(self, spec: ReplicaSpec, settings: AutoscalingSettings | None = None) -> None:
        self.settings = settings or AutoscalingSettings()
        self.replica_spec = spec
        self.pending_starts = 0
        self.unavailable: str | None = None
        self.cold_start_estimate: float | None = None
        self.woken: list[int] = []  # the demand of each wake
        self.broken_ids: list[str] = []
        self.drained_ids: list[str] = []

    def wake(self, demand: int = 0) -> None:
        self.woken.append(demand)

    def broken(self, handle: ReplicaHandle) -> None:
        self.broken_ids.append(handle.id)

    def drained(self, handle: ReplicaHandle) -> None:
        self.drained_ids.append(handle.id)


class FakeBackend:
    """Starts nothing: replicas change state only when a test says so."""

    def __init__(self) -> None:
        self.replicas: dict[str, Replica] = {}
        self._callbacks: dict[str, StateCallback] = {}
        self.started: list[Replica] = []
        self.stopped: list[str] = []
        self.closed = False
        self.fail_start: Exception | None = None
        # Like the process backend when it cannot spawn: start returns a FAILED
        # replica with this error, and no callback ever follows.
        self.spawn_error: str | None = None

    async def start(self, spec: ReplicaSpec, on_change: StateCallback) -> Replica:
        if self.fail_start is not None:
            raise self.fail_start
        replica = Replica(id=f"r{len(self.started)}", deployment_id=spec.deployment_id, state=ReplicaState.STARTING)
        if self.spawn_error is not None:
            replica.state = ReplicaState.FAILED
            replica.error = self.spawn_error
            self.started.append(replica)
            return replica
        self.replicas[replica.id] = replica
        self._callbacks[replica.id] = on_change
        self.started.append(replica)
        return replica

    def set_state(
        self, replica_id: str, state: ReplicaState, *, address: str | None = None, error: str | None = None
    ) -> Replica:
        replica = self.replicas[replica_id]
        replica.state = state
        if address is not None:
            replica.address = address
        if error is not None:
            replica.error = error
        self._callbacks[replica_id](replica)
        return replica

    def ready(self, replica_id: str, address: str = "unix:/nonexistent/replica.sock") -> Replica:
        return self.set_state(replica_id, ReplicaState.READY, address=address)

    async def stop(self, replica: Replica, grace_seconds: float) -> None:
        self.stopped.append(replica.id)
        if replica.state.alive or replica.state is ReplicaState.DRAINING:
            replica.state = ReplicaState.STOPPED
            self._callbacks[replica.id](replica)

    def list(self) -> builtins.list[Replica]:
        return [r for r in self.replicas.values() if r.state.alive]

    def alive(self, deployment_id: str | None = None) -> builtins.list[Replica]:
        return [r for r in self.list() if deployment_id is None or r.deployment_id == deployment_id]

    async def close(self) -> None:
        self.closed = True
        for replica in self.list():
            await self.stop(replica, 0)
