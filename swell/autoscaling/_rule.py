"""The scaling rule of DESIGN.md as one pure function, staged as Ray Serve stages it.

    avg    = time-weighted mean concurrency over ``autoscaling_window``
    wanted = ceil(avg / (concurrency_target × target_utilization_percentage / 100))
    target = max(wanted over the last ``scale_down_delay`` s), clamped to
             [min_replica, max_replica]
    wake   = a request with no replica makes target ≥ 1 at once

Two opt-in extras (:class:`Extras`; the settings ``burst`` and ``trend``, off by
default) and one setting act on top: ``schedules`` raise the floor while a window
is open (scheduled pre-warm); ``burst`` raises ``wanted`` at once when the queue
could not drain before a new replica would be ready, counting replicas already
starting as capacity; ``trend`` wants the concurrency projected one cold start ahead.

Two inputs of :class:`Observation` come from the runner's own state, so that
everything the control loop acts on passes through here (and the simulator,
which leaves them at their defaults, replays exactly what the server does):
a *promotion floor* holds a promoted deployment at its predecessor's size for
a while, and a *back-off* (after replicas that failed to load or crashed soon
after becoming ready) withholds new replicas.

No clock reads, no I/O: ``decide`` is a function of its arguments, so the live
control loop and the simulator run the very same code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import Enum

from swell.autoscaling._schedule import schedule_floor
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


# Observation, Decision and the state are made at every tick the rule runs (the simulator's
# replays run it millions of times): plain slotted classes, which nothing mutates, as frozen
# ones pay an object.__setattr__ per field (12 % of a month replay's instructions).
@dataclass(slots=True)
class Observation:
    """What is true now, as the runner sees it."""

    now: float
    concurrency: int  # in flight + queued, at this instant
    replicas: int  # replicas that exist and are not draining
    ready: int | None = None  # of those, the ready ones (None: all of them); for burst
    wall: float | None = None  # unix seconds now, for schedules (None: schedules are not applied)
    promotion_floor: int = 0  # hold at least this many replicas (a promotion warming up) ...
    promotion_until: float = math.inf  # ... until this time
    backoff_until: float = 0.0  # no new replica before this time (after failed or crashing replicas)
    failing: bool = False  # the last replicas failed: none is started while no request waits (min_replica 0)
    # Replicas were stopped to make room for another deployment (capacity pressure):
    # at most this many until a request comes (None: no such cap).
    ceiling: int | None = None


@dataclass(frozen=True, slots=True)
class Extras:
    """Opt-in policies on top of the rule, judged in the simulator (docs/autoscaling.md).

    ``burst``: when requests queue and the ready replicas could not drain the
    queue within ``cold_start`` seconds (at ``service_time`` seconds per request,
    ``predict_concurrency`` at once), want enough replicas for everything in the
    system at once, instead of waiting for the window's mean to catch up.  The
    target is absolute, so replicas already starting count as capacity: a burst
    that they will absorb starts nothing more.
    """

    burst: bool = False
    trend: bool = False
    cold_start: float = 30.0
    service_time: float = 1.0
    predict_concurrency: int = 1

    @property
    def active(self) -> bool:
        return self.burst or self.trend


NO_EXTRAS = Extras()


def extras_in_force(settings: AutoscalingSettings, extras: Extras = NO_EXTRAS) -> Extras:
    """``extras`` with the ones ``settings`` switch on (``burst``, ``trend``) switched on too.

    The settings say whether an extra runs; ``extras`` carries the runner's estimates
    it reads (cold start, service time, slots), so the live loop and the simulator
    pass what they measured and the rule decides alike."""
    if (settings.burst and not extras.burst) or (settings.trend and not extras.trend):
        return replace(extras, burst=extras.burst or settings.burst, trend=extras.trend or settings.trend)
    return extras


@dataclass(slots=True)
class _Held:
    wanted: int
    until: float  # the time the next sample replaced this one (inf: still current)


@dataclass(slots=True)
class ScalerState:
    """The rule's memory: recent ``wanted`` values as a monotonic (max) queue."""

    held: tuple[_Held, ...] = field(default=())
    # The schedules' floor and the wall-time span it was computed for: windows
    # only open and close at their boundaries, so it is computed once per span.
    floor: int = 0
    floor_from: float = math.inf
    floor_until: float = -math.inf


@dataclass(slots=True)
class Decision:
    target: int
    action: Action
    reason: str
    average: float = 0.0
    wanted: int = 0
    floor: int = 0  # the replica floor in force: min_replica or an open schedule's
    burst: bool = False  # the burst extra raised wanted
    promotion: bool = False  # the promotion floor raised the target
    withheld: int = 0  # replicas the rule wanted but the back-off does not start


def average_concurrency(
    settings: AutoscalingSettings, window: ConcurrencyWindow, now: float
) -> float:
    """Stage 1: the time-weighted mean over the autoscaling window."""
    return window.mean(now, settings.autoscaling_window)


def wanted_replicas(settings: AutoscalingSettings, average: float) -> int:
    """Stage 2: replicas needed to carry ``average`` at the target utilisation."""
    if average <= 0:
        return 0
    # settings.replica_capacity written out: the simulator asks at every tick.
    wanted = math.ceil(average / (settings.concurrency_target * settings.target_utilization_percentage / 100.0)
                       - _EPSILON)
    return wanted if wanted > 0 else 0


def hold_for_scale_down(
    settings: AutoscalingSettings, state: ScalerState, wanted: int, now: float
) -> tuple[int, ScalerState]:
    """Stage 3: the largest ``wanted`` in force at any moment of the last delay.

    Each value is in force from its sample until the next one, so lower demand
    must have lasted the whole ``scale_down_delay`` before it lowers the target.
    The held values are a monotonic queue: ``wanted`` strictly falls along it.
    """
    held = state.held
    horizon = now - settings.scale_down_delay
    size = len(held)
    if size and held[-1].wanted == wanted and held[-1].until == math.inf and held[0].until > horizon:
        return held[0].wanted, state  # the same value again, nothing expires: the same state
    keep = size
    while keep and held[keep - 1].wanted <= wanted:
        keep -= 1
    current = _Held(wanted, math.inf)
    if keep == size and size:
        last = held[-1]
        queue = (*held[:-1], _Held(last.wanted, min(last.until, now)), current)
    else:
        queue = (*held[:keep], current)
    start = 0
    while queue[start].until <= horizon:
        start += 1
    kept = queue[start:] if start else queue
    return kept[0].wanted, ScalerState(kept, state.floor, state.floor_from, state.floor_until)


def clamp(settings: AutoscalingSettings, target: int, floor: int = 0) -> int:
    """Stage 4: keep the target inside [max(min_replica, floor), max_replica]."""
    return max(settings.min_replica, min(floor, settings.max_replica), min(settings.max_replica, target))


def scheduled_floor(
    settings: AutoscalingSettings, state: ScalerState, wall: float | None
) -> tuple[int, ScalerState]:
    """The floor that open ``schedules`` ask for at ``wall`` (0 with none, or no wall time)."""
    if not settings.schedules or wall is None:
        return 0, state
    if state.floor_from <= wall < state.floor_until:
        return state.floor, state
    floor, until = schedule_floor(settings.schedules, wall)
    return floor, replace(state, floor=floor, floor_from=wall, floor_until=until)


def trend_replicas(settings: AutoscalingSettings, window: ConcurrencyWindow, now: float, extras: Extras) -> int:
    """Replicas for the concurrency projected one cold start ahead, on a rising trend; else 0."""
    half = settings.autoscaling_window / 2
    recent = window.mean(now, half)
    earlier = (window.mean(now, 2 * half) * 2 * half - recent * half) / half
    if recent <= earlier:
        return 0
    projected = recent + (recent - earlier) / half * extras.cold_start
    return wanted_replicas(settings, projected)


def burst_replicas(observation: Observation, extras: Extras) -> int:
    """Replicas for everything in the system now, when the queue would outlast a cold start; else 0."""
    if not extras.burst or observation.concurrency <= 0:
        return 0
    slots = max(1, extras.predict_concurrency)
    ready = observation.replicas if observation.ready is None else observation.ready
    queued = observation.concurrency - ready * slots
    if queued <= 0:
        return 0
    if ready > 0 and queued * extras.service_time / (ready * slots) <= extras.cold_start:
        return 0  # the ready replicas drain it before a new one could help
    return math.ceil(observation.concurrency / slots)


def decide(
    settings: AutoscalingSettings,
    window: ConcurrencyWindow,
    state: ScalerState,
    observation: Observation,
    extras: Extras = NO_EXTRAS,
    *,
    explain: bool = True,
) -> tuple[Decision, ScalerState]:
    """Run every stage; return the decision and the state to pass next time.

    ``explain=False`` leaves the decision's ``reason`` empty: the simulator, which reads
    only the numbers, skips the text (the numbers are the same)."""
    now = observation.now
    extras = extras_in_force(settings, extras)
    average = average_concurrency(settings, window, now)
    wanted = wanted_replicas(settings, average)
    if extras.trend:
        wanted = max(wanted, trend_replicas(settings, window, now, extras))
    burst = burst_replicas(observation, extras)
    bursting = burst > wanted
    wanted = max(wanted, burst)
    waking = observation.replicas == 0 and observation.concurrency > 0
    if waking:
        # Stage 5: a request with nowhere to go wakes the deployment now; the
        # window has not seen it yet, so hold the wake like any other demand.
        wanted = max(wanted, 1)
    held, new_state = hold_for_scale_down(settings, state, wanted, now)
    floor, new_state = scheduled_floor(settings, new_state, observation.wall)
    target = clamp(settings, held, floor)
    decision = _explain(settings, observation, average, wanted, held, target, waking, floor, bursting, explain)
    decision = backoff(settings, observation, promotion_floor(settings, observation, decision))
    return capacity_ceiling(settings, observation, decision), new_state


def promotion_floor(settings: AutoscalingSettings, observation: Observation, decision: Decision) -> Decision:
    """Hold a promoted deployment at ``promotion_floor`` replicas until ``promotion_until``,
    whatever demand says: its predecessor's traffic arrives all at once when the
    environment switches, before the window has seen any of it."""
    floor = min(observation.promotion_floor, settings.max_replica)
    if floor <= decision.target or observation.now >= observation.promotion_until:
        return decision
    return replace(
        decision,
        target=floor,
        action=Action.SCALE_UP if floor > observation.replicas else Action.HOLD,
        reason=f"held at {floor} replica(s) for a promotion ({decision.reason})",
        promotion=True,
    )


def backoff(settings: AutoscalingSettings, observation: Observation, decision: Decision) -> Decision:
    """Start no new replica while the back-off lasts, nor for a failing model nobody is
    waiting for (it would only fail again for the window's memory); scaling down is never held."""
    current = observation.replicas
    if decision.target <= current:
        return decision
    if observation.now < observation.backoff_until:
        why = f"back-off after failed replicas, {observation.backoff_until - observation.now:.3g} s left"
    elif observation.failing and observation.concurrency == 0 and settings.min_replica == 0:
        why = "the last replicas failed and no request waits"
    else:
        return decision
    return replace(
        decision,
        target=current,
        action=Action.HOLD,
        reason=f"hold at {current}: {why} ({decision.reason})",
        withheld=decision.target - current,
    )


def capacity_ceiling(settings: AutoscalingSettings, observation: Observation, decision: Decision) -> Decision:
    """At most ``ceiling`` replicas once some were stopped to make room for another deployment:
    the window still remembers their traffic, and starting them again (or keeping the ones
    still waiting for room) would only take the room back.  The runner lifts the ceiling when
    a request comes; ``min_replica`` still holds."""
    ceiling = observation.ceiling
    if ceiling is None:
        return decision
    target = max(min(decision.target, ceiling), settings.min_replica)
    if target == decision.target:
        return decision
    current = observation.replicas
    action = Action.SCALE_DOWN if target < current else Action.SCALE_UP if target > current else Action.HOLD
    return replace(
        decision,
        target=target,
        action=action,
        reason=f"at most {target}: replicas were stopped to make room for another deployment, "
        f"none starts again before a request comes ({decision.reason})",
        withheld=decision.withheld + max(0, decision.target - target),
    )


def _explain(
    settings: AutoscalingSettings,
    observation: Observation,
    average: float,
    wanted: int,
    held: int,
    target: int,
    waking: bool,
    floor: int = 0,
    bursting: bool = False,
    explain: bool = True,
) -> Decision:
    current = observation.replicas
    if waking and target >= 1:
        action = Action.WAKE
    elif target < current:
        action = Action.SCALE_DOWN
    elif target > current:
        action = Action.SCALE_UP
    else:
        action = Action.HOLD
    decision = Decision(target, action, "", average, wanted, max(settings.min_replica, floor), bursting)
    if explain:
        decision.reason = _reason(settings, observation, decision, held)
    return decision


def _reason(settings: AutoscalingSettings, observation: Observation, decision: Decision, held: int) -> str:
    """Why ``decision``, in the operator's words (``held``: what the scale-down delay keeps)."""
    current, target, wanted = observation.replicas, decision.target, decision.wanted
    if decision.action is Action.WAKE:
        return f"wake: {observation.concurrency} request(s) waiting and no replica; start {target}"
    if decision.action is Action.SCALE_DOWN:
        what = "scale to zero" if target == 0 else f"scale down {current} → {target}"
        reason = f"{what}: demand has stayed at or below {held} for {settings.scale_down_delay} s"
    else:
        if decision.burst:
            basis = f"burst: {observation.concurrency} in the system would queue past a cold start"
        else:
            basis = (f"avg concurrency {decision.average:.2f} over {settings.autoscaling_window} s / "
                     f"{settings.replica_capacity:g} per replica")
        if decision.action is Action.SCALE_UP:
            reason = f"scale up {current} → {target}: {basis} wants {wanted}"
        else:
            reason = f"hold at {target}: {basis} wants {wanted}"
            if held > wanted and target > wanted:
                reason += f"; keeping {held} for the scale-down delay"
    if target != max(held, 0):
        # decision.floor is max(min_replica, the schedules' floor): above min_replica only for a schedule.
        floor = decision.floor
        if target > held and floor > settings.min_replica and target == min(floor, settings.max_replica):
            bound = "a schedule's min_replica"
        else:
            bound = "min_replica" if target > held else "max_replica"
        reason += f" (clamped by {bound} {target})"
    return reason
