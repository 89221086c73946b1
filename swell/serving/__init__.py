"""Router, replica lifecycle and backends."""

from swell.serving._backend import Replica, ReplicaBackend, ReplicaSpec, ReplicaState, StateCallback

__all__ = ["Replica", "ReplicaBackend", "ReplicaSpec", "ReplicaState", "StateCallback"]
