"""One deployment under the control loop: its spec, its status, and its router.

The controller owns both halves of a deployment's state, as Kubernetes splits
an object: :class:`DeploymentSpec` is what was asked for (autoscaling settings,
what each replica runs), :class:`DeploymentCondition` is what is true now
(starts under way, failures, why it cannot serve, each replica's start).  The
router reads what it needs of them through :class:`ScaledDeployment`, which
is the :class:`~swell.serving.Supervisor` it is built with, and sends its news
back the same way; nothing outside the controller writes either half.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from swell.autoscaling import (
    Clock,
    ConcurrencyWindow,
    Decision,
    Extras,
    ScalerState,
    TrafficHistory,
)
from swell.config import AutoscalingSettings, Resources
from swell.serving._backend import ReplicaSpec, ReplicaState
from swell.serving._cold_start import ColdStart, ColdStartHistograms
from swell.serving._router import DeploymentRouter, ReplicaHandle, Tracing
from swell.serving._status import BuildState, DeploymentStatus, deployment_status

__all__ = ["COLD_START_BUCKETS", "DeploymentCondition", "DeploymentSpec", "ReplicaRecord", "ScaledDeployment"]

_NO_EXTRAS = Extras()

COLD_START_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


@dataclass(frozen=True, slots=True)
class DeploymentSpec:
    """What was asked for: how the deployment scales and what each replica runs."""

    settings: AutoscalingSettings
    replica: ReplicaSpec

    @property
    def slots(self) -> int:
        """Requests one replica takes at once (``runtime.predict_concurrency``)."""
        return self.replica.config.runtime.predict_concurrency

    @property
    def resources(self) -> Resources:
        return self.replica.config.resources


@dataclass(slots=True)
class ReplicaRecord:
    """The controller's bookkeeping of one replica's start (the router keeps its slots)."""

    started_at: float  # when the controller first saw it out of pending (its clock)
    progress_seen: int  # the replica's progress counter at the last look ...
    progress_at: float  # ... and when it last changed (the controller's clock)
    ready_since: float | None = None  # when it became ready
    cold_start: ColdStart | None = None  # once ready: where its start went


@dataclass(slots=True)
class DeploymentCondition:
    """What is true now of a deployment, beyond its replicas' own states."""

    pending_starts: int = 0  # starts asked of the backend that have not returned a replica yet
    failures: int = 0  # consecutive replicas that failed before becoming ready
    retry_at: float = 0.0  # no new replica before this time (back-off)
    load_failing: bool = False
    crashes: int = 0  # consecutive replicas that died soon after becoming ready
    error: str | None = None
    unavailable: str | None = None  # answer 503 with this while no replica serves
    cold_start_estimate: float | None = None  # the last replica's start to ready (s)
    replicas: dict[str, ReplicaRecord] = field(default_factory=dict)

    def clear_failures(self) -> None:
        """Forget failed loads and crashes (new code is running)."""
        self.failures = 0
        self.load_failing = False
        self.crashes = 0
        self.retry_at = 0.0
        self.unavailable = None


class _Runner(Protocol):
    """What a deployment passes on to the controller that runs it."""

    @property
    def clock(self) -> Clock: ...

    @property
    def tracing(self) -> Tracing | None: ...

    def wake(self, scaled: ScaledDeployment, demand: int = 0) -> None: ...

    def replace_broken(self, scaled: ScaledDeployment, handle: ReplicaHandle) -> None: ...

    def drained(self, scaled: ScaledDeployment, handle: ReplicaHandle) -> None: ...


class ScaledDeployment:
    """A deployment under the control loop: spec, status, router, and the rule's memory.

    It is its router's :class:`~swell.serving.Supervisor`: the router reads the
    spec and status through it and reports requests that find no replica,
    replicas that drop a request and replicas that have drained.
    """

    def __init__(
        self,
        controller: _Runner,
        deployment_id: str,
        *,
        name: str,
        spec: DeploymentSpec,
        window: ConcurrencyWindow,
        queue_limit: int | None = None,
        status_url: str | None = None,
        drain_grace: float = 30.0,
    ) -> None:
        self._controller = controller
        self.spec = spec
        self.condition = DeploymentCondition()
        self.router = DeploymentRouter(
            deployment_id,
            name=name,
            supervisor=self,
            now=controller.clock.now,
            queue_limit=queue_limit,
            status_url=status_url,
            drain_grace=drain_grace,
            tracing=controller.tracing,
        )
        self.window = window
        self.state = ScalerState()
        self.decision: Decision | None = None
        self.decided_at: float | None = None
        self.retiring = False
        self.cold_start_counts = [0] * (len(COLD_START_BUCKETS) + 1)
        self.cold_start_sum = 0.0
        self.cold_phases = ColdStartHistograms()
        self.floor = 0  # hold at least this many replicas (a promotion warming up) ...
        self.floor_until = 0.0  # ... until this time
        self.last_active: float | None = None  # the last tick that saw a request (the clock's time)
        # Capacity pressure: after replicas were stopped to make room for another
        # deployment, none starts beyond ``ceiling`` until a request comes (the
        # router's ``arrivals`` moves past ``ceiling_arrivals``); ``reclaimed`` is
        # the last such stop that concerned it, as (unix time, sentence), for its view.
        self.ceiling: int | None = None
        self.ceiling_arrivals = 0
        self.reclaimed: tuple[float, str] | None = None
        self.history = TrafficHistory()  # for `swell advise`
        self.arrivals_seen = 0
        self.busy = 0.0  # concurrency-seconds seen by the ticks (time in the system, summed over requests)

    @property
    def id(self) -> str:
        return self.router.deployment_id

    # ------------------------------------------------------------------ the router's Supervisor

    @property
    def settings(self) -> AutoscalingSettings:
        return self.spec.settings

    @property
    def replica_spec(self) -> ReplicaSpec:
        return self.spec.replica

    @property
    def pending_starts(self) -> int:
        return self.condition.pending_starts

    @property
    def unavailable(self) -> str | None:
        return self.condition.unavailable

    @property
    def cold_start_estimate(self) -> float | None:
        return self.condition.cold_start_estimate

    def wake(self, demand: int = 0) -> None:
        self._controller.wake(self, demand)

    def broken(self, handle: ReplicaHandle) -> None:
        self._controller.replace_broken(self, handle)

    def drained(self, handle: ReplicaHandle) -> None:
        self._controller.drained(self, handle)

    def extras(self) -> Extras:
        """The opt-in extras its settings switch on, with this deployment's own estimates:
        the last cold start, the mean time a request spends in the system (what
        ``swell advise --deployment`` replays as service time) and its slots."""
        settings = self.spec.settings
        default = _NO_EXTRAS
        if not (settings.burst or settings.trend):
            return default
        arrivals = self.router.arrivals
        return Extras(
            burst=settings.burst,
            trend=settings.trend,
            cold_start=self.condition.cold_start_estimate or default.cold_start,
            service_time=self.busy / arrivals if arrivals and self.busy > 0 else default.service_time,
            predict_concurrency=self.spec.slots,
        )

    # ------------------------------------------------------------------ views

    @property
    def error(self) -> str | None:
        return self.condition.error

    @property
    def load_failing(self) -> bool:
        return self.condition.load_failing

    @property
    def crashes(self) -> int:
        return self.condition.crashes

    @property
    def crash_looping(self) -> bool:
        """Its last replica to die died soon after becoming ready, and none has served long since."""
        return self.condition.crashes > 0

    def cold_start(self, replica_id: str) -> ColdStart | None:
        """Where a ready replica's start went (``None`` before it is ready)."""
        record = self.condition.replicas.get(replica_id)
        return record.cold_start if record is not None else None

    @property
    def pending_reason(self) -> str | None:
        """Why a replica waits as ``pending`` (for resources), if one does."""
        for handle in self.router.handles.values():
            if handle.serving and handle.state is ReplicaState.PENDING:
                return handle.replica.reason or "waiting for resources"
        return None

    def status(self) -> DeploymentStatus:
        states = [h.state for h in self.router.handles.values() if h.serving]
        return deployment_status(
            build=BuildState.BUILT,
            replicas=states,
            pending_starts=self.condition.pending_starts,
            load_failing=self.condition.load_failing,
            crash_looping=self.crash_looping,
        )
