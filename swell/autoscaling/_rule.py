"""The scaling rule of DESIGN.md as one pure function, staged as Ray Serve stages it.

    avg    = time-weighted mean concurrency over ``autoscaling_window``
    wanted = ceil(avg / (concurrency_target × target_utilization_percentage / 100))
    target = max(wanted over the last ``scale_down_delay`` s), clamped to
             [min_replica, max_replica]
    wake   = a request with no replica makes target ≥ 1 at once

No clock reads, no I/O: ``decide`` is a function of its arguments, so the live
control loop and the simulator run the very same code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

from swell.autoscaling._window import ConcurrencyWindow
from swell.config import AutoscalingSettings

# avg/capacity that is an integer up to float noise must not round up.
_EPSILON = 1e-9


class Action(str, Enum):
    """What a decision asks of the runner.  ``HOLD`` is a first-class answer."""

    HOLD = "hold"
    SCALE_UP = "scale_up"
    SCALE_DOWN = "scale_down"
    WAKE = "wake"


@dataclass(frozen=True, slots=True)
class Observation:
    """What is true now, as the runner sees it."""

    now: float
    concurrency: int  # in flight + queued, at this instant
    replicas: int  # replicas that exist and are not draining


@dataclass(frozen=True, slots=True)
class _Held:
    wanted: int
    until: float  # the time the next sample replaced this one (inf: still current)


@dataclass(frozen=True, slots=True)
class ScalerState:
    """The rule's memory: recent ``wanted`` values as a monotonic (max) queue."""

    held: tuple[_Held, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Decision:
    target: int
    action: Action
    reason: str
    average: float = 0.0
    wanted: int = 0


def average_concurrency(
    settings: AutoscalingSettings, window: ConcurrencyWindow, now: float
) -> float:
    """Stage 1: the time-weighted mean over the autoscaling window."""
    return window.mean(now, settings.autoscaling_window)


def wanted_replicas(settings: AutoscalingSettings, average: float) -> int:
    """Stage 2: replicas needed to carry ``average`` at the target utilisation."""
    if average <= 0:
        return 0
    return max(0, math.ceil(average / settings.replica_capacity - _EPSILON))


def hold_for_scale_down(
    settings: AutoscalingSettings, state: ScalerState, wanted: int, now: float
) -> tuple[int, ScalerState]:
    """Stage 3: the largest ``wanted`` in force at any moment of the last delay.

    Each value is in force from its sample until the next one, so lower demand
    must have lasted the whole ``scale_down_delay`` before it lowers the target.
    """
    held = list(state.held)
    if held:
        held[-1] = _Held(held[-1].wanted, min(held[-1].until, now))
    while held and held[-1].wanted <= wanted:
        held.pop()
    held.append(_Held(wanted, math.inf))
    horizon = now - settings.scale_down_delay
    start = 0
    while held[start].until <= horizon:
        start += 1
    kept = tuple(held[start:])
    return kept[0].wanted, ScalerState(kept)


def clamp(settings: AutoscalingSettings, target: int) -> int:
    """Stage 4: keep the target inside [min_replica, max_replica]."""
    return max(settings.min_replica, min(settings.max_replica, target))


def decide(
    settings: AutoscalingSettings,
    window: ConcurrencyWindow,
    state: ScalerState,
    observation: Observation,
) -> tuple[Decision, ScalerState]:
    """Run every stage; return the decision and the state to pass next time."""
    now = observation.now
    average = average_concurrency(settings, window, now)
    wanted = wanted_replicas(settings, average)
    waking = observation.replicas == 0 and observation.concurrency > 0
    if waking:
        # Stage 5: a request with nowhere to go wakes the deployment now; the
        # window has not seen it yet, so hold the wake like any other demand.
        wanted = max(wanted, 1)
    held, new_state = hold_for_scale_down(settings, state, wanted, now)
    target = clamp(settings, held)
    return _explain(settings, observation, average, wanted, held, target, waking), new_state


def _explain(
    settings: AutoscalingSettings,
    observation: Observation,
    average: float,
    wanted: int,
    held: int,
    target: int,
    waking: bool,
) -> Decision:
    current = observation.replicas
    capacity = settings.replica_capacity
    basis = f"avg concurrency {average:.2f} over {settings.autoscaling_window} s / {capacity:g} per replica"
    if waking and target >= 1:
        action = Action.WAKE
        reason = f"wake: {observation.concurrency} request(s) waiting and no replica; start {target}"
    elif target > current:
        action = Action.SCALE_UP
        reason = f"scale up {current} → {target}: {basis} wants {wanted}"
    elif target < current:
        action = Action.SCALE_DOWN
        what = "scale to zero" if target == 0 else f"scale down {current} → {target}"
        reason = f"{what}: demand has stayed at or below {held} for {settings.scale_down_delay} s"
    else:
        action = Action.HOLD
        reason = f"hold at {target}: {basis} wants {wanted}"
        if held > wanted and target > wanted:
            reason += f"; keeping {held} for the scale-down delay"
    if target != max(held, 0) and action is not Action.WAKE:
        bound = "min_replica" if target > held else "max_replica"
        reason += f" (clamped by {bound} {target})"
    return Decision(target, action, reason, average, wanted)
