"""Deployment status and scale-down choice: pure functions of what is true now."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import Enum
from typing import Protocol, TypeVar

from swell.serving._backend import ReplicaState

__all__ = ["BuildState", "DeploymentStatus", "deployment_status", "scale_down_choice"]


class DeploymentStatus(str, Enum):
    """Shown to users exactly as DESIGN.md spells it."""

    SCALED_TO_ZERO = "Scaled to zero"
    WAKING_UP = "Waking up"
    LOADING_MODEL = "Loading model"
    ACTIVE = "Active"
    BUILDING = "Building"
    UNHEALTHY = "Unhealthy"
    FAILED = "Failed"
    INACTIVE = "Inactive"


class BuildState(str, Enum):
    BUILDING = "building"
    BUILT = "built"
    FAILED = "failed"


_STARTING = (ReplicaState.PENDING, ReplicaState.STARTING)


def deployment_status(
    *,
    build: BuildState = BuildState.BUILT,
    active: bool = True,
    replicas: Iterable[ReplicaState] = (),
    pending_starts: int = 0,
    load_failing: bool = False,
    crash_looping: bool = False,
) -> DeploymentStatus:
    """Derive a deployment's status from its build, its flag and its replicas.

    ``replicas`` are the states of the replicas that serve or will serve (not
    the draining ones); ``pending_starts`` counts starts asked of the backend
    that have not returned a replica yet; ``load_failing`` says the last
    replica failed to load and none has become ready since; ``crash_looping``
    says replicas died soon after becoming ready and none has served long
    since: with no replica ready that is ``Unhealthy`` even while a
    replacement starts (it is expected to die as well).
    """
    if not active:
        return DeploymentStatus.INACTIVE
    if build is BuildState.BUILDING:
        return DeploymentStatus.BUILDING
    if build is BuildState.FAILED:
        return DeploymentStatus.FAILED
    states = list(replicas)
    if ReplicaState.READY in states:
        return DeploymentStatus.ACTIVE
    if crash_looping:
        return DeploymentStatus.UNHEALTHY
    if ReplicaState.LOADING in states:
        return DeploymentStatus.LOADING_MODEL
    if pending_starts or any(s in _STARTING for s in states):
        return DeploymentStatus.WAKING_UP
    if load_failing:
        return DeploymentStatus.UNHEALTHY
    return DeploymentStatus.SCALED_TO_ZERO


class _Candidate(Protocol):
    @property
    def ready(self) -> bool: ...

    @property
    def in_flight(self) -> int: ...


_T = TypeVar("_T", bound="_Candidate")


def scale_down_choice(candidates: Sequence[_T], count: int) -> list[_T]:
    """Which replicas to remove: not ready first, then the least loaded.

    Among equals the newest goes first (furthest from ready, coldest caches).
    """
    if count <= 0:
        return []
    order = sorted(range(len(candidates)), key=lambda i: (candidates[i].ready, candidates[i].in_flight, -i))
    return [candidates[i] for i in order[:count]]
